"""The conventions every command follows, through the real CLI: prompts and `--yes`, the stack's
fallbacks, `--json`, the exit code of pending changes, events as JSON only for machines, the
heartbeat of long waits, quiet broken pipes, and one line instead of a traceback.

`--offline` runs simulate Pulumi, Kubernetes and Tailscale (their test names say so); the program,
the plans, the CLI and its streams are real."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_terminal import FakeTerminal
from stacks import ROOT

from ecoma_infra.cli import burst_session, conventions, stack_options
from ecoma_infra.cli import main as cli
from ecoma_infra.cli.commands import lab as lab_command
from ecoma_infra.cli.commands import validate
from ecoma_infra.cli.conventions import skip_confirmations
from ecoma_infra.lab.state import LabHostStatus
from ecoma_infra.platforms.pulumi_simulated import rehearsal_state_file

ECOMA_INFRA = Path(sys.executable).with_name("ecoma-infra")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def state(root: Path, stack: str = "staging") -> dict[str, Any]:
    return json.loads(rehearsal_state_file(root, stack).read_text())


def change_nodes(root: Path, stack: str, **memory_mb: int) -> None:
    path = root / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text())
    for node in document["config"]["ecoma:nodes"]:
        if node["name"] in memory_mb:
            node["memory_mb"] = memory_mb[node["name"]]
    path.write_text(yaml.safe_dump(document))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# --- prompts: deploy shows what changes, then asks --------------------------------------------


def test_simulated_deploy_shows_the_preview_then_asks_and_a_no_changes_nothing(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "deploy", "-s", "staging", "--offline", "--yes")[0] == 0
    before = state(offline_project)
    change_nodes(offline_project, "staging", **{"sts-1": 16384, "wkr-1": 8192})
    monkeypatch.setattr("sys.stdin", FakeTerminal("n\n"))

    code, out, err = run(capsys, "deploy", "-s", "staging", "--offline")

    assert code == 1
    assert "cancelled: nothing was changed" in err
    lines = out.splitlines()
    question = next(i for i, line in enumerate(lines) if "deploy these changes" in line)
    sts = next(i for i, line in enumerate(lines) if "sts-1-vm" in line and "update" in line)
    wkr = next(i for i, line in enumerate(lines) if "wkr-1-vm" in line and "update" in line)
    assert max(sts, wkr) < question  # the changes come before the question
    assert "[STATEFUL: sts-1, sts]" in lines[sts]
    assert "STATEFUL" not in lines[wkr]
    assert "0 to create, 2 to update, 0 to replace, 0 to delete" in out
    assert "stateful machines (cpl: etcd; sts: the databases, on their disks) touched" in out
    assert state(offline_project)["urns"] == before["urns"]
    assert state(offline_project)["digests"] == before["digests"]  # no up ran


def test_simulated_deploy_goes_on_with_a_yes_at_the_terminal(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(capsys, "deploy", "-s", "staging", "--offline", "-y")[0] == 0
    before = state(offline_project)["digests"]
    change_nodes(offline_project, "staging", **{"wkr-1": 8192})
    monkeypatch.setattr("sys.stdin", FakeTerminal("y\n"))

    code, out, _ = run(capsys, "deploy", "-s", "staging", "--offline")

    assert code == 0
    assert "deploy these changes to stack staging? [y/N]" in out
    after = state(offline_project)["digests"]
    assert [urn for urn in after if after[urn] != before.get(urn)] == [
        urn for urn in after if urn.endswith("::wkr-1-vm")
    ]


def test_simulated_deploy_without_a_terminal_refuses_unless_told_yes(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115, PTH123
    change_nodes(offline_project, "staging", **{"wkr-1": 8192})
    assert run(capsys, "deploy", "-s", "staging", "--offline", "--yes")[0] == 0
    change_nodes(offline_project, "staging", **{"wkr-1": 12288})
    before = state(offline_project)["digests"]

    code, out, err = run(capsys, "deploy", "-s", "staging", "--offline")
    assert code == 2
    assert "no terminal to ask: pass --yes" in err
    assert "PULUMI_SKIP_CONFIRMATIONS=true" in err
    assert "1 to update" in out  # the preview was shown all the same
    assert state(offline_project)["digests"] == before

    monkeypatch.setenv("PULUMI_SKIP_CONFIRMATIONS", "true")
    code, _, err = run(capsys, "deploy", "-s", "staging", "--offline")
    assert code == 0, err
    assert state(offline_project)["digests"] != before


@pytest.mark.parametrize(("value", "asks"), [("1", False), ("TRUE", False), ("0", True)])
def test_skip_confirmations_reads_like_pulumi(
    value: str, asks: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_SKIP_CONFIRMATIONS", value)

    assert skip_confirmations(argparse.Namespace(yes=False)) is not asks


# --- drill asks, and refuses prod without an explicit flag ---------------------------------


def test_simulated_drill_asks_first_and_a_no_leaves_the_pool_alone(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", FakeTerminal("no\n"))

    code, out, err = run(capsys, "drill", "-s", "staging", "--provider", "aws", "--offline")

    assert code == 1
    assert "drill stack staging: add one aws burst node, check it, then drain and destroy" in out
    assert "cancelled" in err
    assert "drill passed" not in out
    assert state(offline_project)["config"]["ecoma:burst"]["aws"]["count"] == 0


@pytest.mark.parametrize("stack", ["prod", "org/ecoma-infra/prod"])
def test_drill_refuses_prod_without_allow_prod_even_with_yes(
    offline_project: Path, capsys: pytest.CaptureFixture[str], stack: str
) -> None:
    code, out, err = run(capsys, "drill", "-s", stack, "--provider", "aws", "--offline", "--yes")

    assert code == 2
    assert "stack prod is production" in err
    assert "--allow-prod" in err
    assert out == ""  # refused before the rehearsal was even set up
    assert not rehearsal_state_file(offline_project, "prod").parent.exists()


def test_simulated_drill_of_prod_runs_with_allow_prod(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "drill", "-s", "prod", "--provider", "aws", "--offline", "--yes", "--allow-prod"
    )

    assert code == 0, err
    assert "drill passed" in out


# --- the stack: -s, $PULUMI_STACK, the selected stack ---------------------------------------


def test_stack_comes_from_pulumi_stack_when_not_given(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_STACK", "prod")

    code, out, err = run(capsys, "validate")

    assert code == 0
    assert out.startswith("Pulumi.prod.yaml: valid")
    assert "ecoma-infra: stack prod (from $PULUMI_STACK)" in err
    # -s wins over the environment
    code, out, _ = run(capsys, "validate", "-s", "staging")
    assert out.startswith("Pulumi.staging.yaml: valid")


def test_stack_comes_from_pulumi_stack_select_when_nothing_else_says(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What `pulumi stack select` writes: $PULUMI_HOME/workspaces/<project>-<sha1 of the absolute
    # path of Pulumi.yaml>-workspace.json (pulumi/pulumi, sdk/go/common/workspace/workspace.go).
    project_file = str((offline_project / "Pulumi.yaml").resolve())
    digest = hashlib.sha1(project_file.encode(), usedforsecurity=False).hexdigest()
    name = yaml.safe_load((offline_project / "Pulumi.yaml").read_text())["name"]
    workspaces = Path(os.environ["PULUMI_HOME"]) / "workspaces"
    workspaces.mkdir(parents=True)
    settings = workspaces / f"{name}-{digest}-workspace.json"
    settings.write_text(json.dumps({"stack": "acme/ecoma-infra/prod"}))

    code, out, err = run(capsys, "validate")

    assert code == 0
    assert out.startswith("Pulumi.prod.yaml: valid")
    assert "stack acme/ecoma-infra/prod (from `pulumi stack select`)" in err
    assert stack_options.selected_stack(offline_project) == "acme/ecoma-infra/prod"


def test_no_stack_anywhere_is_bad_usage_naming_every_way(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "burst", "--provider", "aws", "--count", "1", "--offline")

    assert code == 2
    assert "which stack? pass -s NAME, set PULUMI_STACK, or select one with" in err


def test_a_stack_name_that_is_a_path_is_refused(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "validate", "-s", "../../etc/passwd")

    assert code == 2
    assert "is not a stack name" in err


# --- --json and the exit code of pending changes -------------------------------------------


def test_validate_json_reports_every_problem_as_data(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "-s", "staging", "--json")
    document = json.loads(out)
    assert code == 0
    assert document["valid"] is True
    assert document["nodes"] == {"cpl": 1, "ops": 1, "sts": 1, "wkr": 1}
    assert document["burst_pools"]["aws"] == {"count": 0, "max": 2}

    path = offline_project / "Pulumi.staging.yaml"
    broken = yaml.safe_load(path.read_text())
    broken["config"]["ecoma:nodes"][0]["ip"] = "10.41.1.254"
    path.write_text(yaml.safe_dump(broken))
    code, out, err = run(capsys, "validate", "-s", "staging", "--json")
    document = json.loads(out)
    assert code == 1
    assert err == ""
    assert document["valid"] is False
    assert any("kube-vip" in problem["message"] for problem in document["problems"])
    assert all(set(problem) == {"where", "message", "fix"} for problem in document["problems"])


def test_simulated_burst_dry_run_exits_3_with_changes_and_0_without(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "burst", "-s", "staging", "--provider", "aws", "--count", "2",
        "--offline", "--dry-run", "--json",
    )  # fmt: skip
    document = json.loads(out)  # stdout holds the document and nothing else
    assert code == 3
    assert [lease["name"] for lease in document["plan"]["add"]] == ["wkr-aws-1", "wkr-aws-2"]
    assert document["applied"] is False
    assert "stack staging, pool aws: 0 -> 2 nodes (max 2)" in err  # the human text moved there

    code, out, _ = run(
        capsys, "burst", "-s", "staging", "--provider", "aws", "--count", "0",
        "--offline", "--dry-run",
    )  # fmt: skip
    assert code == 0
    assert "nothing to change" in out


def test_simulated_burst_json_reports_the_outcome(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "burst", "-s", "staging", "--provider", "gcp", "--count", "1",
        "--offline", "--yes", "--json",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(out)
    assert document["applied"] is True
    assert document["outcomes"][0]["added"] == ["wkr-gcp-1"]
    assert set(document["outcomes"][0]["ready_seconds"]) == {"wkr-gcp-1"}
    assert document["error"] is None


def test_simulated_reap_dry_run_json_and_exit_3_when_nodes_are_expired(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = offline_project / "Pulumi.staging.yaml"
    document = yaml.safe_load(path.read_text())
    aws = document["config"]["ecoma:burst"]["aws"]
    aws.update(count=1, launched_at={"wkr-aws-1": "2025-01-01T00:00:00Z"})
    aws["expires_at"] = {"wkr-aws-1": "2025-01-01T04:00:00Z"}
    path.write_text(yaml.safe_dump(document))

    code, out, _ = run(capsys, "reap", "-s", "staging", "--offline", "--dry-run", "--json")

    assert code == 3
    report = json.loads(out)
    expired = {"aws": [{"name": "wkr-aws-1", "expires_at": "2025-01-01T04:00:00Z"}]}
    assert report["expired"] == expired
    assert report["applied"] is False


def test_simulated_deploy_dry_run_json_lists_the_steps(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "deploy", "-s", "staging", "--offline", "--dry-run")[0] == 0
    change_nodes(offline_project, "staging", **{"cpl-1": 16384})

    code, out, _ = run(capsys, "deploy", "-s", "staging", "--offline", "--dry-run", "--json")

    assert code == 3
    document = json.loads(out)
    steps = document["preview"]["steps"]
    assert [(s["op"], s["name"], s["stateful_node"]) for s in steps] == [
        ("update", "cpl-1-vm", "cpl-1")
    ]
    assert document["applied"] is False


def test_simulated_drill_json(offline_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "drill", "-s", "staging", "--provider", "oci", "--offline", "--yes", "--json"
    )
    assert code == 0, err
    document = json.loads(out)
    assert document["passed"] is True
    assert [step["name"] for step in document["steps"]] == [
        "burst", "verify", "teardown", "verify-gone",
    ]  # fmt: skip
    assert document["node"] == "wkr-oci-1"


def test_simulated_lab_status_json(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses = [
        LabHostStatus("cpl-1", "10.41.1.11", running=True, ssh_reachable=True,
                      disks_present={"hot": True}),
        LabHostStatus("sts-1", "10.41.1.31", running=True, ssh_reachable=False,
                      disks_present={"warm": False}),
    ]  # fmt: skip
    monkeypatch.setattr(lab_command, "_state", lambda stack: None)
    monkeypatch.setattr(lab_command.lab, "lab_status", lambda directory: statuses)

    code, out, _ = run(capsys, "lab", "status", "-s", "staging", "--json")

    document = json.loads(out)
    assert code == 1
    assert document["healthy"] is False
    assert [(h["name"], h["ssh"], h["disks"]) for h in document["hosts"]] == [
        ("cpl-1", True, {"hot": True}),
        ("sts-1", False, {"warm": False}),
    ]


def test_autoscale_dry_run_json_from_a_real_prometheus(
    offline_project: Path, capsys: pytest.CaptureFixture[str], prometheus_lab: Any
) -> None:
    code, out, err = run(
        capsys, "autoscale", "-s", "staging", "--prometheus", prometheus_lab.url,
        "--offline", "--dry-run", "--json",
    )  # fmt: skip
    document = json.loads(out)
    assert set(document["readings"]) == {"cpu", "queue", "latency"}
    assert document["decision"]["action"] in ("up", "down", "hold")
    assert code == (3 if document["changes"] else 0), err
    assert document["applied"] is False


# --- events: JSON where a machine reads them --------------------------------------------------


def test_simulated_events_are_json_lines_when_stderr_is_not_a_terminal(
    offline_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "burst", "-s", "staging", "--provider", "aws", "--count", "1", "--offline", "-y"
    )
    assert code == 0
    events = json_lines(err)
    assert [e["event"] for e in events][-1] == "finished"


def test_simulated_events_at_a_terminal_are_sentences_and_only_what_matters(
    offline_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("sys.stdout", FakeTerminal())
    # A Pushgateway nobody listens on: the run goes on, and says the metrics were lost.
    monkeypatch.setenv("ECOMA_PUSHGATEWAY", "http://127.0.0.1:9")

    code = cli.main(
        ["burst", "-s", "staging", "--provider", "aws", "--count", "3", "--offline", "-y"]
    )

    assert code == 1  # above the pool's max: refused
    lines = terminal.getvalue().splitlines()
    assert not [line for line in lines if line.startswith("{")]  # no JSON for people
    errors = [line for line in lines if "ecoma:burst.aws.max" in line]
    assert len(errors) == 1  # the refusal, once (not again as a phase_failed event)
    assert any(
        line.startswith("ecoma-infra: warning: metrics push failed (url: http://127.0.0.1:9")
        for line in lines
    )


def test_simulated_log_format_json_at_a_terminal(
    offline_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr("sys.stdout", FakeTerminal())

    code = cli.main(["reap", "-s", "staging", "--offline", "-y", "--log-format", "json"])

    assert code == 0
    assert [e["event"] for e in json_lines(terminal.getvalue())][-1] == "finished"


# --- the heartbeat on long waits ------------------------------------------------------------


def test_simulated_ready_wait_shows_a_live_heartbeat_at_a_terminal(
    offline_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = burst_session.session

    def never_ready(args: Any, **kwargs: Any) -> Any:
        sess = real(args, **kwargs)
        sess.world.joins_ready = False  # the node registers but never becomes Ready
        return sess

    monkeypatch.setattr(burst_session, "session", never_ready)
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setattr("sys.stderr", FakeTerminal())

    code = cli.main(
        ["burst", "-s", "staging", "--provider", "aws", "--count", "1", "--offline", "-y",
         "--ready-timeout", "0.3"]
    )  # fmt: skip

    assert code == 1
    shown = terminal.getvalue()
    assert "waiting for wkr-aws-1 to be Ready... [0s elapsed] wkr-aws-1: NotReady" in shown
    assert "\x1b[" in shown  # drawn live (and wiped) at the terminal
    assert "still waiting" not in shown  # the plain heartbeat is for logs, not terminals


# --- broken pipes, and the last resort -------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["schema"], ["inventory", "-s", "prod", "--offline"], ["preview", "-s", "prod", "--offline"]],
)
def test_a_reader_that_goes_away_ends_the_output_quietly(argv: list[str]) -> None:
    process = subprocess.Popen(
        [str(ECOMA_INFRA), *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stdout.read(20)  # like `| head -c 20`
    process.stdout.close()
    _, err = process.communicate(timeout=120)

    assert process.returncode == 0
    assert b"Traceback" not in err
    assert b"BrokenPipe" not in err
    # Nothing on stderr but what the command says there on purpose: the preview's validation
    # summary (what `validate` prints), which goes to stderr so that stdout stays the preview.
    said = b""
    if argv[0] == "preview":
        said = subprocess.run(
            [str(ECOMA_INFRA), "validate", *argv[1:3]],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        assert said.startswith(b"Pulumi.prod.yaml: valid: ")
    assert err == said


def test_the_last_resort_is_one_line_without_the_value_and_points_to_v(
    offline_project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(args: Any) -> int:
        int("tskey-" + "client-kAbC123CNTRL-SECRETVALUE")  # a ValueError quoting a value
        return 0

    monkeypatch.setattr(validate, "run", broken)

    code, out, err = run(capsys, "validate", "-s", "staging")

    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("ecoma-infra: error: unexpected ValueError in ")
    assert "test_conventions.py:" in err  # where it happened
    assert "with -v" in err
    assert "SECRETVALUE" not in err
    assert "Traceback" not in err

    code, _, err = run(capsys, "validate", "-s", "staging", "-v")
    assert code == 1
    assert "Traceback" in err


def test_unexpected_errors_inside_argument_checks_end_in_one_line_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def overflowing(text: str) -> float:
        raise OverflowError(text)

    monkeypatch.setattr(conventions, "seconds", overflowing)
    code, _, err = run(
        capsys, "burst", "-s", "staging", "--provider", "aws", "--count", "1",
        "--drain-timeout", "1e999",
    )  # fmt: skip
    assert code == 1
    assert "unexpected OverflowError" in err
    assert "Traceback" not in err
