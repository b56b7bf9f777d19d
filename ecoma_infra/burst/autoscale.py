"""The autoscale decision: from three load readings to the burst pool sizes, with no I/O.

`decide` is a pure function of the burst config, the readings and the time it is given. It adds
nodes while any signal is above its `scale_up_above`, removes them only while every signal is
below its `scale_down_below` (a missing reading never counts as calm), waits out the cooldown
after the last change, keeps `min_nodes`, and never goes over a pool's `max` or the hourly
budget of all pools together. Nodes are added in `preference` order and removed in reverse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import AutoscaleSettings, BurstSettings, CloudProvider, MetricRule

Action = Literal["up", "down", "hold"]

# Sums of float prices: 0.1 + 0.2 must still fit a budget of 0.3.
_BUDGET_SLACK = 1e-9


@dataclass(frozen=True)
class Decision:
    """What to do now, why, and the pool sizes that result."""

    action: Action
    reason: str
    desired: dict[CloudProvider, int]
    load_high: bool
    readings: dict[str, float | None]


def decide(burst: BurstSettings, readings: Mapping[str, float | None], now: datetime) -> Decision:
    """The decision for `readings` (signal name -> value, None if Prometheus had none) at `now`.

    Below `min_nodes`, nodes are added whatever the load: enough to reach it, at least `step`.
    """
    settings = burst.autoscale
    if settings is None:
        raise EcomaError("ecoma:burst.autoscale is not set: add it (see ecoma-infra schema)")
    if now.tzinfo is None:
        raise ValueError("decide needs a timezone-aware `now`")
    rules = settings.rules()
    values = {name: _clean(readings.get(name)) for name in rules}
    current = {provider: pool.count for provider, pool in burst.pools().items()}
    high = [
        _compare(name, value, ">", rule.scale_up_above)
        for name, rule in rules.items()
        if (value := values[name]) is not None and value > rule.scale_up_above
    ]
    load_high = bool(high)
    total = sum(current.get(provider, 0) for provider in settings.preference)

    def hold(reason: str) -> Decision:
        return Decision("hold", reason, dict(current), load_high, values)

    if total < settings.min_nodes:
        why = f"{_nodes(total)} running, below min_nodes {settings.min_nodes}"
        wanted = max(settings.step, settings.min_nodes - total)
        action: Action = "up"
    elif load_high:
        why = ", ".join(high)
        wanted = settings.step
        action = "up"
    elif _calm(rules, values):
        if total <= settings.min_nodes:
            return hold(f"all signals are calm but the pools are at min_nodes {settings.min_nodes}")
        calm = [_compare(name, values[name], "<", r.scale_down_below) for name, r in rules.items()]
        why = f"all signals calm ({', '.join(calm)})"
        wanted = min(settings.step, total - settings.min_nodes)
        action = "down"
    else:
        return hold(_band_reason(values))

    if action == "up":
        desired, blocked = _add(burst, settings, current, wanted)
    else:
        desired, blocked = _remove(settings, current, wanted), None
    changes = _changes(current, desired)
    if not changes:
        return hold(f"{why} but {blocked}")
    plan = f"{why}: {_describe(action, changes)}"
    if blocked is not None:
        plan += f" ({wanted} wanted; then {blocked})"
    left = _cooldown_left(burst, settings, now)
    if left > 0:
        return hold(f"cooldown: {left} s left before the next change (wanted: {plan})")
    return Decision(action, plan, desired, load_high, values)


def _clean(value: float | None) -> float | None:
    """A reading, with NaN (Prometheus's answer for 0/0) as no reading."""
    if value is None or math.isnan(value):
        return None
    return float(value)


def _calm(rules: Mapping[str, MetricRule], values: Mapping[str, float | None]) -> bool:
    return all(
        (value := values[name]) is not None and value < rule.scale_down_below
        for name, rule in rules.items()
    )


def _add(
    burst: BurstSettings,
    settings: AutoscaleSettings,
    current: Mapping[CloudProvider, int],
    wanted: int,
) -> tuple[dict[CloudProvider, int], str | None]:
    """Add up to `wanted` nodes, one at a time; why it stopped short, if it did."""
    pools = burst.pools()
    desired = dict(current)
    for _ in range(wanted):
        cost = sum(pool.hourly_cost(desired[name]) for name, pool in pools.items())

        def more(provider: CloudProvider) -> float:
            """What one more node of `provider` adds per hour (its pool's NAT with the first)."""
            pool = pools[provider]
            return pool.hourly_cost(desired[provider] + 1) - pool.hourly_cost(desired[provider])

        open_pools = [
            provider
            for provider in settings.preference
            if provider in pools and desired[provider] < pools[provider].max
        ]
        if not open_pools:
            return desired, "all preferred pools at max (" + _sizes(burst, desired) + ")"
        fits = [
            provider
            for provider in open_pools
            if cost + more(provider) <= burst.budget_usd_per_hour + _BUDGET_SLACK
        ]
        if not fits:
            cheapest = min(open_pools, key=more)
            after = cost + more(cheapest)
            return desired, (
                f"budget: one more node ({cheapest}) would cost {after:.4f} USD/h in all, "
                f"above budget_usd_per_hour {burst.budget_usd_per_hour:g}"
            )
        desired[fits[0]] += 1
    return desired, None


def _remove(
    settings: AutoscaleSettings, current: Mapping[CloudProvider, int], wanted: int
) -> dict[CloudProvider, int]:
    """Remove `wanted` nodes (the caller keeps min_nodes), last preferred provider first."""
    desired = dict(current)
    for _ in range(wanted):
        provider = next((p for p in reversed(settings.preference) if desired.get(p, 0) > 0), None)
        if provider is None:
            break
        desired[provider] -= 1
    return desired


def _cooldown_left(burst: BurstSettings, settings: AutoscaleSettings, now: datetime) -> int:
    """Whole seconds until the cooldown after the last change ends; 0 when it has."""
    if burst.last_scaled_at is None:
        return 0
    elapsed = (now - burst.last_scaled_at).total_seconds()
    return max(0, math.ceil(settings.cooldown_seconds - elapsed))


def _changes(
    current: Mapping[CloudProvider, int], desired: Mapping[CloudProvider, int]
) -> dict[CloudProvider, int]:
    return {p: desired[p] - current[p] for p in desired if desired[p] != current[p]}


def _describe(action: Action, changes: Mapping[CloudProvider, int]) -> str:
    count = sum(abs(delta) for delta in changes.values())
    verb, preposition = ("add", "to") if action == "up" else ("remove", "from")
    if len(changes) == 1:
        return f"{verb} {_nodes(count)} {preposition} {next(iter(changes))}"
    parts = ", ".join(f"{provider} {delta:+d}" for provider, delta in changes.items())
    return f"{verb} {_nodes(count)} ({parts})"


def _sizes(burst: BurstSettings, counts: Mapping[CloudProvider, int]) -> str:
    pools = burst.pools()
    return ", ".join(
        f"{provider} {count}/{pools[provider].max}" for provider, count in counts.items()
    )


def _band_reason(values: Mapping[str, float | None]) -> str:
    shown = ", ".join(
        f"{name} {'no reading' if value is None else _number(value)}"
        for name, value in values.items()
    )
    missing = [name for name, value in values.items() if value is None]
    if missing:
        return f"inside the hysteresis band ({shown}): a missing reading never scales down"
    return f"inside the hysteresis band ({shown})"


def _compare(name: str, value: float | None, sign: str, limit: float) -> str:
    shown = "no reading" if value is None else _number(value)
    return f"{name} {shown} {sign} {_number(limit)}"


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count != 1 else ''}"


def _number(value: float) -> str:
    """0.912345 -> 0.912, 1500.0 -> 1500: enough digits for a reason, no noise."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"
