"""A rolling k3s upgrade, drain first: `ecoma-infra upgrade`.

The plan reads every node's kubelet version from the cluster and refuses, before anything
changes, a downgrade, a skipped minor version, a node missing from the cluster or not Ready,
and an unhealthy etcd. Then, in order:

- servers one at a time: cordon, `ansible/upgrade.yaml` on that server (new binary, restart),
  wait until its Node is Ready on the new version, wait until etcd is healthy, uncordon;
- agents in batches: cordon and drain each through the Kubernetes API, the same drain as a
  burst scale-down (evictions, so PodDisruptionBudgets hold), the playbook on the batch, wait
  until each is Ready on the new version, uncordon.

The first failure stops the run: the nodes after it keep their old version, and the error says
which nodes are upgraded, which one failed and in what state, and what is untouched. Re-running
the same command resumes: nodes already on the target version are left out of the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ecoma_infra.day2.common import (
    Day2Error,
    RunPlaybook,
    Waits,
    inventory_nodes,
    wait_etcd,
    wait_ready,
)
from ecoma_infra.day2.versions import K3sVersion, refusal
from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Cluster

PLAYBOOK = "upgrade.yaml"


class UpgradeRefusedError(Day2Error):
    """The upgrade cannot start; nothing was changed."""


@dataclass(frozen=True)
class UpgradePlan:
    target: K3sVersion
    current: Mapping[str, K3sVersion]
    servers: tuple[str, ...]
    batches: tuple[tuple[str, ...], ...]
    done: tuple[str, ...] = ()

    @property
    def nodes(self) -> list[str]:
        return [*self.servers, *(name for batch in self.batches for name in batch)]

    def describe(self) -> list[str]:
        lines = [f"upgrade k3s to {self.target}:"]
        for name in self.servers:
            lines.append(
                f"  server {name}: {self.current[name]} -> {self.target} "
                "(cordon, upgrade, Ready, etcd healthy, uncordon)"
            )
        for number, batch in enumerate(self.batches, 1):
            versions = ", ".join(f"{n} {self.current[n]}" for n in batch)
            lines.append(
                f"  agents, batch {number}: {versions} -> {self.target} "
                "(cordon, drain, upgrade, Ready, uncordon)"
            )
        if self.done:
            lines.append(f"  already on {self.target}: {', '.join(self.done)}")
        if not self.nodes:
            lines.append("  nothing to do: every node runs it")
        return lines


def plan_upgrade(
    inventory: Mapping[str, Any], cluster: Cluster, target: K3sVersion, *, batch_size: int = 1
) -> UpgradePlan:
    """What to upgrade in which order; `UpgradeRefusedError` naming every problem at once."""
    if batch_size < 1:
        raise UpgradeRefusedError(f"--batch-size {batch_size}: give 1 or more")
    roles = inventory_nodes(inventory)
    servers = roles["cpl"]
    agents = [name for role in ("ops", "sts", "wkr") for name in roles[role]]
    if not servers:
        raise UpgradeRefusedError("the inventory has no server (ecoma_cpl): nothing to upgrade")
    problems: list[str] = []
    current: dict[str, K3sVersion] = {}
    for name in [*servers, *agents]:
        status = cluster.node(name)
        if status is None:
            problems.append(
                f"{name}: not in the cluster (`ecoma-infra configure --limit {name}` or "
                f"`ecoma-infra replace --node {name}` first)"
            )
            continue
        version = K3sVersion.of_kubelet(status.kubelet_version)
        if version is None:
            problems.append(f"{name}: its kubelet reports {status.kubelet_version!r}, not k3s")
            continue
        current[name] = version
        if (why := refusal(version, target)) is not None:
            problems.append(f"{name}: {why}")
        elif not status.ready and version != target:
            problems.append(f"{name}: not Ready; fix it (or replace it) before upgrading")
    if not cluster.etcd_healthy():
        problems.append("etcd is not healthy (kubectl get --raw '/readyz?verbose'): fix it first")
    if problems:
        raise UpgradeRefusedError(
            f"upgrade to {target} refused, nothing was changed:\n  " + "\n  ".join(problems)
        )
    pending = [name for name in agents if current[name] != target]
    return UpgradePlan(
        target=target,
        current=current,
        servers=tuple(name for name in servers if current[name] != target),
        batches=tuple(
            tuple(pending[i : i + batch_size]) for i in range(0, len(pending), batch_size)
        ),
        done=tuple(name for name in [*servers, *agents] if current[name] == target),
    )


@dataclass
class UpgradeOutcome:
    upgraded: list[str] = field(default_factory=list)


class Upgrader:
    """Carries out an `UpgradePlan` through the cluster and the playbook."""

    def __init__(
        self,
        cluster: Cluster,
        playbook: RunPlaybook,
        inventory: dict[str, Any],
        say: Callable[[str], None],
        waits: Waits,
    ) -> None:
        self.cluster = cluster
        self.playbook = playbook
        self.inventory = inventory
        self.say = say
        self.waits = waits

    def run(self, plan: UpgradePlan) -> UpgradeOutcome:
        outcome = UpgradeOutcome()
        step: tuple[str, ...] = ()
        try:
            for name in plan.servers:
                step = (name,)
                self._server(plan, name)
                outcome.upgraded.append(name)
            for batch in plan.batches:
                step = batch
                self._batch(plan, batch)
                outcome.upgraded.extend(batch)
        except EcomaError as error:
            left = [n for n in plan.nodes if n not in outcome.upgraded and n not in step]
            raise Day2Error(
                f"upgrade to {plan.target} stopped at {', '.join(step)}: {error}\n"
                f"  upgraded: {', '.join(outcome.upgraded) or 'none'}\n"
                f"  not touched, still on their old version: {', '.join(left) or 'none'}\n"
                "  fix the cause and run the same command again: nodes already on "
                f"{plan.target} are skipped"
            ) from None
        return outcome

    def _extravars(self, plan: UpgradePlan) -> dict[str, Any]:
        return {
            "k3s_version": str(plan.target),
            # This side cordons and drains through the Kubernetes API.
            "k3s_upgrade_drain": False,
            "k3s_ready_timeout": int(self.waits.ready),
        }

    def _server(self, plan: UpgradePlan, name: str) -> None:
        target = str(plan.target)
        self.say(f"server {name}: cordon")
        self.cluster.cordon(name)
        self.say(f"server {name}: {PLAYBOOK} (binary {target}, restart)")
        if not self.playbook(PLAYBOOK, self.inventory, {}, name, self._extravars(plan)):
            raise Day2Error(
                f"{PLAYBOOK} failed on {name} (the task above says why); {name} stays cordoned "
                f"(`kubectl uncordon {name}` once it is healthy)"
            )
        wait_ready(self.cluster, self.waits, name, target)
        self.say(f"server {name}: Ready on {target}")
        wait_etcd(self.cluster, self.waits)
        self.say(f"server {name}: etcd healthy")
        self.cluster.uncordon(name)
        self.say(f"server {name}: uncordoned")

    def _batch(self, plan: UpgradePlan, batch: Sequence[str]) -> None:
        target = str(plan.target)
        cordoned: list[str] = []
        for name in batch:
            self.cluster.cordon(name)
            cordoned.append(name)
            self.say(f"agent {name}: cordoned, draining (timeout {self.waits.drain:.0f} s)")
            try:
                self.cluster.drain(name, timeout=self.waits.drain)
            except EcomaError as error:  # a DrainError, or the API failing
                for done in cordoned:
                    self.cluster.uncordon(done)
                raise Day2Error(
                    f"{error}. Nothing of this batch was upgraded; uncordoned "
                    f"{', '.join(cordoned)}. Fix what blocks the drain (kubectl get pdb -A)"
                ) from None
            self.say(f"agent {name}: drained")
        limit = ",".join(batch)
        self.say(f"agents {limit}: {PLAYBOOK} (binary {target}, restart)")
        if not self.playbook(PLAYBOOK, self.inventory, {}, limit, self._extravars(plan)):
            raise Day2Error(
                f"{PLAYBOOK} failed on {limit} (the task above says why); they stay cordoned and "
                f"drained (`kubectl uncordon <node>` once healthy)"
            )
        for name in batch:
            wait_ready(self.cluster, self.waits, name, target)
            self.say(f"agent {name}: Ready on {target}")
        for name in batch:
            self.cluster.uncordon(name)
        self.say(f"agents {limit}: uncordoned")
