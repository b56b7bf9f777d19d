"""What the day-2 operations share: their error, the playbook seam, the waits on the cluster,
and the nodes of an inventory in the order they are handled."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Cluster, NodeStatus
from ecoma_infra.program.inventory import role_group
from ecoma_infra.stack.model import ROLES


class Day2Error(EcomaError):
    """An upgrade, replace or snapshot stopped; the message says what state things are in."""


class RunPlaybook(Protocol):
    def __call__(
        self,
        playbook: str,
        inventory: dict[str, Any],
        secrets: dict[str, str],
        limit: str,
        extravars: dict[str, Any],
    ) -> bool:
        """Run `ansible/<playbook>` on the hosts of `limit`; True when every host succeeded."""


@dataclass
class Waits:
    """How long to wait for what, and the clock to wait with (a seam for tests)."""

    drain: float = 600.0
    ready: float = 900.0
    poll: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    slept: list[float] = field(default_factory=list)

    def until(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll `check` every `poll` seconds until it is true; `Day2Error` after `timeout`."""
        deadline = self.clock() + timeout
        while not check():
            if self.clock() >= deadline:
                raise Day2Error(f"{what}: not so after {timeout:.0f} s")
            self.sleep(self.poll)
            self.slept.append(self.poll)


def ready_on(status: NodeStatus | None, version: str | None = None) -> bool:
    """The Node exists, is Ready and (when given) runs `version`."""
    if status is None or status.deleting or not status.ready:
        return False
    return version is None or status.kubelet_version == version


def wait_ready(cluster: Cluster, waits: Waits, name: str, version: str | None = None) -> None:
    wanted = f"Ready on {version}" if version else "Ready"
    try:
        waits.until(f"{name} {wanted}", lambda: ready_on(cluster.node(name), version), waits.ready)
    except Day2Error:
        status = cluster.node(name)
        seen = (
            "not in the cluster"
            if status is None
            else f"Ready={status.ready}, kubelet {status.kubelet_version or '?'}"
        )
        raise Day2Error(
            f"{name} is not {wanted} after {waits.ready:.0f} s ({seen}): look at "
            f"`kubectl describe node {name}` and `journalctl -u k3s -u k3s-agent` on the node"
        ) from None


def wait_etcd(cluster: Cluster, waits: Waits) -> None:
    try:
        waits.until("etcd healthy", cluster.etcd_healthy, waits.ready)
    except Day2Error:
        raise Day2Error(
            f"etcd is not healthy after {waits.ready:.0f} s (the API server's /readyz/etcd "
            "check fails): look at `kubectl get --raw '/readyz?verbose'` and "
            "`journalctl -u k3s` on the servers"
        ) from None


def inventory_nodes(inventory: Mapping[str, Any]) -> dict[str, list[str]]:
    """The inventory's nodes by role group (`cpl`, `ops`, `sts`, `wkr`), each in inventory
    order."""
    children = inventory.get("all", {}).get("children", {})
    return {role: list((children.get(role_group(role)) or {}).get("hosts") or {}) for role in ROLES}
