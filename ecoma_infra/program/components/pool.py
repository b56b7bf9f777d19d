"""What every cloud burst pool shares: names, cost tags, cloud-init and the inventory facts.

Each cloud module (`aws`, `gcp`, `oci`) subclasses `BurstPoolComponent` and creates, for every
node of `args.node_names()`, a Tailscale key (`node_auth_key(..., ephemeral=True)`), the instance
with `user_data(...)`, and one extra volume per non-OS tier whose guest path is known
(`ecoma_infra.program.disks`), then appends `node_fact(...)` to `self.node_facts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_tailscale as tailscale

from ecoma_infra.program.cloudinit import (
    NodeBoot,
    render_startup_script,
    render_user_data,
    tailscale_up_args,
)
from ecoma_infra.program.disks import fact
from ecoma_infra.program.inventory import NodeFact
from ecoma_infra.program.tags import cost_tags
from ecoma_infra.stack.model import (
    BurstPool,
    CloudProvider,
    Disk,
    NetworkPlan,
    SshSettings,
    StorageSettings,
    TailscaleSettings,
)
from ecoma_infra.stack.pulumi_config import as_secret

TAILSCALE_UDP_PORT = 41641


@dataclass(frozen=True)
class BurstPoolArgs:
    stack: str
    provider: CloudProvider
    pool: BurstPool
    ssh: SshSettings
    storage: StorageSettings
    tailscale: TailscaleSettings
    network: NetworkPlan

    def node_names(self) -> list[str]:
        return self.pool.node_names(self.provider)

    def pool_tags(self) -> dict[str, str]:
        """Cost tags of the pool's shared resources (network, firewall)."""
        return cost_tags(self.stack, "wkr", burst=True)

    def node_tags(self, node: str) -> dict[str, str]:
        return cost_tags(self.stack, "wkr", burst=True, expires_at=self.pool.expires_at.get(node))

    def address(self, node: str) -> str:
        """Burst nodes have no inbound path but the overlay: Ansible reaches them by MagicDNS."""
        return f"{node}.{self.tailscale.magic_dns_suffix}"

    def boot(self, node: str) -> NodeBoot:
        return NodeBoot(
            hostname=node,
            domain=self.tailscale.magic_dns_suffix,
            user=self.ssh.user,
            authorized_keys=tuple(self.ssh.authorized_keys),
            tailscale_up_args=tailscale_up_args(node, advertise_routes=[], accept_routes=True),
            packages=(),
        )


def user_data(boot: NodeBoot, key: tailscale.TailnetKey) -> pulumi.Output[str]:
    """The node's cloud-config; secret, because it holds the (single-use) auth key."""
    return as_secret(key.key).apply(lambda auth_key: render_user_data(boot, auth_key))


def startup_script(boot: NodeBoot, key: tailscale.TailnetKey) -> pulumi.Output[str]:
    """The same setup for images that run a startup script instead of cloud-init (GCE)."""
    return as_secret(key.key).apply(lambda auth_key: render_startup_script(boot, auth_key))


def node_fact(
    args: BurstPoolArgs,
    node: str,
    devices: list[tuple[Disk, pulumi.Input[str]]],
    *,
    iscsi: Mapping[str, pulumi.Output[dict[str, object]]] | None = None,
) -> pulumi.Output[NodeFact]:
    """The inventory facts of one burst node, once the device paths (and, for disks attached
    over iSCSI, their targets by tier) are known."""
    disks = [disk for disk, _ in devices]
    paths = [pulumi.Output.from_input(path) for _, path in devices]
    tiers = sorted(iscsi or {})
    targets = pulumi.Output.all(*[(iscsi or {})[tier] for tier in tiers])

    def build(resolved: list[Any]) -> NodeFact:
        *found, by_tier = resolved
        target = dict(zip(tiers, by_tier, strict=True))
        return NodeFact(
            name=node,
            role="wkr",
            provider=args.provider,
            address=args.address(node),
            storage=tuple(
                fact(disk, path, args.storage, target.get(disk.tier))
                for disk, path in zip(disks, found, strict=True)
            ),
            burst=True,
            expires_at=args.pool.expires_at.get(node),
        )

    return pulumi.Output.all(*paths, targets).apply(build)


class BurstPoolComponent(pulumi.ComponentResource):
    """What the program reads of every pool: its nodes' inventory facts and instances."""

    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(type_, name, None, opts)
        self.node_facts: list[pulumi.Output[NodeFact]] = []
        self.instances: dict[str, pulumi.CustomResource] = {}
