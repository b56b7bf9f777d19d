"""The autoscale decision, driven with sequences of readings over advancing time.

Every run starts from the real staging stack's burst block (three pools of max 2, the seed's
three signals) and feeds each decision back the way `ecoma-infra autoscale` does: pool counts
set to `desired` and `last_scaled_at` to now whenever the action is not a hold.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from stacks import ROOT

from ecoma_infra.burst.autoscale import Decision, decide
from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import CLOUD_PROVIDERS, BurstSettings, CloudProvider

STAGING = load_stack_file(ROOT / "Pulumi.staging.yaml").config.burst
T0 = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
COOLDOWN = timedelta(minutes=10)  # the staging stack's

Readings = dict[str, float | None]
# Staging's bands: cpu 0.35..0.75, queue 100..1000, latency 0.2..0.5.
BAND: Readings = {"cpu": 0.5, "queue": 500.0, "latency": 0.3}
CALM: Readings = {"cpu": 0.2, "queue": 10.0, "latency": 0.1}
HIGH: dict[str, float] = {"cpu": 0.91, "queue": 5000.0, "latency": 0.62}


def burst(
    counts: Mapping[CloudProvider, int] | None = None,
    budget: float | None = None,
    **autoscale: Any,
) -> BurstSettings:
    """Staging's burst block with pool counts, the budget or autoscale fields changed."""
    base = STAGING
    assert base.autoscale is not None
    update: dict[str, Any] = {"autoscale": base.autoscale.model_copy(update=autoscale)}
    if budget is not None:
        update["budget_usd_per_hour"] = budget
    for provider, count in (counts or {}).items():
        update[provider] = getattr(base, provider).model_copy(update={"count": count})
    return base.model_copy(update=update)


def counts(settings: BurstSettings) -> dict[CloudProvider, int]:
    return {provider: pool.count for provider, pool in settings.pools().items()}


def cost(settings: BurstSettings, sizes: Mapping[CloudProvider, int]) -> float:
    pools = settings.pools()
    return sum(sizes[provider] * pools[provider].hourly_price_usd for provider in sizes)


class Run:
    """A burst block over time: each decision is fed back as the autoscale command does."""

    def __init__(self, settings: BurstSettings, now: datetime = T0) -> None:
        self.burst = settings
        self.now = now
        self.decisions: list[Decision] = []

    def step(self, readings: Mapping[str, float | None], after: timedelta) -> Decision:
        self.now += after
        decision = decide(self.burst, readings, self.now)
        if decision.action != "hold":
            pools: dict[str, Any] = {
                provider: getattr(self.burst, provider).model_copy(update={"count": count})
                for provider, count in decision.desired.items()
            }
            self.burst = self.burst.model_copy(update={**pools, "last_scaled_at": self.now})
        self.decisions.append(decision)
        return decision

    def steps(
        self, readings: Iterable[Mapping[str, float | None]], after: timedelta = COOLDOWN
    ) -> list[Decision]:
        return [self.step(r, after) for r in readings]

    @property
    def counts(self) -> dict[CloudProvider, int]:
        return counts(self.burst)


def with_signal(readings: Readings, name: str, value: float | None) -> Readings:
    return {**readings, name: value}


# --------------------------------------------------------------------------- scaling up


@pytest.mark.parametrize("signal", ["cpu", "queue", "latency"])
def test_each_signal_alone_scales_up(signal: str) -> None:
    run = Run(burst())
    high = with_signal(BAND, signal, HIGH[signal])
    first, second = run.steps([high, high])
    assert first.action == "up"
    assert first.load_high
    assert first.desired == {"aws": 1, "gcp": 0, "oci": 0}
    assert first.reason.startswith(f"{signal} ")
    assert first.reason.endswith(": add 1 node to aws")
    assert second.action == "up"
    assert run.counts == {"aws": 2, "gcp": 0, "oci": 0}
    assert first.readings == high


def test_reason_names_the_reading_and_the_threshold() -> None:
    decision = decide(burst(), with_signal(BAND, "cpu", 0.91), T0)
    assert decision.reason == "cpu 0.91 > 0.75: add 1 node to aws"


def test_holds_inside_the_band_including_its_edges() -> None:
    run = Run(burst({"aws": 1, "gcp": 1}))
    sequence: list[Readings] = [
        BAND,
        {"cpu": 0.75, "queue": 1000.0, "latency": 0.5},  # at scale_up_above: not above
        {"cpu": 0.35, "queue": 100.0, "latency": 0.2},  # at scale_down_below: not below
        {"cpu": 0.74, "queue": 101.0, "latency": 0.21},
        {"cpu": 0.2, "queue": 10.0, "latency": 0.3},  # two calm, one in the band
    ]
    for decision in run.steps(sequence):
        assert decision.action == "hold"
        assert decision.reason.startswith("inside the hysteresis band")
        assert not decision.load_high
        assert decision.desired == {"aws": 1, "gcp": 1, "oci": 0}
    assert run.counts == {"aws": 1, "gcp": 1, "oci": 0}


def test_fills_the_preference_order_and_spills_over_at_max() -> None:
    run = Run(burst())
    run.steps([with_signal(BAND, "queue", 5000.0)] * 6)
    assert {d.action for d in run.decisions} == {"up"}
    assert [d.desired for d in run.decisions] == [
        {"aws": 1, "gcp": 0, "oci": 0},
        {"aws": 2, "gcp": 0, "oci": 0},
        {"aws": 2, "gcp": 1, "oci": 0},
        {"aws": 2, "gcp": 2, "oci": 0},
        {"aws": 2, "gcp": 2, "oci": 1},
        {"aws": 2, "gcp": 2, "oci": 2},
    ]
    at_max = run.step(with_signal(BAND, "queue", 5000.0), COOLDOWN)
    assert at_max.action == "hold"
    assert at_max.load_high  # what the alert fires on
    assert "all preferred pools at max" in at_max.reason
    assert at_max.desired == {"aws": 2, "gcp": 2, "oci": 2}


def test_follows_a_custom_preference_and_leaves_other_pools_alone() -> None:
    run = Run(burst({"aws": 1}, preference=["oci", "gcp"]))
    run.steps([with_signal(BAND, "cpu", 0.9)] * 5)
    assert [d.action for d in run.decisions] == ["up", "up", "up", "up", "hold"]
    assert [d.desired for d in run.decisions[:2]] == [
        {"aws": 1, "gcp": 0, "oci": 1},
        {"aws": 1, "gcp": 0, "oci": 2},
    ]
    assert run.counts == {"aws": 1, "gcp": 2, "oci": 2}


def test_adds_step_nodes_per_decision_across_pools() -> None:
    decision = decide(burst({"aws": 1}, step=3), with_signal(BAND, "latency", 0.9), T0)
    assert decision.action == "up"
    assert decision.desired == {"aws": 2, "gcp": 2, "oci": 0}
    assert decision.reason == "latency 0.9 > 0.5: add 3 nodes (aws +1, gcp +2)"


def test_adds_what_fits_when_the_step_does_not() -> None:
    decision = decide(burst({"aws": 2, "gcp": 2, "oci": 1}, step=3), HIGH, T0)
    assert decision.action == "up"
    assert decision.desired == {"aws": 2, "gcp": 2, "oci": 2}
    assert "3 wanted; then all preferred pools at max" in decision.reason


def test_skips_a_pool_the_budget_cannot_pay_for_and_then_holds() -> None:
    # aws 0.096, gcp 0.0771, oci 0.05 per node: two aws (0.192) leave room for oci, not gcp.
    run = Run(burst(budget=0.25))
    run.steps([with_signal(BAND, "cpu", 0.95)] * 4)
    assert [d.action for d in run.decisions] == ["up", "up", "up", "hold"]
    assert run.counts == {"aws": 2, "gcp": 0, "oci": 1}
    held = run.decisions[-1]
    assert held.load_high
    assert held.reason.startswith("cpu 0.95 > 0.75 but budget: ")
    assert "above budget_usd_per_hour 0.25" in held.reason
    assert cost(run.burst, run.counts) <= 0.25


def test_a_budget_of_exactly_the_sum_is_enough() -> None:
    exact = 2 * 0.096 + 2 * 0.0771 + 2 * 0.05
    run = Run(burst(budget=exact))
    run.steps([HIGH] * 6)
    assert run.counts == {"aws": 2, "gcp": 2, "oci": 2}


# --------------------------------------------------------------------------- cooldown


def test_holds_within_the_cooldown_and_acts_after_it() -> None:
    run = Run(burst())
    high = with_signal(BAND, "cpu", 0.9)
    assert run.step(high, timedelta(0)).action == "up"
    for minutes, left in [(1, 540), (4, 360), (9.5, 30)]:
        run.now = T0 + timedelta(minutes=minutes)
        held = run.step(high, timedelta(0))
        assert held.action == "hold"
        assert held.reason.startswith(f"cooldown: {left} s left")
        assert "wanted: cpu 0.9 > 0.75: add 1 node to aws" in held.reason
        assert held.load_high
        assert held.desired == {"aws": 1, "gcp": 0, "oci": 0}
    run.now = T0 + COOLDOWN
    assert run.step(high, timedelta(0)).action == "up"
    assert run.counts == {"aws": 2, "gcp": 0, "oci": 0}


def test_the_cooldown_holds_a_scale_down_too() -> None:
    run = Run(burst({"aws": 2}).model_copy(update={"last_scaled_at": T0}))
    first = run.step(CALM, timedelta(minutes=3))
    assert first.action == "hold"
    assert first.reason.startswith("cooldown: 420 s left")
    assert "remove 1 node from aws" in first.reason
    assert run.step(CALM, timedelta(minutes=7)).action == "down"
    assert run.step(CALM, timedelta(minutes=5)).action == "hold"
    assert run.step(CALM, timedelta(minutes=5)).action == "down"
    assert run.counts == {"aws": 0, "gcp": 0, "oci": 0}


def test_the_cooldown_does_not_hide_the_band() -> None:
    settings = burst({"aws": 1}).model_copy(update={"last_scaled_at": T0})
    decision = decide(settings, BAND, T0 + timedelta(minutes=1))
    assert decision.reason.startswith("inside the hysteresis band")


# --------------------------------------------------------------------------- scaling down


def test_scales_down_only_when_all_three_are_calm() -> None:
    run = Run(burst({"aws": 2, "gcp": 2, "oci": 2}))
    for signal in ("cpu", "queue", "latency"):
        decision = run.step(with_signal(CALM, signal, BAND[signal]), COOLDOWN)
        assert decision.action == "hold", signal
        assert decision.reason.startswith("inside the hysteresis band")
    decision = run.step(CALM, COOLDOWN)
    assert decision.action == "down"
    assert not decision.load_high
    assert decision.reason == (
        "all signals calm (cpu 0.2 < 0.35, queue 10 < 100, latency 0.1 < 0.2): "
        "remove 1 node from oci"
    )
    assert decision.desired == {"aws": 2, "gcp": 2, "oci": 1}


@pytest.mark.parametrize("signal", ["cpu", "queue", "latency"])
@pytest.mark.parametrize("missing", [None, float("nan"), "absent"])
def test_a_missing_reading_never_scales_down(signal: str, missing: float | str | None) -> None:
    run = Run(burst({"aws": 2, "gcp": 1}))
    readings = dict(CALM)
    if missing == "absent":
        del readings[signal]
    else:
        readings[signal] = missing  # type: ignore[assignment]
    for decision in run.steps([readings] * 10):
        assert decision.action == "hold"
        assert "a missing reading never scales down" in decision.reason
        assert f"{signal} no reading" in decision.reason
        assert decision.readings[signal] is None
    assert run.counts == {"aws": 2, "gcp": 1, "oci": 0}


def test_a_missing_reading_does_not_stop_a_scale_up() -> None:
    decision = decide(burst(), {"cpu": None, "queue": 5000.0, "latency": None}, T0)
    assert decision.action == "up"
    assert decision.reason == "queue 5000 > 1000: add 1 node to aws"


def test_removes_in_reverse_preference_order() -> None:
    run = Run(burst({"aws": 2, "gcp": 2, "oci": 2}))
    run.steps([CALM] * 7)
    assert [d.action for d in run.decisions] == ["down"] * 6 + ["hold"]
    assert [d.reason.rsplit(" ", 1)[-1] for d in run.decisions[:6]] == [
        "oci",
        "oci",
        "gcp",
        "gcp",
        "aws",
        "aws",
    ]
    assert [sum(d.desired.values()) for d in run.decisions] == [5, 4, 3, 2, 1, 0, 0]
    assert run.counts == {"aws": 0, "gcp": 0, "oci": 0}


def test_removes_from_the_last_preferred_pool_of_a_custom_order() -> None:
    run = Run(burst({"aws": 1, "gcp": 1, "oci": 1}, preference=["oci", "aws"], step=2))
    decision = run.step(CALM, COOLDOWN)
    assert decision.desired == {"aws": 0, "gcp": 1, "oci": 0}
    assert decision.reason.endswith("remove 2 nodes (aws -1, oci -1)")
    assert run.step(CALM, COOLDOWN).action == "hold"  # gcp is not preferred: never removed
    assert run.counts == {"aws": 0, "gcp": 1, "oci": 0}


# --------------------------------------------------------------------------- min_nodes


def test_below_min_nodes_scales_up_whatever_the_load() -> None:
    run = Run(burst(min_nodes=3))
    decision = run.step(CALM, timedelta(0))
    assert decision.action == "up"
    assert not decision.load_high
    assert decision.reason == "0 nodes running, below min_nodes 3: add 3 nodes (aws +2, gcp +1)"
    for decision in run.steps([CALM] * 5):
        assert decision.action == "hold"
        assert decision.reason == "all signals are calm but the pools are at min_nodes 3"
    assert run.counts == {"aws": 2, "gcp": 1, "oci": 0}


def test_never_scales_below_min_nodes() -> None:
    run = Run(burst({"aws": 2, "gcp": 2, "oci": 1}, min_nodes=2, step=2))
    run.steps([CALM] * 4)
    assert [d.action for d in run.decisions] == ["down", "down", "hold", "hold"]
    assert [sum(d.desired.values()) for d in run.decisions] == [3, 2, 2, 2]
    assert run.counts == {"aws": 2, "gcp": 0, "oci": 0}


def test_min_nodes_still_respects_the_budget() -> None:
    decision = decide(burst(budget=0.1, min_nodes=2), CALM, T0)
    assert decision.action == "up"
    assert decision.desired == {"aws": 1, "gcp": 0, "oci": 0}
    assert "2 wanted; then budget" in decision.reason


# --------------------------------------------------------------------------- properties


def random_burst(rng: random.Random) -> BurstSettings:
    maxes = {p: rng.randint(0, 3) for p in CLOUD_PROVIDERS}
    settings = burst(
        preference=rng.sample(list(CLOUD_PROVIDERS), rng.randint(1, 3)),
        step=rng.randint(1, 3),
        cooldown=rng.choice(["30s", "5m", "10m", "1h"]),
        budget=round(rng.uniform(0.0, 0.6), 3),
    )
    pools: dict[str, Any] = {
        p: getattr(settings, p).model_copy(update={"max": maxes[p]}) for p in maxes
    }
    assert settings.autoscale is not None
    ceiling = sum(maxes[p] for p in settings.autoscale.preference)
    autoscale = settings.autoscale.model_copy(update={"min_nodes": rng.randint(0, min(ceiling, 2))})
    return settings.model_copy(update={**pools, "autoscale": autoscale})


def random_readings(rng: random.Random) -> Readings:
    def reading(low: float, high: float) -> float | None:
        return None if rng.random() < 0.05 else rng.uniform(low, high)

    # Biased towards calm so that downs happen as often as ups.
    calm = rng.random() < 0.4
    return {
        "cpu": reading(0.0, 0.3 if calm else 1.0),
        "queue": reading(0.0, 90.0 if calm else 3000.0),
        "latency": reading(0.0, 0.19 if calm else 1.0),
    }


def _above(value: float | None, limit: float) -> bool:
    return value is not None and value > limit


def _below(value: float | None, limit: float) -> bool:
    return value is not None and value < limit


def test_never_exceeds_max_or_budget_over_random_sequences() -> None:
    seen: dict[str, int] = {"up": 0, "down": 0, "hold": 0, "at max": 0, "budget": 0, "cool": 0}
    for seed in range(300):
        rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
        run = Run(random_burst(rng))
        settings = run.burst.autoscale
        assert settings is not None
        pools = run.burst.pools()
        for _ in range(40):
            before = run.counts
            last = run.burst.last_scaled_at
            after = timedelta(seconds=rng.choice([5, 30, 90, 300, 700, 4000]))
            readings = random_readings(rng)
            decision = run.step(readings, after)
            seen[decision.action] += 1
            context = f"seed {seed}: {before} -> {decision}"
            desired = decision.desired
            assert set(desired) == set(pools), context
            for provider, count in desired.items():
                assert 0 <= count <= pools[provider].max, context
                if provider not in settings.preference:
                    assert count == before[provider], context
            assert cost(run.burst, desired) <= run.burst.budget_usd_per_hour + 1e-9, context
            total_before = sum(before[p] for p in settings.preference)
            total = sum(desired[p] for p in settings.preference)
            rules = settings.rules().items()
            high = any(_above(readings[n], r.scale_up_above) for n, r in rules)
            assert decision.load_high == high, context
            in_cooldown = last is not None and run.now - last < settings.cooldown_seconds * (
                timedelta(seconds=1)
            )
            if in_cooldown:
                seen["cool"] += 1
                assert decision.action == "hold", context
            if decision.action == "hold":
                assert desired == before, context
                seen["at max"] += "at max" in decision.reason
                seen["budget"] += "budget" in decision.reason
            elif decision.action == "up":
                assert high or total_before < settings.min_nodes, context
                deficit = settings.min_nodes - total_before
                assert 0 < total - total_before <= max(settings.step, deficit), context
            else:
                assert all(_below(readings[n], r.scale_down_below) for n, r in rules), context
                assert 0 < total_before - total <= settings.step, context
                assert total >= settings.min_nodes, context
    # The sequences really exercised every branch.
    assert all(count > 50 for count in seen.values()), seen


# --------------------------------------------------------------------------- misuse


def test_needs_the_autoscale_block() -> None:
    settings = STAGING.model_copy(update={"autoscale": None})
    with pytest.raises(EcomaError, match=r"ecoma:burst\.autoscale is not set: add it"):
        decide(settings, CALM, T0)


def test_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        decide(burst(), CALM, datetime(2025, 6, 2, 9, 0))
