"""Every command over a table of bad arguments and bad states: each ends in a message and exit 2
(bad usage) or 1 (the work failed), never a traceback. Arguments the command could have checked
before doing anything are exit 2 and are never counted as a failed run.

Offline rehearsals simulate Pulumi, Kubernetes and Tailscale; commands that would reach a real
Pulumi backend fail for want of the Pulumi CLI, which this machine does not have (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ecoma_infra.cli import main as cli
from ecoma_infra.platforms.pulumi_simulated import rehearsal_state_file

ECOMA_INFRA = Path(sys.executable).with_name("ecoma-infra")
RUN = ["-s", "staging", "--provider", "aws", "--count", "1", "--offline"]
# one pack, two configurations
POLICY_MISMATCH = [
    *("--policy-pack", "policy"),
    *("--policy-pack-config", "a.json"),
    *("--policy-pack-config", "b.json"),
]


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exited:  # argparse's own exit, after its message
        code = exited.code if isinstance(exited.code, int) else 2
    return code, capsys.readouterr().err


def leaf_commands() -> list[list[str]]:
    parser = cli.build_parser()
    found = []
    for leaf in cli.leaf_parsers(parser):
        words = leaf.prog.split()[1:]
        found.append(words)
    return found


def test_the_table_covers_every_command() -> None:
    commands = {" ".join(words) for words in leaf_commands()}
    assert {"burst", "reap", "autoscale", "drill", "deploy", "validate", "preview", "inventory",
            "schema", "configure", "credentials check", "credentials rotate", "lab up",
            "lab converge", "lab status", "lab down"} <= commands  # fmt: skip
    covered = {
        " ".join(argv[: {"lab": 2, "credentials": 2, "migrate": 3}.get(argv[0], 1)])
        for argv, _ in BAD
        if argv
    }
    assert commands <= covered, f"no bad-argument case for {sorted(commands - covered)}"


@pytest.mark.parametrize("words", leaf_commands(), ids=" ".join)
def test_an_unknown_option_is_bad_usage_for_every_command(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = invoke([*words, "--no-such-option"], capsys)

    assert code == 2
    assert "error: " in err  # argparse's message (the command's or the root's), then exit 2
    assert "Traceback" not in err


BAD: list[tuple[list[str], int]] = [
    # durations, counts, timeouts, URLs: checked before anything runs
    (["burst", *RUN, "--ttl", "4x"], 2),
    (["burst", *RUN, "--ttl", "0h"], 2),
    (["burst", *RUN, "--ttl", "99999999999d"], 2),
    (["burst", *RUN, "--ttl", "9" * 40 + "d"], 2),
    (["burst", *RUN, "--ttl", "-1h"], 2),
    (["burst", "-s", "staging", "--provider", "aws", "--count", "x", "--offline"], 2),
    (["burst", "-s", "staging", "--provider", "aws", "--count", "1" * 30, "--offline"], 2),
    (["burst", "-s", "staging", "--provider", "azure", "--count", "1", "--offline"], 2),
    (["burst", *RUN, "--ready-timeout", "-5"], 2),
    (["burst", *RUN, "--ready-timeout", "0"], 2),
    (["burst", *RUN, "--drain-timeout", "nan"], 2),
    (["burst", *RUN, "--drain-timeout", "inf"], 2),
    (["burst", *RUN, "--drain-timeout", "ten"], 2),
    (["burst", *RUN, "--log-format", "xml"], 2),
    (["autoscale", "-s", "staging", "--prometheus", "notaurl", "--offline"], 2),
    (["autoscale", "-s", "staging", "--prometheus", "ftp://prometheus:9090", "--offline"], 2),
    (["autoscale", "-s", "staging", "--prometheus", "http://", "--offline"], 2),
    (["autoscale", "-s", "staging", "--prometheus", "http://prom:99999", "--offline"], 2),
    (["autoscale", "-s", "staging", "--offline"], 2),
    (["reap", "-s", "staging", "--offline", "--drain-timeout", "-1"], 2),
    (["drill", "-s", "staging", "--provider", "aws", "--ttl", "1y", "--offline"], 2),
    (["drill", "-s", "prod", "--provider", "aws", "--offline", "--yes"], 2),
    (["deploy", "-s", "staging", "--offline", "--ready-timeout", "nan"], 2),
    (["deploy", "-s", "staging", "--offline", *POLICY_MISMATCH], 2),
    # stacks that do not exist, or names that are not stack names
    (["burst", "-s", "nope", "--provider", "aws", "--count", "1", "--offline"], 2),
    (["reap", "-s", "nope", "--offline"], 2),
    (["autoscale", "-s", "nope", "--prometheus", "http://127.0.0.1:9", "--offline"], 2),
    (["drill", "-s", "nope", "--provider", "aws", "--offline", "--yes"], 2),
    (["deploy", "-s", "nope", "--offline"], 2),
    (["validate", "-s", "nope"], 2),
    (["validate", "-s", "../../etc/passwd"], 2),
    (["validate", "--file", "/nonexistent/Pulumi.x.yaml"], 2),
    (["validate", "-s", "staging", "--file", "Pulumi.staging.yaml"], 2),
    (["preview", "-s", "nope", "--offline"], 2),
    (["preview", "-s", "staging"], 2),
    (["inventory", "-s", "nope", "--offline"], 2),
    (["inventory", "-s", "staging"], 2),
    (["schema", "extra"], 2),
    (["diagram", "-s", "nope"], 2),
    (["diagram", "--file", "/nonexistent/Pulumi.x.yaml"], 2),
    (["credentials", "check", "-s", "staging", "--within-days", "-1"], 2),
    (["credentials", "check", "-s", "staging", "--within-days", "soon"], 2),
    (["credentials", "check", "-s", "nope", "--within-days", "1"], 2),
    (["credentials", "rotate", "-s", "staging", "--credential", "nope"], 2),
    (["replace", "-s", "staging"], 2),
    (["replace", "-s", "staging", "--node", "cpl-1", "--ready-timeout", "-5"], 2),
    (["upgrade", "-s", "staging", "--k3s-version", "1.32"], 2),
    (["upgrade", "-s", "staging", "--k3s-version", "v1.33.1+k3s1", "--drain-timeout", "nan"], 2),
    (["snapshot", "--inventory", "/nonexistent/inventory.json"], 2),
    (["snapshot", "-s", "staging", "--inventory", "x.json"], 2),
    (["doctor", "-s", "nope"], 2),
    (["doctor", "--file", "/nonexistent/Pulumi.x.yaml"], 2),
    (["migrate", "terraform", "config", "--tfvars", "/nonexistent.tfvars", "-s", "x"], 2),
    (["migrate", "terraform", "config", "--tfvars", "t.tfvars"], 2),
    (["migrate", "terraform", "state", "--state", "/nonexistent.json", "-s", "staging"], 2),
    (["migrate", "terraform", "state", "--state", "s.json", "-s", "nope"], 2),
    (["configure", "--inventory", "/nonexistent/inventory.json"], 2),
    (["configure", "-s", "staging", "--inventory", "x.json"], 2),
    (["lab", "up", "-s", "nope"], 2),
    (["lab", "converge", "-s", "nope"], 2),
    (["lab", "status", "-s", "nope"], 2),
    (["lab", "down", "-s", "staging", "--state-dir", "/tmp"], 2),
    ([], 2),
    (["nosuchcommand"], 2),
    # the work needs what this machine has not got: exit 1 with a message
    (["burst", "-s", "staging", "--provider", "aws", "--count", "1"], 1),
    (["deploy", "-s", "staging", "--dry-run"], 1),
    (["credentials", "rotate", "-s", "staging", "--credential", "k3s_token"], 1),
    (["configure", "-s", "staging"], 1),
]


@pytest.mark.parametrize(
    ("argv", "expected"), BAD, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v)
)
def test_bad_arguments_end_in_a_message_and_exit_2_or_1(
    argv: list[str],
    expected: int,
    offline_project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = offline_project / "metrics.prom"
    code, err = invoke([*argv], capsys)

    assert code == expected, err
    assert "Traceback" not in err
    assert err.strip(), "no message"
    assert "unexpected" not in err, f"only the last resort caught it: {err}"
    if expected == 2:
        assert not metrics.exists()  # bad usage is never a failed run in the metrics


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"[]", b"{}", b'{"config": 1, "urns": 2}', b"\xff\xfe"],
    ids=["empty", "truncated", "list", "empty-object", "wrong-types", "not-utf8"],
)
@pytest.mark.parametrize(
    "argv",
    [
        ["burst", *RUN, "--dry-run"],
        ["reap", "-s", "staging", "--offline", "--dry-run"],
        ["deploy", "-s", "staging", "--offline", "--dry-run"],
        ["drill", "-s", "staging", "--provider", "aws", "--offline", "--yes"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_corrupt_rehearsal_state_ends_in_one_line_not_a_traceback(
    content: bytes,
    argv: list[str],
    offline_project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    state = rehearsal_state_file(offline_project, "staging")
    state.parent.mkdir(parents=True)
    state.write_bytes(content)

    code, err = invoke(argv, capsys)

    assert code in (1, 2)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) >= 1


def test_a_stack_file_that_is_not_utf8_ends_in_one_line(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (offline_project / "Pulumi.latin.yaml").write_bytes(b"config:\n  ecoma:x: caf\xe9\n")

    code, err = invoke(["validate", "-s", "latin"], capsys)

    assert code in (1, 2)
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["burst", *RUN, "--ttl", "99999999999d"],
        ["burst", "-s", "nope", "--provider", "aws", "--count", "1", "--offline"],
        ["autoscale", "-s", "staging", "--prometheus", "notaurl", "--offline"],
    ],
    ids=lambda argv: " ".join(argv[:3]),
)
def test_the_installed_command_exits_2_without_a_traceback(
    argv: list[str], offline_project: Path
) -> None:
    result = subprocess.run(
        [str(ECOMA_INFRA), *argv],
        cwd=offline_project,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ecoma-infra")
