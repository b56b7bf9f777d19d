"""An on-demand etcd snapshot: `ecoma-infra snapshot`.

It runs `ansible/snapshot.yaml` on one server, which calls `k3s etcd-snapshot save` there with
the S3 credentials of the unit's environment file: the snapshot lands where the scheduled ones
go (the server's snapshot dir, and the stack's S3 target when it has one). On-demand snapshots
are not pruned by the retention.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ecoma_infra.day2.common import Day2Error, RunPlaybook, inventory_nodes
from ecoma_infra.errors import UsageError

PLAYBOOK = "snapshot.yaml"
# k3s names the file <name>-<node>-<unix time>; keep the name to what is safe in a file name,
# an S3 key and a Kubernetes object name (ETCDSnapshotFile).
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class SnapshotPlan:
    server: str
    name: str

    def describe(self) -> str:
        return f"etcd snapshot '{self.name}' on {self.server}"


def plan_snapshot(inventory: Mapping[str, Any], *, server: str | None, name: str) -> SnapshotPlan:
    servers = inventory_nodes(inventory)["cpl"]
    if not servers:
        raise UsageError("the inventory has no server (ecoma_cpl) to take a snapshot on")
    if server is not None and server not in servers:
        raise UsageError(f"--node {server}: not a server of the inventory ({', '.join(servers)})")
    if not _NAME.match(name):
        raise UsageError(
            f"--name {name!r}: use 1-40 lowercase letters, digits and '-' "
            "(k3s appends the node and a timestamp)"
        )
    return SnapshotPlan(server or servers[0], name)


def take_snapshot(
    plan: SnapshotPlan,
    playbook: RunPlaybook,
    inventory: dict[str, Any],
    secrets: dict[str, str],
) -> None:
    if not playbook(PLAYBOOK, inventory, secrets, plan.server, {"k3s_snapshot_name": plan.name}):
        raise Day2Error(
            f"the {plan.describe()} failed (the task above says why); try another server with "
            "--node, and see `k3s etcd-snapshot ls` and `journalctl -u k3s` there"
        )
