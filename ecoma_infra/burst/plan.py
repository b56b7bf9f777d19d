"""What a burst, a scale-down or a reap will change: pure functions of the stack config and now.

Nothing here talks to Pulumi, Kubernetes or Tailscale; `burst.run` carries a plan out. A plan is
refused here, before anything changes, when it would go above the pool's max or the stack's
budget.

A pool's running nodes carry leases in the stack config (`launched_at` and `expires_at` per
node name), which also pin the names: removing `wkr-aws-1` of two keeps `wkr-aws-2` running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import (
    MAX_BURST_TTL,
    NAMESPACE,
    BurstPool,
    CloudProvider,
    StackConfig,
    burst_node_name,
    duration_seconds,
)


class PlanRefusedError(EcomaError):
    """The change breaks a limit of the stack file; nothing was changed."""


@dataclass(frozen=True)
class StackRef:
    """A loaded stack: its config, the file it came from (for messages) and its name.

    `carried` and `dropped` are the config paths that bring the file's burst pools to their
    running state (from the stack's `burst` output); `config` already includes them, and every
    plan writes them along with its own change."""

    config: StackConfig
    source: str
    name: str
    carried: dict[str, Any] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NodeLease:
    name: str
    launched_at: datetime | None
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class ScalePlan:
    """One pool's change. `config` and `removed_config` are Pulumi config paths for
    `StackBackend.set_config` / `remove_config`."""

    stack: str
    provider: CloudProvider
    running: list[NodeLease]
    add: list[NodeLease]
    remove: list[NodeLease]
    hourly_before: float
    hourly_after: float
    budget: float
    max: int
    config: dict[str, Any] = field(default_factory=dict)
    removed_config: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def count_before(self) -> int:
        return len(self.running)

    @property
    def count_after(self) -> int:
        return len(self.running) + len(self.add) - len(self.remove)

    @property
    def changes(self) -> bool:
        return bool(self.add or self.remove)

    def describe(self) -> list[str]:
        """The plan as the commands print it."""
        lines = [
            f"stack {self.stack}, pool {self.provider}: {self.count_before} -> "
            f"{self.count_after} nodes (max {self.max})"
        ]
        lines += [
            f"  + {lease.name}  (lease until {_stamp(lease.expires_at)})" for lease in self.add
        ]
        lines += [
            f"  - {lease.name}  (launched {_stamp(lease.launched_at)}, "
            f"lease until {_stamp(lease.expires_at)})"
            for lease in self.remove
        ]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(
            f"  estimated cost of all pools: {self.hourly_before:.4f} -> "
            f"{self.hourly_after:.4f} USD/h (budget {self.budget:.2f})"
        )
        return lines


def _stamp(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "unknown"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pool_path(provider: str, field_name: str, node: str | None = None) -> str:
    path = f"{NAMESPACE}:burst.{provider}.{field_name}"
    return f'{path}["{node}"]' if node else path


def leases(provider: str, pool: BurstPool) -> list[NodeLease]:
    """The pool's running nodes in name order."""
    return [
        NodeLease(name, pool.launched_at.get(name), pool.expires_at.get(name))
        for name in pool.node_names(provider)
    ]


def removal_order(running: list[NodeLease], now: datetime) -> list[NodeLease]:
    """Which nodes go first: those past their lease (the oldest lease first), then the newest.

    A node with no launch time (a count set by hand) counts as the oldest, so it goes last."""
    expired = sorted(
        (lease for lease in running if lease.expired(now)),
        key=lambda lease: (lease.expires_at, lease.name),
    )
    rest = [lease for lease in running if not lease.expired(now)]
    oldest = datetime.min.replace(tzinfo=now.tzinfo)
    rest.sort(
        key=lambda lease: (lease.launched_at or oldest, _index(lease.name)),
        reverse=True,
    )
    return expired + rest


def _index(name: str) -> int:
    return int(name.rsplit("-", 1)[-1])


def expired(config: StackConfig, now: datetime) -> dict[CloudProvider, list[NodeLease]]:
    """Running burst nodes past their lease, per pool (pools with none left out)."""
    found: dict[CloudProvider, list[NodeLease]] = {}
    for provider, pool in config.burst.pools().items():
        gone = [lease for lease in removal_order(leases(provider, pool), now) if lease.expired(now)]
        if gone:
            found[provider] = gone
    return found


def hourly_cost(config: StackConfig, counts: dict[CloudProvider, int] | None = None) -> float:
    """Estimated cost of all pools per hour, with some pools at other counts."""
    counts = counts or {}
    return round(
        sum(
            pool.hourly_cost(counts.get(provider, pool.count))
            for provider, pool in config.burst.pools().items()
        ),
        4,
    )


def _pool(config: StackConfig, source: str, provider: CloudProvider) -> BurstPool:
    pool = config.burst.pools().get(provider)
    if pool is None:
        raise PlanRefusedError(
            f"{source}: {NAMESPACE}:burst.{provider}: the stack has no {provider} pool: "
            f"add burst.{provider} to the stack file or pick one of "
            f"{', '.join(config.burst.pools()) or '(none)'}"
        )
    return pool


def plan_count(
    ref: StackRef, provider: CloudProvider, count: int, now: datetime, *, ttl: str | None = None
) -> ScalePlan:
    """Scale one pool to `count` nodes: new nodes take the lowest free names; a smaller count
    removes nodes in `removal_order`."""
    config, source = ref.config, ref.source
    pool = _pool(config, source, provider)
    running = leases(provider, pool)
    if count < 0:
        raise PlanRefusedError(f"--count {count}: a pool cannot have fewer than 0 nodes")
    if count > pool.max:
        raise PlanRefusedError(
            f"{source}: {NAMESPACE}:burst.{provider}.max: --count {count} is above the pool's "
            f"max of {pool.max}: ask for at most {pool.max}, or raise max in the stack file"
        )
    if count <= len(running):
        remove = removal_order(running, now)[: len(running) - count]
        return _plan(ref, provider, running, [], remove, now=now, ttl=ttl)
    ttl_seconds = _ttl_seconds(ttl, pool)
    taken = {lease.name for lease in running}
    add: list[NodeLease] = []
    index = 1
    while len(running) + len(add) < count:
        name = burst_node_name(provider, index)
        if name not in taken:
            add.append(NodeLease(name, now, now + timedelta(seconds=ttl_seconds)))
        index += 1
    return _plan(ref, provider, running, add, [], now=now, ttl=ttl)


def plan_removal(
    ref: StackRef, provider: CloudProvider, names: list[str], now: datetime
) -> ScalePlan:
    """Remove exactly these nodes of one pool (the reaper)."""
    source = ref.source
    pool = _pool(ref.config, source, provider)
    running = leases(provider, pool)
    by_name = {lease.name: lease for lease in running}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise PlanRefusedError(
            f"{source}: {NAMESPACE}:burst.{provider}: {', '.join(unknown)} not running in this "
            f"pool (running: {', '.join(by_name) or 'none'})"
        )
    order = [lease for lease in removal_order(running, now) if lease.name in names]
    return _plan(ref, provider, running, [], order, now=now, ttl=None)


def _ttl_seconds(ttl: str | None, pool: BurstPool) -> int:
    if ttl is None:
        return pool.ttl_seconds
    try:
        seconds = duration_seconds(ttl)
    except ValueError:
        raise PlanRefusedError(f"--ttl {ttl}: not a duration: use e.g. 30m, 4h, 1d") from None
    if seconds > duration_seconds(MAX_BURST_TTL):  # also keeps the lease's end in datetime's range
        raise PlanRefusedError(f"--ttl {ttl}: a burst node's lease is at most {MAX_BURST_TTL}")
    return seconds


def _plan(
    ref: StackRef,
    provider: CloudProvider,
    running: list[NodeLease],
    add: list[NodeLease],
    remove: list[NodeLease],
    *,
    now: datetime,
    ttl: str | None,
) -> ScalePlan:
    config, source = ref.config, ref.source
    pool = config.burst.pools()[provider]
    count_after = len(running) + len(add) - len(remove)
    before = hourly_cost(config)
    after = hourly_cost(config, {provider: count_after})
    budget = config.burst.budget_usd_per_hour
    if add and after > budget:
        raise PlanRefusedError(
            f"{source}: {NAMESPACE}:burst.budget_usd_per_hour: {count_after} {provider} nodes "
            f"would bring all pools to {after:.4f} USD/h, above the budget of {budget:.2f} USD/h: "
            "ask for fewer nodes, scale another pool down, or raise the budget in the stack file"
        )
    plan = ScalePlan(
        stack=ref.name,
        provider=provider,
        running=running,
        add=add,
        remove=remove,
        hourly_before=before,
        hourly_after=after,
        budget=budget,
        max=pool.max,
    )
    if not plan.changes:
        return plan
    plan.config.update(ref.carried)
    plan.config[_pool_path(provider, "count")] = count_after
    plan.config[f"{NAMESPACE}:burst.last_scaled_at"] = _iso(now)
    for lease in add:
        launched, expires = lease.launched_at or now, lease.expires_at or now
        plan.config[_pool_path(provider, "launched_at", lease.name)] = _iso(launched)
        plan.config[_pool_path(provider, "expires_at", lease.name)] = _iso(expires)
    gone = {lease.name for lease in remove}
    for lease in running:
        if lease.name in gone:
            if lease.launched_at:
                plan.removed_config.append(_pool_path(provider, "launched_at", lease.name))
            if lease.expires_at:
                plan.removed_config.append(_pool_path(provider, "expires_at", lease.name))
        elif lease.expires_at is None and lease.launched_at is None:
            # A node counted by hand has no lease; once another node goes, only a lease keeps
            # its name (and so its machine) in place.
            expires = now + timedelta(seconds=_ttl_seconds(ttl, pool))
            plan.config[_pool_path(provider, "expires_at", lease.name)] = _iso(expires)
            plan.notes.append(f"{lease.name} had no lease: leased until {_iso(expires)}")
    plan.removed_config[:0] = [path for path in ref.dropped if path not in plan.config]
    return plan


def carried_burst_state(
    config: dict[str, Any], outputs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """Config paths that put the running pools' sizes and leases (the stack's `burst` output)
    into `config`, and paths of leases of nodes that no longer run."""
    live = (outputs.get("burst") or {}).get("pools") or {}
    burst = config.get(f"{NAMESPACE}:burst") or {}
    values: dict[str, Any] = {}
    removals: list[str] = []
    for provider, pool in sorted(live.items()):
        if provider not in burst:
            continue
        base = f"{NAMESPACE}:burst.{provider}"
        if burst[provider].get("count", 0) != pool["count"]:
            values[f"{base}.count"] = pool["count"]
        nodes = pool.get("nodes") or {}
        for key in ("launched_at", "expires_at"):
            have = burst[provider].get(key) or {}
            for name, lease in sorted(nodes.items()):
                if lease.get(key) and have.get(name) != lease[key]:
                    values[f'{base}.{key}["{name}"]'] = lease[key]
            removals += [f'{base}.{key}["{name}"]' for name in sorted(set(have) - set(nodes))]
    last = (outputs.get("burst") or {}).get("last_scaled_at")
    if last and burst.get("last_scaled_at") != last:
        values[f"{NAMESPACE}:burst.last_scaled_at"] = last
    return values, removals
