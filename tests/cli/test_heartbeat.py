"""The heartbeat of long waits: a live line at a terminal, a line every 30 s in a log; the drain
of the real Kubernetes adapter (against the simulated API server) and the runner's waits feed
it with what they wait on."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_terminal import FakeTerminal
from kubernetes import client
from simulated_apiserver import SimulatedApiServer
from stacks import stack_variant

from ecoma_infra.burst.plan import plan_count, plan_removal
from ecoma_infra.burst.run import BurstError, Runner, Seams, Timeouts, load_ref
from ecoma_infra.cli.heartbeat import Heartbeat
from ecoma_infra.ops.telemetry import Telemetry
from ecoma_infra.platforms.kubernetes import KubernetesCluster
from ecoma_infra.platforms.kubernetes_simulated import SimulatedPod
from ecoma_infra.platforms.seams import DrainProgress
from ecoma_infra.platforms.simulated import SimulatedWorld


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_in_a_log_the_heartbeat_is_a_line_every_30_seconds() -> None:
    clock = Clock()
    log = io.StringIO()
    heartbeat = Heartbeat(log, tty=False, interval=30.0, clock=clock)

    with heartbeat("draining wkr-aws-1") as wait:
        for _ in range(8):  # a poll every 10 s for 70 s
            wait.beat(clock.now, "evicting shop/web-1")
            clock.sleep(10)
        wait.say("  wkr-aws-1: drained")

    assert log.getvalue().splitlines() == [
        "  still draining wkr-aws-1... [30s elapsed] evicting shop/web-1",
        "  still draining wkr-aws-1... [60s elapsed] evicting shop/web-1",
        "  wkr-aws-1: drained",
    ]


def test_at_a_terminal_the_heartbeat_is_one_live_line_that_goes_when_the_wait_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # the line is cut to the terminal's width
    clock = Clock()
    terminal = FakeTerminal()
    heartbeat = Heartbeat(terminal, clock=clock)

    with heartbeat("waiting for wkr-gcp-1 to be Ready") as wait:
        wait.beat(12.0, "wkr-gcp-1: no Node object yet")
        wait.say("  wkr-gcp-2: Ready after 9.0 s")
        wait.beat(24.0, "wkr-gcp-1: NotReady")

    shown = terminal.getvalue()
    assert heartbeat.tty
    assert "waiting for wkr-gcp-1 to be Ready... [12s elapsed] wkr-gcp-1: no Node object yet" in (
        shown
    )
    assert "[24s elapsed] wkr-gcp-1: NotReady" in shown
    assert "  wkr-gcp-2: Ready after 9.0 s\n" in shown  # kept above the live line
    assert "\x1b[?25h" in shown  # the cursor is back
    assert shown.endswith("\x1b[2K")  # and the live line wiped: it was transient


@pytest.fixture
def apiserver() -> Iterator[SimulatedApiServer]:
    server = SimulatedApiServer()
    server.start()
    yield server
    server.stop()


def test_drain_reports_each_poll_with_the_pods_and_the_pdb_refusal_simulated_apiserver(
    apiserver: SimulatedApiServer,
) -> None:
    clock = Clock()
    api_client = client.ApiClient(client.Configuration(host=apiserver.url))
    cluster = KubernetesCluster(api_client, poll_interval=5.0, clock=clock, sleep=clock.sleep)
    apiserver.add_node("wkr-aws-1")
    apiserver.add_pod("shop", "web-1", "wkr-aws-1", labels={"app": "web"})
    apiserver.add_pod("shop", "web-2", "wkr-onprem-1", labels={"app": "web"})
    apiserver.add_pdb("shop", "web-pdb", min_available=2, match_labels={"app": "web"})
    seen: list[DrainProgress] = []

    def replica_elsewhere(progress: DrainProgress) -> None:
        seen.append(progress)
        if len(seen) == 3:
            apiserver.add_pod("shop", "web-3", "wkr-onprem-2", labels={"app": "web"})

    try:
        cluster.drain("wkr-aws-1", timeout=60, on_progress=replica_elsewhere)
    finally:
        api_client.close()

    assert [p.elapsed for p in seen] == [0.0, 5.0, 10.0, 15.0]
    assert all(p.waiting == ["shop/web-1"] for p in seen)
    assert "disruption budget web-pdb" in seen[0].blocked["shop/web-1"]
    assert "shop/web-1" not in seen[-1].blocked  # the fourth eviction was accepted


def _runner(world: SimulatedWorld, out: io.StringIO, clock: Clock) -> Runner:
    seams = Seams(world.stack, lambda: world.cluster, lambda: world.tailnet, world.configure)
    telemetry = Telemetry("staging", "burst", log=io.StringIO())
    return Runner(
        seams,
        telemetry,
        out,
        timeouts=Timeouts(drain=30.0, ready=40.0, poll=10.0),
        monotonic=clock,
        sleep=clock.sleep,
        waits=Heartbeat(out, clock=clock),
    )


def test_simulated_runner_drain_heartbeat_names_the_pod_a_pdb_keeps(tmp_path: Path) -> None:
    world = SimulatedWorld.from_file(stack_variant(tmp_path / "stack", "staging"))
    clock = Clock()
    terminal = FakeTerminal()
    runner = _runner(world, terminal, clock)
    ref = load_ref(world.stack)
    runner.apply(plan_count(ref, "aws", 1, world_now()))
    world.cluster.pods.append(SimulatedPod("db", "queue-0", "wkr-aws-1", blocked_by_pdb=True))

    with pytest.raises(BurstError):
        runner.apply(plan_removal(load_ref(world.stack), "aws", ["wkr-aws-1"], world_now()))

    shown = terminal.getvalue()
    assert "draining wkr-aws-1... [0s elapsed] evicting db/queue-0; 1 refused by a " in shown
    assert "PodDisruptionBudget (db/queue-0)" in shown


def test_simulated_runner_ready_heartbeat_in_a_log_every_30_seconds(tmp_path: Path) -> None:
    world = SimulatedWorld.from_file(stack_variant(tmp_path / "stack", "staging"))
    world.joins_ready = False
    clock = Clock()
    log = io.StringIO()
    runner = _runner(world, log, clock)

    with pytest.raises(BurstError, match="not Ready"):
        runner.apply(plan_count(load_ref(world.stack), "gcp", 1, world_now()))

    beats = [line for line in log.getvalue().splitlines() if line.startswith("  still")]
    assert beats == [
        "  still waiting for wkr-gcp-1 to be Ready... [30s elapsed] wkr-gcp-1: NotReady"
    ]


def world_now() -> datetime:
    return datetime.now(UTC)
