"""Stand-in for the Kubernetes API (`kubernetes.KubernetesCluster`): Node objects and pods in
memory, PodDisruptionBudgets that block a drain. A simulation, and it says so."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ecoma_infra.platforms.seams import DrainError, DrainProgress, Journal, NodeStatus


@dataclass
class SimulatedPod:
    namespace: str
    name: str
    node: str
    blocked_by_pdb: bool = False  # a PodDisruptionBudget refuses its eviction
    daemonset: bool = False


@dataclass
class SimulatedCluster:
    """`Cluster` with Node objects and pods in memory."""

    journal: Journal
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    pods: list[SimulatedPod] = field(default_factory=list)
    etcd_ok: bool = True
    version: str = "v1.32.5+k3s1"  # what a joining kubelet reports

    def join(self, name: str, provider: str, *, ready: bool = True) -> None:
        """What the k3s agent does when it joins: register its Node with its labels."""
        labels = {"topology.ecoma.io/provider": provider, "node-role.kubernetes.io/wkr": "true"}
        self.nodes[name] = NodeStatus(
            name, ready=ready, labels=labels, kubelet_version=self.version
        )
        self.pods.append(
            SimulatedPod("kube-system", f"node-local-dns-{name}", name, daemonset=True)
        )

    def node(self, name: str) -> NodeStatus | None:
        return self.nodes.get(name)

    def cordon(self, name: str) -> None:
        self.journal.append(("cordon", name))
        self._set_unschedulable(name, value=True)

    def uncordon(self, name: str) -> None:
        self.journal.append(("uncordon", name))
        self._set_unschedulable(name, value=False)

    def _set_unschedulable(self, name: str, *, value: bool) -> None:
        node = self.nodes[name]
        self.nodes[name] = replace(node, unschedulable=value)

    def drain(
        self,
        name: str,
        *,
        timeout: float,
        on_progress: Callable[[DrainProgress], None] | None = None,
    ) -> None:
        self.journal.append(("drain", name))
        blocked = [p for p in self.pods if p.node == name and p.blocked_by_pdb]
        if on_progress is not None:
            waiting = [
                f"{p.namespace}/{p.name}" for p in self.pods if p.node == name and not p.daemonset
            ]
            refusal = "Cannot evict pod as it would violate the pod's disruption budget"
            blocked_by = {f"{p.namespace}/{p.name}": refusal for p in blocked}
            on_progress(DrainProgress(name, 0.0, waiting, blocked_by))
        if blocked:
            raise DrainError(
                name,
                f"a PodDisruptionBudget kept refusing evictions for {timeout:.0f} s "
                "(simulated: Cannot evict pod as it would violate the pod's disruption budget)",
                [f"{p.namespace}/{p.name}" for p in blocked],
            )
        self.pods = [p for p in self.pods if p.node != name or p.daemonset]

    def delete_node(self, name: str) -> None:
        self.journal.append(("delete_node", name))
        self.nodes.pop(name, None)
        self.pods = [p for p in self.pods if p.node != name]

    def etcd_healthy(self) -> bool:
        self.journal.append(("etcd_healthy", str(self.etcd_ok)))
        return self.etcd_ok
