"""Carry out a burst plan: grow a pool, or drain and then shrink it. Used by `burst`, `reap`,
`autoscale` and `drill`.

Growing: set the pool's size and the new leases in the stack config (structured, by path),
`up`, configure only the new nodes (`--limit`), wait until each is Ready and labelled.

Shrinking, drain first: cordon and drain every node that goes (evictions honour
PodDisruptionBudgets), delete its Node object, and only then set the smaller size and `up`.
A drain that fails or times out uncordons every node this run cordoned, destroys nothing and
fails the run. Afterwards the removed nodes' Tailscale devices are deleted if still there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from ecoma_infra.burst.plan import ScalePlan, StackRef, carried_burst_state
from ecoma_infra.configure.inputs import (
    inventory_from_document,
    secrets_from_environment,
    secrets_from_outputs,
)
from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.telemetry import Telemetry
from ecoma_infra.platforms.seams import (
    Cluster,
    DrainProgress,
    NodeStatus,
    StackBackend,
    Tailnet,
)
from ecoma_infra.stack.config_paths import apply_paths
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import split_namespace

PROVIDER_LABEL = "topology.ecoma.io/provider"

# configure(inventory, secrets, limit) -> every host succeeded
Configure = Callable[[dict[str, Any], dict[str, str], str], bool]


class Wait(Protocol):
    """One long wait as the caller shows it (the CLI: a heartbeat line)."""

    def beat(self, elapsed: float, detail: str = "") -> None:
        """Still waiting after `elapsed` seconds; `detail` says on what."""

    def say(self, line: str) -> None:
        """A line that stays, printed during the wait."""


#: waits(activity) -> a context manager around one wait, e.g. waits("draining wkr-aws-1")
Waits = Callable[[str], AbstractContextManager[Wait]]


class BurstError(EcomaError):
    """A burst or scale-down stopped; the message says what state things are in."""


@dataclass(frozen=True)
class Timeouts:
    drain: float = 600.0
    ready: float = 900.0
    poll: float = 10.0


@dataclass
class Seams:
    """The outside systems of a run (see `platforms.seams`)."""

    stack: StackBackend
    cluster: Callable[[], Cluster]
    tailnet: Callable[[], Tailnet | None]
    configure: Configure


@dataclass
class Outcome:
    plan: ScalePlan
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    ready: dict[str, float] = field(default_factory=dict)
    changes: Mapping[str, int] = field(default_factory=dict)


def load_ref(stack: StackBackend) -> StackRef:
    """The stack's config, its burst pools as they run now, checked like `validate` does.

    The running sizes and leases come from the stack's `burst` output: a CI runner's checkout
    of the stack file only has the committed ones."""
    config = stack.config()
    carried, dropped = carried_burst_state(config, stack.outputs())
    values, _ = split_namespace(apply_paths(config, carried, dropped))
    source = f"Pulumi.{stack.name}.yaml"
    return StackRef(parse_stack_config(values, source), source, stack.name, carried, dropped)


class Runner:
    """Applies plans to one stack; every step is written to `out` and to the telemetry."""

    def __init__(
        self,
        seams: Seams,
        telemetry: Telemetry,
        out: TextIO,
        *,
        timeouts: Timeouts = Timeouts(),
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        waits: Waits | None = None,
    ) -> None:
        self.seams = seams
        self.waits: Waits = waits or self._plain_waits
        self.telemetry = telemetry
        self.out = out
        self.timeouts = timeouts
        self.now = now
        self.monotonic = monotonic
        self.sleep = sleep

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    @contextmanager
    def _plain_waits(self, activity: str) -> Iterator[Wait]:
        """Without a heartbeat: the lines of a wait, no beats."""
        del activity
        yield _PlainWait(self.say)

    def apply(self, plan: ScalePlan) -> Outcome:
        if plan.add and plan.remove:  # pragma: no cover  (plans never mix; a guard for callers)
            raise BurstError("a plan either adds or removes nodes")
        if plan.remove:
            return self.shrink(plan)
        if plan.add:
            return self.grow(plan)
        self.say(f"pool {plan.provider} already has {plan.count_after} nodes: nothing to do")
        return Outcome(plan)

    # --- growing -----------------------------------------------------------------------------

    def grow(self, plan: ScalePlan) -> Outcome:
        names = [lease.name for lease in plan.add]
        outcome = Outcome(plan, added=names)
        with self.telemetry.phase("up", nodes=names):
            outputs = self._update(plan, outcome)
        inventory = inventory_from_document(outputs, f"stack {plan.stack}")
        self._check_inventory(plan, inventory)
        secrets = {**secrets_from_outputs(outputs), **secrets_from_environment()}
        limit = ",".join(names)
        with self.telemetry.phase("configure", limit=limit):
            self.say(f"configuring only the new nodes: --limit {limit}")
            if not self.seams.configure(inventory, secrets, limit):
                raise BurstError(
                    f"configuring {limit} failed (see the summary above); the nodes exist: "
                    f"fix the cause and run `ecoma-infra configure --stack {plan.stack} "
                    f"--limit {limit}`, or scale the pool back down"
                )
        with self.telemetry.phase("ready", nodes=names):
            outcome.ready = self._wait_ready(plan)
        return outcome

    def _check_inventory(self, plan: ScalePlan, inventory: dict[str, Any]) -> None:
        group = inventory.get("all", {}).get("children", {}).get(f"ecoma_{plan.provider}", {})
        hosts = sorted(group.get("hosts", {}))
        expected = sorted(
            {lease.name for lease in plan.running} | {lease.name for lease in plan.add}
        )
        if hosts != expected:
            raise BurstError(
                f"after up the inventory's ecoma_{plan.provider} group holds {hosts}, "
                f"expected {expected}: run `pulumi refresh` and look at the stack"
            )

    def _wait_ready(self, plan: ScalePlan) -> dict[str, float]:
        cluster = self.seams.cluster()
        start = self.monotonic()
        deadline = start + self.timeouts.ready
        waiting = {lease.name: lease for lease in plan.add}
        ready: dict[str, float] = {}
        names = ", ".join(sorted(waiting))
        with self.waits(f"waiting for {names} to be Ready") as wait:
            while True:
                states: dict[str, str] = {}
                for name in sorted(waiting):
                    status = cluster.node(name)
                    label = status.labels.get(PROVIDER_LABEL) if status is not None else None
                    if status is not None and status.ready and label == plan.provider:
                        ready[name] = round(self.monotonic() - start, 1)
                        wait.say(f"  {name}: Ready after {ready[name]:.1f} s")
                        self.telemetry.event("node_ready", node=name, seconds=ready[name])
                    else:
                        states[name] = _not_ready(status, plan.provider)
                for name in ready:
                    lease = waiting.pop(name, None)
                    if lease is not None:
                        launched = lease.launched_at or self.now()
                        self.telemetry.node_ready(
                            plan.provider, name, ready=True, launched=launched
                        )
                if not waiting or self.monotonic() >= deadline:
                    break
                wait.beat(
                    self.monotonic() - start,
                    "; ".join(f"{name}: {state}" for name, state in sorted(states.items())),
                )
                self.sleep(self.timeouts.poll)
        if waiting:
            for name, lease in waiting.items():
                launched = lease.launched_at or self.now()
                self.telemetry.node_ready(plan.provider, name, ready=False, launched=launched)
            late = ", ".join(sorted(waiting))
            raise BurstError(
                f"{late} not Ready with label {PROVIDER_LABEL}={plan.provider} after "
                f"{self.timeouts.ready:.0f} s: look at `kubectl describe node`, the node's "
                "cloud-init log and `tailscale status`; the nodes stay until scaled down"
            )
        return ready

    # --- shrinking ---------------------------------------------------------------------------

    def shrink(self, plan: ScalePlan) -> Outcome:
        names = [lease.name for lease in plan.remove]
        outcome = Outcome(plan, removed=names)
        cluster = self.seams.cluster()
        with self.telemetry.phase("drain", nodes=names):
            drained = self._drain_all(cluster, plan, names)
            for name in drained:
                cluster.delete_node(name)
                self.say(f"  {name}: Node object deleted")
        with self.telemetry.phase("destroy", nodes=names):
            self._update(plan, outcome)
        with self.telemetry.phase("tailnet", nodes=names):
            self._forget_devices(names)
        for name in names:
            self.telemetry.teardown_finished(plan.provider, name)
        return outcome

    def _drain_all(self, cluster: Cluster, plan: ScalePlan, names: list[str]) -> list[str]:
        cordoned: list[str] = []
        for name in names:
            self.telemetry.teardown_started(plan.provider, name)
            if cluster.node(name) is None:
                self.say(f"  {name}: not in the cluster, nothing to drain")
                continue
            cluster.cordon(name)
            cordoned.append(name)
            self.say(f"  {name}: cordoned, draining (timeout {self.timeouts.drain:.0f} s)")
            try:
                with self.waits(f"draining {name}") as wait:
                    cluster.drain(
                        name,
                        timeout=self.timeouts.drain,
                        on_progress=_drain_beat(wait),
                    )
            except EcomaError as error:  # a DrainError, or the API failing
                for done in cordoned:
                    cluster.uncordon(done)
                for gone in names:
                    self.telemetry.teardown_finished(plan.provider, gone)
                raise BurstError(
                    f"{error}. Nothing was destroyed; uncordoned {', '.join(cordoned)}; "
                    f"pool {plan.provider} stays at {plan.count_before} nodes. Fix what blocks "
                    "the drain (kubectl get pdb -A) and run the command again"
                ) from None
            self.say(f"  {name}: drained")
        return cordoned

    def _forget_devices(self, names: list[str]) -> None:
        tailnet = self.seams.tailnet()
        if tailnet is None:
            self.say(
                "  tailnet: no Tailscale API credentials: not checked (burst nodes are "
                "ephemeral: Tailscale removes them once offline)"
            )
            self.telemetry.event("tailnet_unchecked", level="warning", nodes=names)
            return
        gone = set(names)
        for device in tailnet.devices():
            if device.hostname in gone:
                tailnet.delete_device(device.id)
                self.say(f"  {device.hostname}: Tailscale device {device.id} deleted")
        left = sorted(d.hostname for d in tailnet.devices() if d.hostname in gone)
        if left:
            raise BurstError(f"Tailscale devices still there after deleting: {', '.join(left)}")
        self.say(f"  tailnet: no device left for {', '.join(names)}")

    # --- the stack ---------------------------------------------------------------------------

    def _update(self, plan: ScalePlan, outcome: Outcome) -> dict[str, Any]:
        stack = self.seams.stack
        stack.set_config(plan.config)
        stack.remove_config(plan.removed_config)
        self.say(f"pulumi up --stack {plan.stack} (pool {plan.provider} -> {plan.count_after})")
        summary = stack.up(lambda line: self.say(f"  | {line.rstrip()}"))
        outcome.changes = dict(summary.changes)
        self.say(
            "  up: "
            + ", ".join(f"{op} {n}" for op, n in sorted(summary.changes.items()) if op != "same")
        )
        return dict(summary.outputs)


class _PlainWait:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def beat(self, elapsed: float, detail: str = "") -> None:
        del elapsed, detail


def _not_ready(status: NodeStatus | None, provider: str) -> str:
    """Why a new node does not count as Ready yet."""
    if status is None:
        return "no Node object yet"
    if not status.ready:
        return "NotReady"
    return f"no label {PROVIDER_LABEL}={provider}"


def _drain_beat(wait: Wait) -> Callable[[DrainProgress], None]:
    def beat(progress: DrainProgress) -> None:
        wait.beat(progress.elapsed, _drain_detail(progress))

    return beat


def _drain_detail(progress: DrainProgress) -> str:
    """The pods a drain still waits for, and why evictions are refused."""
    shown = progress.waiting[:3]
    more = f" and {len(progress.waiting) - 3} more" if len(progress.waiting) > 3 else ""
    parts = [f"evicting {', '.join(shown)}{more}"]
    blocked = sorted(set(progress.blocked) & set(progress.waiting))
    if blocked:
        why = (
            "a PodDisruptionBudget"
            if any("disruption budget" in progress.blocked[pod].lower() for pod in blocked)
            else "the API server (HTTP 429)"
        )
        parts.append(f"{len(blocked)} refused by {why} ({blocked[0]})")
    return "; ".join(parts)
