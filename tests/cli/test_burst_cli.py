"""The burst commands as a user runs them, `--offline`: Pulumi, Kubernetes and Tailscale are
simulated (every test name says so); the program, the plans, the CLI and, for `autoscale`, a
real Prometheus are real."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_server import (
    PrometheusLab,
)
from stacks import ROOT, stack_variant

from ecoma_infra.burst.run import Seams
from ecoma_infra.cli import burst_session
from ecoma_infra.cli import main as cli
from ecoma_infra.cli.burst_session import Session
from ecoma_infra.ops.telemetry import parse
from ecoma_infra.platforms.prometheus import PrometheusClient
from ecoma_infra.platforms.simulated import SimulatedWorld


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


def change_stack(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = root / "Pulumi.staging.yaml"
    document = yaml.safe_load(path.read_text())
    change(document["config"])
    path.write_text(yaml.safe_dump(document))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def state(root: Path) -> dict[str, Any]:
    return json.loads((root / ".rehearsal" / "staging" / "state.json").read_text())


def test_simulated_burst_then_scale_down_from_the_command_line(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = project / "metrics.prom"
    code, out, err = run(
        capsys, "burst", "--stack", "staging", "--provider", "aws", "--count", "2",
        "--offline", "--yes", "--metrics-file", str(metrics),
    )  # fmt: skip
    assert code == 0, err
    assert "stack staging, pool aws: 0 -> 2 nodes (max 2)" in out
    assert "+ wkr-aws-1" in out
    assert "+ wkr-aws-2" in out
    assert "configuring only the new nodes: --limit wkr-aws-1,wkr-aws-2" in out
    assert "estimated cost of all pools: 0.0000 -> 0.1920 USD/h (budget 1.00)" in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 2
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [e["phase"] for e in events if e["event"] == "phase_finished"] == [
        "plan", "up", "configure", "ready",
    ]  # fmt: skip
    samples = parse(metrics.read_text())
    assert samples[("ecoma_burst_nodes", (("provider", "aws"), ("stack", "staging")))] == 2

    code, out, err = run(
        capsys, "burst", "--stack", "staging", "--provider", "aws", "--count", "0",
        "--offline", "--yes", "--metrics-file", str(metrics),
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    first_up = next(i for i, line in enumerate(lines) if line.startswith("pulumi up"))
    drained = [i for i, line in enumerate(lines) if line.endswith(": drained")]
    assert len(drained) == 2
    assert max(drained) < first_up
    assert "tailnet: no device left for wkr-aws-2, wkr-aws-1" in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 0
    samples = parse(metrics.read_text())
    assert samples[("ecoma_burst_nodes", (("provider", "aws"), ("stack", "staging")))] == 0
    assert (
        "ecoma_burst_last_success_timestamp_seconds",
        (("operation", "scale_down"), ("stack", "staging")),
    ) in samples


def test_simulated_burst_above_max_is_refused_and_changes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "burst", "--stack", "staging", "--provider", "gcp", "--count", "3",
        "--offline", "--yes",
    )  # fmt: skip
    assert code == 1
    assert "Pulumi.staging.yaml: ecoma:burst.gcp.max: --count 3 is above the pool's max of 2" in err
    assert state(project)["config"]["ecoma:burst"]["gcp"]["count"] == 0


def test_simulated_burst_asks_and_refuses_without_a_terminal(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", open("/dev/null"))  # noqa: SIM115, PTH123
    code, out, err = run(
        capsys, "burst", "--stack", "staging", "--provider", "aws", "--count", "1", "--offline"
    )
    assert code == 2
    assert "pass --yes to apply without a prompt" in err
    assert "pulumi up" not in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 0


def test_burst_count_must_be_a_whole_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["burst", "--stack", "staging", "--provider", "aws", "--count", "-1"])
    assert exited.value.code == 2
    assert "'-1' is not a whole number of nodes" in capsys.readouterr().err


def test_simulated_reap_lists_then_removes_exactly_the_expired_nodes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)

    def leases(config: dict[str, Any]) -> None:
        aws = config["ecoma:burst"]["aws"]
        aws["count"] = 2
        aws["launched_at"] = {"wkr-aws-1": f"{now - timedelta(hours=3):%Y-%m-%dT%H:%M:%SZ}"}
        aws["expires_at"] = {
            "wkr-aws-1": f"{now - timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}",
            "wkr-aws-2": f"{now + timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}",
        }

    change_stack(project, leases)
    code, out, _ = run(capsys, "reap", "--stack", "staging", "--offline", "--dry-run")
    assert code == 3  # --dry-run: changes pending
    assert [line.split()[0] for line in out.splitlines() if "lease ended" in line] == ["wkr-aws-1"]
    assert "pulumi up" not in out

    code, out, err = run(capsys, "reap", "--stack", "staging", "--offline", "--yes")
    assert code == 0, err
    assert "wkr-aws-1: drained" in out
    assert "wkr-aws-2: drained" not in out
    aws = state(project)["config"]["ecoma:burst"]["aws"]
    assert aws["count"] == 1
    assert set(aws["expires_at"]) == {"wkr-aws-2"}

    code, out, _ = run(capsys, "reap", "--stack", "staging", "--offline", "--yes")
    assert code == 0
    assert "no burst node is past its lease" in out


def test_simulated_deploy_keeps_the_running_burst_nodes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "burst", "--stack", "staging", "--provider", "oci", "--count", "1",
               "--offline", "--yes")[0] == 0  # fmt: skip
    code, out, err = run(capsys, "deploy", "--stack", "staging", "--offline", "--yes")
    assert code == 0, err
    assert "burst pools stay at aws 0, gcp 0, oci 1" in out
    assert "up: create 0, delete 0" in out


def test_simulated_drill_passes_every_phase(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "drill", "--stack", "staging", "--provider", "aws", "--offline", "--yes"
    )
    assert code == 0, err
    marks = [line.split()[:2] for line in out.splitlines() if line.startswith("  ok")]
    assert marks == [["ok", "burst"], ["ok", "verify"], ["ok", "teardown"], ["ok", "verify-gone"]]
    assert "drill passed" in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 0


def _failing_session(
    failure: str,
) -> Callable[[argparse.Namespace], Session]:
    real = burst_session.session

    def session(args: argparse.Namespace) -> Session:
        sess = real(args)
        assert sess.world is not None
        world: SimulatedWorld = sess.world
        if failure == "configure":
            world.configure_fails = True
        if failure == "not-ready":
            world.joins_ready = False
        sess.seams = Seams(
            world.stack, lambda: world.cluster, lambda: world.tailnet, world.configure
        )
        return sess

    return session


@pytest.mark.parametrize(
    ("failure", "failed_step"), [("configure", "burst"), ("not-ready", "burst")]
)
def test_simulated_drill_failure_still_removes_the_node_and_exits_1(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
    failed_step: str,
) -> None:
    monkeypatch.setattr(burst_session, "session", _failing_session(failure))
    metrics = project / "drill.prom"
    code, out, _ = run(
        capsys, "drill", "--stack", "staging", "--provider", "gcp", "--offline", "--yes",
        "--ready-timeout", "1", "--metrics-file", str(metrics),
    )  # fmt: skip
    assert code == 1
    assert f"FAIL {failed_step}" in out
    assert "ok   teardown" in out
    assert "drill FAILED" in out
    assert state(project)["config"]["ecoma:burst"]["gcp"]["count"] == 0
    samples = parse(metrics.read_text())
    assert (
        "ecoma_burst_last_success_timestamp_seconds",
        (("operation", "drill"), ("stack", "staging")),
    ) not in samples


def test_simulated_autoscale_bursts_on_a_long_queue_read_from_a_real_prometheus(
    project: Path,
    capsys: pytest.CaptureFixture[str],
    prometheus_lab: PrometheusLab,
) -> None:
    def short_windows(config: dict[str, Any]) -> None:
        # Prometheus started seconds ago: a [5m] rate would read the whole history.
        cpu = config["ecoma:burst"]["autoscale"]["cpu"]
        cpu["query"] = cpu["query"].replace("[5m]", "[3s]")
        latency = config["ecoma:burst"]["autoscale"]["latency"]
        latency["query"] = latency["query"].replace("[5m]", "[3s]")

    change_stack(project, short_windows)
    client = PrometheusClient(prometheus_lab.url)
    prometheus_lab.exporter.queues = {"orders": 5000}
    try:
        deadline = time.monotonic() + 20
        while (client.value("sum(rabbitmq_queue_messages_ready)") or 0) < 1000:
            assert time.monotonic() < deadline, "Prometheus never saw the long queue"
            time.sleep(0.5)
        metrics = project / "autoscale.prom"
        code, out, err = run(
            capsys, "autoscale", "--stack", "staging", "--prometheus", prometheus_lab.url,
            "--offline", "--yes", "--metrics-file", str(metrics),
        )  # fmt: skip
        again = run(
            capsys, "autoscale", "--stack", "staging", "--prometheus", prometheus_lab.url,
            "--offline", "--yes",
        )  # fmt: skip
    finally:
        # The Prometheus is shared by the session: leave it as other tests expect to find it.
        prometheus_lab.exporter.reset()
        deadline = time.monotonic() + 20
        while (client.value("sum(rabbitmq_queue_messages_ready)") or 0) >= 1000:
            assert time.monotonic() < deadline, "Prometheus kept the long queue"
            time.sleep(0.5)
    assert code == 0, err
    assert "decision: up: queue" in out
    assert "add 1 node to aws" in out
    assert "configuring only the new nodes: --limit wkr-aws-1" in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 1
    samples = parse(metrics.read_text())
    assert samples[("ecoma_autoscale_load_high", (("stack", "staging"),))] == 1
    decisions = [k for k in samples if k[0] == "ecoma_autoscale_decision"]
    assert [dict(labels)["action"] for _, labels in decisions] == ["up"]

    # Right after the change the cooldown holds while the queue is still long.
    code, out, _ = again
    assert code == 0
    assert "decision: hold: cooldown" in out
    assert state(project)["config"]["ecoma:burst"]["aws"]["count"] == 1
