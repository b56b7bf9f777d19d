"""Bursting end to end at its seams: Pulumi (the real program under mocks), Kubernetes and
Tailscale are simulated (`ecoma_infra.platforms.simulated`), so every test here says so in its name.
The plans, the order of the steps and the refusals are the real code."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from stacks import stack_variant

from ecoma_infra.burst import plan as burstplan
from ecoma_infra.burst.plan import PlanRefusedError, plan_count, plan_removal
from ecoma_infra.burst.run import BurstError, Runner, Seams, Timeouts, load_ref
from ecoma_infra.ops.telemetry import Telemetry, parse
from ecoma_infra.platforms.kubernetes_simulated import SimulatedPod
from ecoma_infra.platforms.simulated import SimulatedWorld
from ecoma_infra.stack.config_paths import config_path
from ecoma_infra.stack.model import CloudProvider

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def at(hours: float) -> str:
    return (NOW + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_world(
    tmp_path: Path, change: Callable[[dict[str, Any]], None] | None = None
) -> SimulatedWorld:
    return SimulatedWorld.from_file(stack_variant(tmp_path / "stack", "staging", change))


def with_pool(provider: str, count: int, leases: dict[str, tuple[float, float]] | None = None):
    """A change to the stack file: the pool at `count`, leases as (launched, expires) hours."""

    def change(config: dict[str, Any]) -> None:
        pool = config["ecoma:burst"][provider]
        pool["count"] = count
        for name, (launched, expires) in (leases or {}).items():
            pool.setdefault("launched_at", {})[name] = at(launched)
            pool.setdefault("expires_at", {})[name] = at(expires)

    return change


class Clock:
    """Monotonic time that sleeping advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.5)


def runner_for(
    world: SimulatedWorld, tmp_path: Path, *, timeouts: Timeouts | None = None
) -> tuple[Runner, io.StringIO, Path]:
    timeouts = timeouts or Timeouts(poll=5.0)
    out = io.StringIO()
    metrics = tmp_path / "metrics" / "ecoma.prom"
    telemetry = Telemetry("staging", "burst", log=io.StringIO(), metrics_file=metrics)
    seams = Seams(world.stack, lambda: world.cluster, lambda: world.tailnet, world.configure)
    clock = Clock()
    runner = Runner(
        seams,
        telemetry,
        out,
        timeouts=timeouts,
        now=lambda: NOW,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
    )
    return runner, out, metrics


def up_entries(world: SimulatedWorld) -> list[dict[str, int]]:
    return [json.loads(detail) for kind, detail in world.journal if kind == "up"]


def pool_count(world: SimulatedWorld, provider: CloudProvider) -> int:
    return load_ref(world.stack).config.burst.pools()[provider].count


# --- growing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2])
def test_simulated_burst_adds_exactly_n_nodes_and_configures_only_them(
    tmp_path: Path, count: int
) -> None:
    world = make_world(tmp_path)
    # A node of another pool already runs: it must be neither touched nor configured again.
    world.stack.set_config({"ecoma:burst.gcp.count": 1})
    world.stack.up(lambda line: None)
    world.cluster.join("wkr-gcp-1", "gcp")
    world.journal.clear()
    runner, out, _ = runner_for(world, tmp_path)

    plan = plan_count(load_ref(world.stack), "aws", count, NOW)
    outcome = runner.apply(plan)

    new = [f"wkr-aws-{i}" for i in range(1, count + 1)]
    assert outcome.added == new
    assert ("configure", ",".join(new)) in world.journal
    assert [kind for kind, _ in world.journal if kind == "configure"] == ["configure"]
    assert world.configured == new
    # The up created one instance, one volume per non-OS disk, its attachment and its key per
    # node (staging's aws pool: an OS disk and a swap disk), and deleted nothing.
    assert up_entries(world) == [{"create": 4 * count, "delete": 0}]
    assert sorted(d.hostname for d in world.tailnet.devices()) == [*new, "wkr-gcp-1"]
    assert pool_count(world, "aws") == count
    assert pool_count(world, "gcp") == 1
    assert all(world.cluster.node(name).ready for name in new)  # type: ignore[union-attr]
    assert "configuring only the new nodes: --limit " + ",".join(new) in out.getvalue()


def test_simulated_burst_gives_new_nodes_leases_and_the_lowest_free_names(tmp_path: Path) -> None:
    world = make_world(tmp_path, with_pool("aws", 1, {"wkr-aws-2": (-1, 1)}))
    runner, _, _ = runner_for(world, tmp_path)

    plan = plan_count(load_ref(world.stack), "aws", 2, NOW, ttl="90m")
    runner.apply(plan)

    pool = load_ref(world.stack).config.burst.aws
    assert pool is not None
    assert pool.node_names("aws") == ["wkr-aws-1", "wkr-aws-2"]
    assert pool.launched_at["wkr-aws-1"] == NOW
    assert pool.expires_at["wkr-aws-1"] == NOW + timedelta(minutes=90)
    assert pool.expires_at["wkr-aws-2"] == NOW + timedelta(hours=1)  # untouched
    assert world.configured == ["wkr-aws-1"]


def test_simulated_burst_fails_when_a_node_never_becomes_ready(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.joins_ready = False
    runner, _, metrics = runner_for(world, tmp_path, timeouts=Timeouts(ready=60, poll=10))

    with pytest.raises(BurstError, match=r"wkr-aws-1 not Ready .* after 60 s"):
        runner.apply(plan_count(load_ref(world.stack), "aws", 1, NOW))
    runner.telemetry.finish(success=False)

    samples = parse(metrics.read_text())
    ready = {
        dict(k[1]).get("node"): v for k, v in samples.items() if k[0] == "ecoma_burst_node_ready"
    }
    assert ready == {"wkr-aws-1": 0.0}
    failures = {
        dict(k[1])["phase"]: v
        for k, v in samples.items()
        if k[0] == "ecoma_burst_operation_failures_total"
    }
    assert failures["ready"] == 1
    assert failures["up"] == 0


def test_simulated_burst_stops_when_configure_fails_and_says_how_to_resume(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    world.configure_fails = True
    runner, _, _ = runner_for(world, tmp_path)

    with pytest.raises(BurstError, match=r"configure --stack staging --limit wkr-aws-1"):
        runner.apply(plan_count(load_ref(world.stack), "aws", 1, NOW))
    assert world.cluster.node("wkr-aws-1") is None


# --- refusals ----------------------------------------------------------------------------------


def test_simulated_counts_above_the_pool_max_are_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    before = world.stack.config()

    with pytest.raises(PlanRefusedError) as refused:
        plan_count(load_ref(world.stack), "aws", 3, NOW)

    message = str(refused.value)
    assert "Pulumi.staging.yaml: ecoma:burst.aws.max" in message
    assert "above the pool's max of 2" in message
    assert "ask for at most 2, or raise max" in message
    assert world.journal == []
    assert world.stack.config() == before


def test_simulated_counts_above_the_budget_are_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    def tight_budget(config: dict[str, Any]) -> None:
        config["ecoma:burst"]["budget_usd_per_hour"] = 0.15
        with_pool("gcp", 1)(config)

    world = make_world(tmp_path, tight_budget)
    before = world.stack.config()

    with pytest.raises(PlanRefusedError) as refused:
        plan_count(load_ref(world.stack), "aws", 1, NOW)

    message = str(refused.value)
    assert "ecoma:burst.budget_usd_per_hour" in message
    assert "0.1731 USD/h, above the budget of 0.15 USD/h" in message
    assert world.journal == []
    assert world.stack.config() == before


def test_a_pool_the_stack_does_not_have_is_refused(tmp_path: Path) -> None:
    def no_oci(config: dict[str, Any]) -> None:
        del config["ecoma:burst"]["oci"]
        config["ecoma:burst"]["autoscale"]["preference"] = ["aws", "gcp"]

    path = stack_variant(tmp_path, "staging", no_oci)
    world = SimulatedWorld.from_file(path)
    with pytest.raises(PlanRefusedError, match=r"ecoma:burst.oci: the stack has no oci pool"):
        plan_count(load_ref(world.stack), "oci", 1, NOW)


# --- shrinking ---------------------------------------------------------------------------------


def test_simulated_scale_down_drains_every_node_before_any_destroy(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    runner, _, _ = runner_for(world, tmp_path)
    runner.apply(plan_count(load_ref(world.stack), "aws", 2, NOW))
    world.cluster.pods.append(SimulatedPod("shop", "web-1", "wkr-aws-1"))
    world.journal.clear()

    outcome = runner.apply(plan_count(load_ref(world.stack), "aws", 0, NOW))

    kinds = [kind for kind, _ in world.journal]
    first_change = min(kinds.index("set_config"), kinds.index("up"))
    for name in ("wkr-aws-1", "wkr-aws-2"):
        assert kinds.index("cordon") < first_change
        assert world.journal.index(("drain", name)) < first_change
        assert world.journal.index(("delete_node", name)) < first_change
    assert up_entries(world) == [{"create": 0, "delete": 8}]
    assert sorted(outcome.removed) == ["wkr-aws-1", "wkr-aws-2"]
    assert world.cluster.nodes == {}
    assert not [p for p in world.cluster.pods if p.name == "web-1"]
    assert world.tailnet.devices() == []  # the removed nodes' devices are gone
    assert pool_count(world, "aws") == 0
    pool = load_ref(world.stack).config.burst.aws
    assert pool is not None
    assert pool.expires_at == {}
    assert pool.launched_at == {}


def test_simulated_failed_drain_destroys_nothing_uncordons_and_fails(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    runner, _, metrics = runner_for(world, tmp_path)
    runner.apply(plan_count(load_ref(world.stack), "aws", 2, NOW))
    # wkr-aws-1 drains; wkr-aws-2 holds a pod whose PodDisruptionBudget refuses eviction.
    world.cluster.pods.append(SimulatedPod("db", "queue-0", "wkr-aws-1", blocked_by_pdb=True))
    config_before = world.stack.config()
    world.journal.clear()

    with pytest.raises(BurstError) as failed:
        runner.apply(plan_count(load_ref(world.stack), "aws", 0, NOW))
    runner.telemetry.finish(success=False)

    message = str(failed.value)
    assert "drain of wkr-aws-1 failed" in message
    assert "PodDisruptionBudget" in message
    assert "db/queue-0" in message
    assert "Nothing was destroyed" in message
    kinds = [kind for kind, _ in world.journal]
    assert "up" not in kinds
    assert "set_config" not in kinds
    assert "delete_node" not in kinds
    assert world.stack.config() == config_before
    for name in ("wkr-aws-1", "wkr-aws-2"):
        node = world.cluster.node(name)
        assert node is not None
        assert not node.unschedulable
    assert ("uncordon", "wkr-aws-2") in world.journal
    samples = parse(metrics.read_text())
    assert not [k for k in samples if k[0] == "ecoma_burst_teardown_started_timestamp_seconds"]
    drain_failures = [
        v
        for k, v in samples.items()
        if k[0] == "ecoma_burst_operation_failures_total" and ("phase", "drain") in k[1]
    ]
    assert drain_failures == [1.0]


def test_simulated_destroy_that_fails_leaves_the_teardown_marked_in_progress(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    runner, _, metrics = runner_for(world, tmp_path)
    runner.apply(plan_count(load_ref(world.stack), "aws", 1, NOW))
    world.stack.fail_up = True

    with pytest.raises(Exception, match="simulated failure of up"):
        runner.apply(plan_count(load_ref(world.stack), "aws", 0, NOW))
    runner.telemetry.finish(success=False)

    samples = parse(metrics.read_text())
    started = [k for k in samples if k[0] == "ecoma_burst_teardown_started_timestamp_seconds"]
    assert [dict(labels)["node"] for _, labels in started] == ["wkr-aws-1"]
    failures = {
        dict(k[1])["phase"]: v
        for k, v in samples.items()
        if k[0] == "ecoma_burst_operation_failures_total"
    }
    assert failures["destroy"] == 1


def test_removal_order_is_expired_oldest_first_then_the_newest() -> None:
    lease = burstplan.NodeLease
    running = [
        lease("wkr-aws-1", NOW - timedelta(hours=5), NOW - timedelta(hours=1)),
        lease("wkr-aws-2", NOW - timedelta(hours=6), NOW - timedelta(hours=2)),
        lease("wkr-aws-3", NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
        lease("wkr-aws-4", NOW - timedelta(minutes=10), NOW + timedelta(hours=3)),
        lease("wkr-aws-5", None, None),
    ]
    order = [item.name for item in burstplan.removal_order(running, NOW)]
    assert order == ["wkr-aws-2", "wkr-aws-1", "wkr-aws-4", "wkr-aws-3", "wkr-aws-5"]


def test_simulated_scale_down_keeps_the_other_nodes_in_place(tmp_path: Path) -> None:
    # wkr-aws-1 expired, wkr-aws-2 did not: count 1 removes wkr-aws-1 and leaves wkr-aws-2's
    # resources exactly as they are (its name is pinned by its lease).
    world = make_world(tmp_path, with_pool("aws", 2, {"wkr-aws-1": (-3, -1), "wkr-aws-2": (-1, 1)}))
    world.cluster.join("wkr-aws-1", "aws")
    world.cluster.join("wkr-aws-2", "aws")
    runner, out, _ = runner_for(world, tmp_path)

    runner.apply(plan_count(load_ref(world.stack), "aws", 1, NOW))

    assert up_entries(world) == [{"create": 0, "delete": 4}]
    deleted = [line for line in out.getvalue().splitlines() if "- delete" in line]
    assert deleted
    assert all("wkr-aws-1" in line for line in deleted)
    assert load_ref(world.stack).config.burst.aws.node_names("aws") == ["wkr-aws-2"]  # type: ignore[union-attr]


def test_simulated_scale_down_pins_a_node_that_was_counted_by_hand(tmp_path: Path) -> None:
    world = make_world(tmp_path, with_pool("aws", 2))  # no leases: count set in the file
    for name in ("wkr-aws-1", "wkr-aws-2"):
        world.cluster.join(name, "aws")
    runner, _, _ = runner_for(world, tmp_path)

    plan = plan_count(load_ref(world.stack), "aws", 1, NOW)
    assert [lease.name for lease in plan.remove] == ["wkr-aws-2"]
    runner.apply(plan)
    assert up_entries(world) == [{"create": 0, "delete": 4}]
    pool = load_ref(world.stack).config.burst.aws
    assert pool is not None
    assert pool.node_names("aws") == ["wkr-aws-1"]
    assert pool.expires_at["wkr-aws-1"] == NOW + timedelta(hours=2)


# --- the reaper --------------------------------------------------------------------------------


def test_the_reaper_picks_exactly_the_expired_nodes(tmp_path: Path) -> None:
    def leases(config: dict[str, Any]) -> None:
        with_pool("aws", 2, {"wkr-aws-1": (-3, -0.5), "wkr-aws-2": (-1, 1)})(config)
        with_pool("gcp", 2, {"wkr-gcp-1": (-4, -2), "wkr-gcp-2": (-3, 0)})(config)
        with_pool("oci", 1, {"wkr-oci-1": (-1, 0.01)})(config)

    world = make_world(tmp_path, leases)
    found = burstplan.expired(load_ref(world.stack).config, NOW)
    assert {p: [lease.name for lease in ls] for p, ls in found.items()} == {
        "aws": ["wkr-aws-1"],
        "gcp": ["wkr-gcp-1", "wkr-gcp-2"],  # a lease ending exactly now has ended
    }


def test_simulated_reap_removes_the_expired_nodes_drain_first(tmp_path: Path) -> None:
    world = make_world(tmp_path, with_pool("aws", 2, {"wkr-aws-1": (-3, -1), "wkr-aws-2": (-1, 1)}))
    for name in ("wkr-aws-1", "wkr-aws-2"):
        world.cluster.join(name, "aws")
        world.tailnet.add(name)
    runner, _, _ = runner_for(world, tmp_path)
    ref = load_ref(world.stack)

    plans = [
        plan_removal(ref, provider, [lease.name for lease in leases], NOW)
        for provider, leases in burstplan.expired(ref.config, NOW).items()
    ]
    for plan in plans:
        runner.apply(plan)

    assert ("drain", "wkr-aws-1") in world.journal
    assert ("drain", "wkr-aws-2") not in world.journal
    assert world.journal.index(("drain", "wkr-aws-1")) < [k for k, _ in world.journal].index("up")
    assert [d.hostname for d in world.tailnet.devices()] == ["wkr-aws-2"]
    assert world.cluster.node("wkr-aws-2") is not None
    assert load_ref(world.stack).config.burst.aws.node_names("aws") == ["wkr-aws-2"]  # type: ignore[union-attr]


# --- the simulation itself ---------------------------------------------------------------------


def test_simulated_stack_config_paths_parse_like_pulumi_paths() -> None:
    assert config_path('ecoma:burst.aws.expires_at["wkr-aws-1"]') == (
        "ecoma:burst",
        ["aws", "expires_at", "wkr-aws-1"],
    )
    assert config_path("ecoma:burst.last_scaled_at") == ("ecoma:burst", ["last_scaled_at"])
    with pytest.raises(Exception, match="not a config path"):
        config_path("ecoma:burst..aws")


def test_simulated_ci_checkout_takes_the_running_burst_state_from_the_stack_outputs(
    tmp_path: Path,
) -> None:
    # A CI runner's checkout has the committed file (aws count 0), while the stack runs
    # wkr-aws-2 (its lease in the `burst` output). The reaper and a burst must see that node.
    world = make_world(tmp_path, with_pool("aws", 1, {"wkr-aws-2": (-3, -1)}))
    world.stack.set_config({"ecoma:burst.aws.count": 0})
    world.stack.remove_config(
        ['ecoma:burst.aws.launched_at["wkr-aws-2"]', 'ecoma:burst.aws.expires_at["wkr-aws-2"]']
    )
    world.cluster.join("wkr-aws-2", "aws")
    world.journal.clear()

    ref = load_ref(world.stack)
    pool = ref.config.burst.aws
    assert pool is not None
    assert pool.node_names("aws") == ["wkr-aws-2"]
    assert [lease.name for lease in burstplan.expired(ref.config, NOW)["aws"]] == ["wkr-aws-2"]

    runner, _, _ = runner_for(world, tmp_path)
    plan = plan_count(ref, "aws", 2, NOW)
    assert [lease.name for lease in plan.add] == ["wkr-aws-1"]
    runner.apply(plan)
    # The node that ran before is untouched: only wkr-aws-1's four resources were created.
    assert up_entries(world) == [{"create": 4, "delete": 0}]
    assert world.configured == ["wkr-aws-1"]


def test_carried_burst_state_sets_sizes_and_leases_and_drops_stale_ones() -> None:
    config = {
        "ecoma:burst": {
            "aws": {"count": 0, "expires_at": {"wkr-aws-1": at(-5)}},
            "gcp": {"count": 1},
        }
    }
    outputs = {
        "burst": {
            "pools": {
                "aws": {
                    "count": 1,
                    "nodes": {"wkr-aws-2": {"launched_at": at(-1), "expires_at": at(1)}},
                },
                "gcp": {
                    "count": 1,
                    "nodes": {"wkr-gcp-1": {"launched_at": None, "expires_at": None}},
                },
            },
            "last_scaled_at": at(-1),
        }
    }
    values, removals = burstplan.carried_burst_state(config, outputs)
    assert values == {
        "ecoma:burst.aws.count": 1,
        'ecoma:burst.aws.launched_at["wkr-aws-2"]': at(-1),
        'ecoma:burst.aws.expires_at["wkr-aws-2"]': at(1),
        "ecoma:burst.last_scaled_at": at(-1),
    }
    assert removals == ['ecoma:burst.aws.expires_at["wkr-aws-1"]']
    assert burstplan.carried_burst_state(config, {}) == ({}, [])
