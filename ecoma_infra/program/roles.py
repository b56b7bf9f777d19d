"""Role semantics as data: the labels and taints each role's nodes carry in the cluster.

The kubelet may set its own labels only outside `kubernetes.io`/`k8s.io` (NodeRestriction), so
labels are split into the ones a node registers itself with and the ones a server applies.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecoma_infra.stack.model import Role

PROVIDER_LABEL = "topology.ecoma.io/provider"
ROLE_LABEL = "node.ecoma.io/role"
BURST_LABEL = "node.ecoma.io/burst"


@dataclass(frozen=True)
class RoleSpec:
    role: Role
    k3s_server: bool
    taints: tuple[str, ...]
    server_labels: dict[str, str]
    description: str


ROLE_SPECS: dict[Role, RoleSpec] = {
    "cpl": RoleSpec(
        "cpl",
        k3s_server=True,
        # No user workloads on the control plane: only pods tolerating this (CNI, kube-vip).
        taints=("node-role.kubernetes.io/control-plane=true:NoSchedule",),
        server_labels={"node-role.kubernetes.io/control-plane": "true"},
        description="k3s servers (API, scheduler, etcd), highly available, no user workloads",
    ),
    "ops": RoleSpec(
        "ops",
        k3s_server=False,
        taints=("node.ecoma.io/dedicated=ops:NoSchedule",),
        server_labels={"node-role.kubernetes.io/ops": "true"},
        description="ArgoCD, Prometheus/Grafana, logging",
    ),
    "sts": RoleSpec(
        "sts",
        k3s_server=False,
        taints=("node.ecoma.io/dedicated=sts:NoSchedule",),
        server_labels={"node-role.kubernetes.io/sts": "true"},
        description="stateful services (MongoDB, RabbitMQ, SeaweedFS), on-prem, vertical scaling",
    ),
    "wkr": RoleSpec(
        "wkr",
        k3s_server=False,
        taints=(),
        server_labels={"node-role.kubernetes.io/worker": "true"},
        description="stateless workloads, horizontally scaled, cloud bursting",
    ),
}


def node_labels(role: Role, provider: str, *, burst: bool) -> dict[str, str]:
    """Labels the kubelet registers the node with (all outside kubernetes.io)."""
    labels = {PROVIDER_LABEL: provider, ROLE_LABEL: role}
    if burst:
        labels[BURST_LABEL] = "true"
    return labels
