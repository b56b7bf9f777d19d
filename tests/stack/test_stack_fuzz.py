"""Property: any mutation of the example stack files is either accepted by `validate` and then
previews cleanly (the real program under the offline engine), or rejected with exit 1 and a
message naming the file. Never a traceback, never a crash in `preview` after `validate` said yes,
never a secret accepted or echoed.

Hypothesis mutates the parsed YAML (values of the wrong type, out of range, blank, with control
characters or shaped like secrets; keys dropped, renamed or added; list items dropped or copied)
and the text itself (lines duplicated or dropped, bytes that are not UTF-8). The run is
deterministic (`derandomize`) and bounded; `ECOMA_FUZZ_EXAMPLES=2000 ECOMA_FUZZ_RANDOM=1` explores
further by hand. Each run prints its counts.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stacks import ROOT

from ecoma_infra.cli.main import main
from ecoma_infra.errors import EcomaError
from ecoma_infra.program.offline import run_offline

EXAMPLES = int(os.environ.get("ECOMA_FUZZ_EXAMPLES", "100"))
STACKS = {name: (ROOT / f"Pulumi.{name}.yaml").read_text() for name in ("staging", "prod")}
SECRETS = (
    "K10" + "cd34" * 16 + "::server:0123456789abcdef0123456789abcdef",
    "tskey-" + "auth-kFuzz1CNTRL-abcdefghijklmnop",
    "ci@pve!fuzz=01234567-89ab-cdef-0123-456789abcdef",
)
COUNTS: Counter[str] = Counter()

# Values a careless or hostile hand puts in a stack file.
STRINGS = st.one_of(
    st.sampled_from(
        [
            "", " ", "\t", "x", "10.0.0.0/8", "10.60.0.1/32", "0.0.0.0/0", "999999999999d", "0s",
            "31d", "1d", "91d", "eu-central-1", "us-east-1a", "AD-9", "ext4", "xfs", "swap",
            "cpl", "wkr", "aws", "proxmox", "-", "a" * 300, "é", "ecoma.internal\nruncmd: [id]",
            "--token=x", "v1.32.5+k3s1", "2999-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
            *SECRETS,
        ]
    ),
    st.text(max_size=12),
)  # fmt: skip
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, -1, 100, 511, 4094, 4095, 5000, 10**9, 10**15, 2**63]),
    st.integers(min_value=-10, max_value=70_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
SCALARS = st.one_of(STRINGS, NUMBERS, st.none())
ANY = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["x", "name", "tier", "secure"]), SCALARS, max_size=2),
)


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside `node` (keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def parent_of(document: Any, path: tuple[Any, ...]) -> Any:
    node = document
    for part in path[:-1]:
        node = node[part]
    return node


def hostile(current: Any) -> st.SearchStrategy[Any]:
    """A value of another type, out of range, blank, with control characters or secret-shaped."""
    if isinstance(current, bool):
        return st.one_of(st.booleans(), SCALARS)
    if isinstance(current, int | float):
        return st.one_of(NUMBERS, STRINGS)
    if isinstance(current, str):
        return st.one_of(STRINGS, NUMBERS)
    return ANY


def plausible(current: Any, key: Any, document: Any) -> st.SearchStrategy[Any]:
    """A value of the same type, near the current one or used for the same key elsewhere."""
    if isinstance(current, bool):
        return st.booleans()
    if isinstance(current, int):
        return st.integers(min_value=max(0, current - 3), max_value=current + 3)
    if isinstance(current, float):
        return st.floats(min_value=0, max_value=max(current * 2, 1.0))
    if isinstance(current, str):
        same_key = sorted(
            {
                str(parent_of(document, p)[p[-1]])
                for p in paths(document)
                if p and p[-1] == key and isinstance(parent_of(document, p)[p[-1]], str)
            }
        )
        return st.sampled_from(same_key or [current])
    if isinstance(current, list) and current:
        return st.lists(st.sampled_from(current), min_size=0, max_size=len(current) + 1)
    return st.just(current)


@st.composite
def mutated_file(draw: st.DrawFn) -> tuple[str, bytes, list[str]]:
    """(stack name, file bytes, secrets placed in it)."""
    stack = draw(st.sampled_from(["staging", "staging", "staging", "prod"]))
    document = yaml.safe_load(STACKS[stack])
    placed: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        candidates = [p for p in paths(document["config"]) if p]
        path = ("config", *draw(st.sampled_from(candidates)))
        parent, last = parent_of(document, path), path[-1]
        action = draw(
            st.sampled_from(["plausible", "plausible", "value", "value", "drop", "rename", "copy"])
        )
        if action == "plausible":
            # A careless but type-correct edit: what validate must judge on its merits.
            parent[last] = draw(plausible(parent[last], last, document))
        elif action == "value":
            value = draw(hostile(parent[last]))
            parent[last] = value
            placed += [s for s in SECRETS if isinstance(value, str) and s in value]
        elif action == "drop":
            del parent[last]
        elif action == "rename" and isinstance(last, str):
            typo = draw(st.sampled_from(["x", "_", "s", ""]))
            parent[last[:-1] + typo + last[-1:] if typo else last.upper()] = parent.pop(last)
        elif action == "copy" and isinstance(parent, list):
            parent.append(parent[last])
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    raw = text.encode()
    lines = raw.splitlines(keepends=True)
    edit = draw(st.sampled_from(["none", "none", "none", "none", "dup", "drop", "byte"]))
    index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
    if edit == "dup":
        lines.insert(index, lines[index])
    elif edit == "drop":
        del lines[index]
    elif edit == "byte":
        lines[index] = (
            lines[index][:-1] + draw(st.sampled_from([b"\xff", b"\x00", b"\xe9"])) + b"\n"
        )
    return stack, b"".join(lines), placed


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print(
        f"\nstack fuzz: {COUNTS['tried']} cases tried, {COUNTS['accepted']} accepted and "
        f"previewed, {COUNTS['rejected']} rejected naming the file; tracebacks "
        f"{COUNTS['traceback']}, accepted-but-wrong {COUNTS['accepted-but-wrong']}"
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not os.environ.get("ECOMA_FUZZ_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated_file())
def test_a_mutated_stack_file_is_accepted_and_previews_or_is_refused_naming_it(
    case: tuple[str, bytes, list[str]],
) -> None:
    stack, raw, placed = case
    COUNTS["tried"] += 1
    with tempfile.TemporaryDirectory(prefix="ecoma-fuzz-") as directory:
        path = Path(directory) / f"Pulumi.{stack}.yaml"
        path.write_bytes(raw)
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(["validate", "--file", str(path)])
        except BaseException:
            COUNTS["traceback"] += 1
            raise
        said = out.getvalue() + err.getvalue()
        for secret in SECRETS:
            assert secret not in said, "a secret was echoed"
        if code == 1:
            COUNTS["rejected"] += 1
            assert err.getvalue().startswith(f"ecoma-infra: error: {path}"), said
            assert "Traceback" not in said
            return
        assert code == 0, said
        if placed:
            COUNTS["accepted-but-wrong"] += 1
            pytest.fail(f"a secret in a plain field was accepted: {said}")
        try:
            result = run_offline(path)
        except EcomaError as error:
            COUNTS["accepted-but-wrong"] += 1
            pytest.fail(f"validate accepted the file, preview failed: {error}")
        except Exception:
            COUNTS["traceback"] += 1
            raise
        COUNTS["accepted"] += 1
        assert result.records, "a preview without resources"
        assert all(
            not (isinstance(v, float) and not math.isfinite(v))
            for r in result.records
            for v in r.inputs.values()
        )
