"""The `--offline` rehearsal's state file as untrusted input (Pulumi, Kubernetes and Tailscale
simulated): a corrupt, empty, `[]` or `{}` state, or one whose config breaks the rules, ends in a
message naming that file and the way to start over, for every command that reads it; the state
is written 0600 in a directory of its own, apart from the lab's `.lab/<stack>`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from stacks import ROOT, stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.lab.hosts import refuse_foreign_state_dir
from ecoma_infra.lab.stack import state_dir
from ecoma_infra.platforms.pulumi_simulated import rehearsal_state_file


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory of its own: the real program and package, a staging stack file."""
    root = tmp_path / "project"
    root.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        (root / name).write_text((ROOT / name).read_text())
    (root / "ecoma_infra").symlink_to(ROOT / "ecoma_infra")
    stack_variant(root, "staging")
    monkeypatch.chdir(root)
    monkeypatch.delenv("ECOMA_METRICS_FILE", raising=False)
    monkeypatch.delenv("ECOMA_PUSHGATEWAY", raising=False)
    return root


COMMANDS = {
    "burst": ["burst", "--provider", "aws", "--count", "1", "--yes"],
    "reap": ["reap", "--dry-run"],
    "autoscale": ["autoscale", "--prometheus", "http://127.0.0.1:9", "--dry-run"],
    "drill": ["drill", "--provider", "aws"],
    "deploy": ["deploy", "--yes"],
}


def good_state(project: Path) -> dict[str, object]:
    assert cli.main(["burst", "--stack", "staging", "--offline", "--yes", "--provider", "aws",
                     "--count", "1"]) == 0  # fmt: skip
    return json.loads(rehearsal_state_file(project, "staging").read_text())


# (id, state file content, words in the message)
CORRUPT: list[tuple[str, str | bytes, str]] = [
    ("empty", "", "empty"),
    ("truncated", '{"config": {"ecoma:network"', "not JSON"),
    ("a-list", "[]", "holds a JSON list, not the state object"),
    ("an-empty-object", "{}", "has no `config` object"),
    ("urns-not-a-list", '{"config": {}, "urns": "x"}', "has no `urns` list"),
    ("not-utf8", b'{"config": "\xff"}', "not UTF-8"),
    ("outputs-of-another-shape", None, "`outputs.burst` is not what the program exports"),
    ("a-config-that-breaks-a-rule", None, "ecoma:burst.aws.count: count 9 is above"),
]


def corrupt_content(project: Path, case: str, content: str | bytes | None) -> str | bytes:
    if content is not None:
        return content
    state = good_state(project)
    if case == "outputs-of-another-shape":
        state["outputs"] = {"burst": {"pools": {"aws": {"count": "two"}}}}
    else:
        state["config"]["ecoma:burst"]["aws"]["count"] = 9  # type: ignore[index]
    return json.dumps(state)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("corrupt", [pytest.param(c, id=c[0]) for c in CORRUPT])
def test_simulated_corrupt_state_is_a_message_naming_the_state_file(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    corrupt: tuple[str, str | bytes | None, str],
) -> None:
    case, content, words = corrupt
    data = corrupt_content(project, case, content)
    path = rehearsal_state_file(project, "staging")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    capsys.readouterr()
    argv = [COMMANDS[command][0], "--stack", "staging", "--offline", *COMMANDS[command][1:]]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    assert str(path) in err, err
    assert words in err, err
    assert "Pulumi.staging.yaml" not in err  # blamed on the state, not on the stack file
    if case != "a-config-that-breaks-a-rule":
        assert "--offline --reset" in err


def test_simulated_reset_starts_over_from_a_corrupt_state(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rehearsal_state_file(project, "staging")
    path.parent.mkdir(parents=True)
    path.write_text("[]")
    argv = ["reap", "--stack", "staging", "--offline", "--reset", "--dry-run"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert isinstance(json.loads(path.read_text()), dict)


def test_simulated_state_is_private_and_apart_from_the_lab(project: Path) -> None:
    good_state(project)
    path = rehearsal_state_file(project, "staging")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.relative_to(project).parts[0] == ".rehearsal"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    lab_dir = state_dir("staging", project)
    assert not lab_dir.exists()
    refuse_foreign_state_dir(lab_dir)  # what `lab up` checks first: nothing to refuse


def test_simulated_state_left_in_the_lab_dir_by_an_older_version_moves_out(
    project: Path,
) -> None:
    legacy = project / ".lab" / "staging" / "offline-state.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"config": {}, "urns": []}')
    path = rehearsal_state_file(project, "staging")
    assert path.read_text() == '{"config": {}, "urns": []}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not legacy.parent.exists()
    refuse_foreign_state_dir(state_dir("staging", project))


def test_simulated_unknown_stack_is_bad_usage(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["reap", "--stack", "nope", "--offline", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Pulumi.nope.yaml: no such stack file" in err
    assert "Traceback" not in err


def test_simulated_hostile_stack_file_is_refused_before_any_state_is_written(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = project / "Pulumi.staging.yaml"
    stack.write_text(stack.read_text() + "  ecoma:k3s:\n    version: v1.31.0+k3s1\n")
    assert cli.main(["reap", "--stack", "staging", "--offline", "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert f"{stack}: YAML (line" in err
    assert "given twice" in err
    assert not rehearsal_state_file(project, "staging").exists()
