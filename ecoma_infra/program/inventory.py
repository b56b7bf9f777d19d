"""The Ansible inventory: a pure function from node facts to Ansible's inventory structure.

It is the `ansible_inventory` stack output, what `ecoma-infra inventory` prints and what the lab
converges. No secret ever enters it: ansible-runner writes it to disk as plain JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ecoma_infra.program.disks import StorageFact, fact, ordered, proxmox_device
from ecoma_infra.program.roles import ROLE_SPECS, node_labels
from ecoma_infra.stack.model import (
    PROVIDERS,
    ROLES,
    Node,
    Provider,
    Role,
    StackConfig,
    StorageSettings,
)

GROUP_PREFIX = "ecoma_"
BURST_GROUP = "ecoma_burst"


def role_group(role: str) -> str:
    return f"{GROUP_PREFIX}{role}"


def provider_group(provider: str) -> str:
    return f"{GROUP_PREFIX}{provider}"


@dataclass(frozen=True)
class NodeFact:
    name: str
    role: Role
    provider: Provider
    address: str
    storage: tuple[StorageFact, ...]
    burst: bool = False
    expires_at: datetime | None = None
    tailscale_router: bool = False


def onprem_node_fact(
    node: Node, storage: StorageSettings, routers: Sequence[str], boot_interface: str
) -> NodeFact:
    """The facts of an on-prem node: its SDN address and its disks at their by-id paths."""
    return NodeFact(
        name=node.name,
        role=node.role,
        provider="proxmox",
        address=str(node.ip),
        storage=tuple(
            fact(d, proxmox_device(d, boot_interface), storage) for d in ordered(node.disks)
        ),
        tailscale_router=node.name in routers,
    )


def cluster_vars(stack: str, config: StackConfig) -> dict[str, Any]:
    plan = config.network
    servers = config.nodes_with_role("cpl")
    return {
        "stack": stack,
        "sdn_subnet": str(plan.sdn_subnet),
        "sdn_gateway": str(plan.sdn_gateway),
        "kube_vip": str(plan.kube_vip),
        "pod_cidr": str(plan.pod_cidr),
        "service_cidr": str(plan.service_cidr),
        "cluster_dns": str(plan.coredns_ip),
        "node_local_dns": str(plan.node_local_dns_ip),
        "node_local_dns_enabled": config.k3s.node_local_dns,
        "tailscale_cidr": str(plan.tailscale_cidr),
        "k3s_version": config.k3s.version,
        "flannel_backend": config.k3s.flannel_backend,
        "k3s_server_args": list(config.k3s.server_args),
        "k3s_agent_args": list(config.k3s.agent_args),
        "first_server": servers[0].name if servers else None,
        # The S3 target's address and bucket only: its credentials are secrets
        # (etcd_s3_access_key_id, etcd_s3_secret_access_key) that configure passes in the
        # environment.
        "etcd_snapshots": config.k3s.etcd_snapshots.model_dump(mode="json"),
    }


def host_vars(node: NodeFact, user: str) -> dict[str, Any]:
    spec = ROLE_SPECS[node.role]
    return {
        "ansible_host": node.address,
        "ansible_user": user,
        "ecoma_node_name": node.name,
        "ecoma_role": node.role,
        "ecoma_provider": node.provider,
        "ecoma_burst": node.burst,
        "ecoma_expires_at": (
            node.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if node.expires_at
            else None
        ),
        "ecoma_node_labels": node_labels(node.role, node.provider, burst=node.burst),
        "ecoma_server_labels": dict(spec.server_labels),
        "ecoma_node_taints": list(spec.taints),
        "ecoma_tailscale_router": node.tailscale_router,
        "ecoma_tailscale_accept_routes": node.provider != "proxmox",
        "ecoma_storage": [disk.as_inventory() for disk in node.storage],
    }


def build_inventory(stack: str, config: StackConfig, nodes: Sequence[NodeFact]) -> dict[str, Any]:
    ordered = sorted(nodes, key=lambda n: (ROLES.index(n.role), n.name))
    children: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        children[role_group(role)] = {
            "hosts": {n.name: host_vars(n, config.ssh.user) for n in ordered if n.role == role}
        }
    for provider in PROVIDERS:
        children[provider_group(provider)] = {
            "hosts": {n.name: {} for n in ordered if n.provider == provider}
        }
    children[BURST_GROUP] = {"hosts": {n.name: {} for n in ordered if n.burst}}
    return {"all": {"vars": {"ecoma_cluster": cluster_vars(stack, config)}, "children": children}}


def inventory_hosts(inventory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every host with its vars, across the role groups."""
    hosts: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        hosts.update(inventory["all"]["children"][role_group(role)]["hosts"])
    return hosts
