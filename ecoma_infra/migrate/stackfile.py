"""Put an `ecoma:adopt` block into a stack file and keep everything else as it was.

A YAML round trip would drop the file's comments, so the block is placed as text: an old
`ecoma:adopt` block is cut out, the new one goes at the end of the `config:` mapping with the
indentation the file uses. The result is then parsed and compared with the original document
plus the new block: if anything else moved, nothing is written and the block is shown for
pasting by hand.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import NAMESPACE

ADOPT_KEY = f"{NAMESPACE}:adopt"
MARKER = "# ecoma:adopt"  # every comment line this module writes starts so
_CONFIG = re.compile(r"^config:\s*(#.*)?$")


def adopt_block(import_ids: Mapping[str, str], comment: str, indent: str) -> list[str]:
    body = yaml.safe_dump({ADOPT_KEY: dict(import_ids)}, sort_keys=True, default_flow_style=False)
    lines = [f"{indent}{MARKER}: {line}".rstrip() + "\n" for line in comment.splitlines()]
    return lines + [f"{indent}{line}\n" for line in body.splitlines()]


def with_adopt(text: str, import_ids: Mapping[str, str], comment: str, *, source: str) -> str:
    """`text` with its `ecoma:adopt` block replaced by `import_ids`."""
    original = _load(text, source)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    config_at = next(
        (i for i, line in enumerate(lines) if re.match(r"^config:\s*(#.*)?$", line)), None
    )
    if config_at is None:
        raise EcomaError(f"{source}: no block-style `config:` mapping to add {ADOPT_KEY} to")
    end = next((i for i in range(config_at + 1, len(lines)) if _top_level(lines[i])), len(lines))
    keys = [i for i in range(config_at + 1, end) if _is_key(lines[i])]
    indent = re.match(r"^(\s*)", lines[keys[0]]).group(1) if keys else "  "  # type: ignore[union-attr]
    lines, end = _cut(lines, config_at, end, indent)
    while end > config_at + 1 and not lines[end - 1].strip():
        end -= 1
    new_lines = lines[:end] + adopt_block(import_ids, comment, indent) + lines[end:]
    result = "".join(new_lines)
    expected = dict(original)
    config = dict(expected.get("config") or {})
    config.pop(ADOPT_KEY, None)
    config[ADOPT_KEY] = dict(import_ids)
    expected["config"] = config
    if _load(result, source) != expected:
        block = "".join(adopt_block(import_ids, comment, "  "))
        raise EcomaError(
            f"{source}: could not add {ADOPT_KEY} without changing the rest of the file; "
            f"nothing was written. Fix: add this block under `config:` by hand:\n{block}"
        )
    return result


def _cut(lines: list[str], start: int, end: int, indent: str) -> tuple[list[str], int]:
    """Remove an existing adopt block (and the comment lines this module wrote above it)."""
    at = next(
        (
            i
            for i in range(start + 1, end)
            if re.match(rf"^{indent}{re.escape(ADOPT_KEY)}:", lines[i])
        ),
        None,
    )
    if at is None:
        return lines, end
    stop = at + 1
    while stop < end and (not lines[stop].strip() or _indent(lines[stop]) > len(indent)):
        stop += 1
    first = at
    while first > start + 1 and lines[first - 1].lstrip().startswith(MARKER):
        first -= 1
    return lines[:first] + lines[stop:], end - (stop - first)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _top_level(line: str) -> bool:
    return bool(line.strip()) and not line.startswith((" ", "\t", "#"))


def _is_key(line: str) -> bool:
    return bool(line.strip()) and not line.lstrip().startswith("#")


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise EcomaError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise EcomaError(f"{source}: not a stack file (no mapping at the top)")
    return document
