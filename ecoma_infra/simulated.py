"""Stand-ins for Pulumi, Kubernetes and Tailscale, for tests and `--offline` rehearsals.

They are simulations and say so: `SimulatedStack.up` runs the real program under the offline
preview's mocks (so the inventory, the resource list and the outputs are the program's own) and
diffs the resources against the last run; `SimulatedCluster` holds Node objects and pods and
models PodDisruptionBudgets that block a drain; `SimulatedTailnet` holds devices. A shared
`journal` records every call in order, which is what the tests check the order of steps with.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.adapters import Device, DrainError, NodeStatus, UpSummary
from ecoma_infra.configpaths import apply_paths
from ecoma_infra.errors import EcomaError
from ecoma_infra.inventory import inventory_hosts

Journal = list[tuple[str, str]]


class SimulatedStack:
    """`StackBackend` over a stack file's config; `up` runs the program offline."""

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        journal: Journal,
        *,
        state_file: Path | None = None,
        on_up: Callable[[list[str], list[str]], None] | None = None,
        fail_up: bool = False,
    ) -> None:
        self.name = name
        self.journal = journal
        self.state_file = state_file
        self.on_up = on_up
        self.fail_up = fail_up
        self._config: dict[str, Any] = json.loads(json.dumps(dict(config)))
        self._urns: list[str] = []
        self._outputs: dict[str, Any] = {}
        if state_file is not None and state_file.exists():
            state = json.loads(state_file.read_text())
            self._config, self._urns = state["config"], state["urns"]
            self._outputs = state.get("outputs", {})

    @classmethod
    def from_file(cls, path: Path, journal: Journal, **kwargs: Any) -> SimulatedStack:
        document = yaml.safe_load(path.read_text()) or {}
        name = path.name.split(".")[1]
        return cls(name, document.get("config") or {}, journal, **kwargs)

    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    def set_config(self, values: Mapping[str, Any]) -> None:
        for path, value in values.items():
            self.journal.append(("set_config", f"{path}={value}"))
        self._config = apply_paths(self._config, values)
        self._save()

    def set_secret(self, key: str, value: str) -> None:
        del value  # never kept in plain text, not even by the simulation
        self.journal.append(("set_secret", key))
        self._config[key] = {"secure": "v1:simulated"}
        self._save()

    def remove_config(self, paths: list[str]) -> None:
        for path in paths:
            self.journal.append(("remove_config", path))
        self._config = apply_paths(self._config, {}, paths)
        self._save()

    def up(self, on_output: Callable[[str], None]) -> UpSummary:
        from ecoma_infra.preview import run_offline  # noqa: PLC0415  (loads the SDK)

        if self.fail_up:
            self.journal.append(("up", "failed"))
            raise EcomaError(f"stack {self.name}: pulumi failed: simulated failure of up")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / f"Pulumi.{self.name}.yaml"
            path.write_text(yaml.safe_dump({"config": self._config}))
            result = run_offline(path)
        urns = sorted(record.urn for record in result.records if record.custom)
        created = sorted(set(urns) - set(self._urns))
        deleted = sorted(set(self._urns) - set(urns))
        for urn in created:
            on_output(f"+ create {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        for urn in deleted:
            on_output(f"- delete {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        changes = {"create": len(created), "delete": len(deleted), "same": len(urns) - len(created)}
        self.journal.append(("up", json.dumps({k: v for k, v in changes.items() if k != "same"})))
        self._urns = urns
        self._outputs = result.outputs
        self._save()
        if self.on_up is not None:
            self.on_up(created, deleted)
        return UpSummary(changes, dict(result.outputs))

    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    @property
    def deployed(self) -> bool:
        """Whether `up` ran (or a saved state says it did)."""
        return bool(self._urns)

    def _save(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            state = {"config": self._config, "urns": self._urns, "outputs": self._outputs}
            self.state_file.write_text(json.dumps(state, indent=1))


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

    def join(self, name: str, provider: str, *, ready: bool = True) -> None:
        """What the k3s agent does when it joins: register its Node with its labels."""
        labels = {"topology.ecoma.io/provider": provider, "node-role.kubernetes.io/wkr": "true"}
        self.nodes[name] = NodeStatus(name, ready=ready, labels=labels)
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
        self.nodes[name] = NodeStatus(node.name, node.ready, value, dict(node.labels))

    def drain(self, name: str, *, timeout: float) -> None:
        self.journal.append(("drain", name))
        blocked = [p for p in self.pods if p.node == name and p.blocked_by_pdb]
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


@dataclass
class SimulatedTailnet:
    journal: Journal
    known: dict[str, Device] = field(default_factory=dict)

    def add(self, hostname: str) -> None:
        self.known[hostname] = Device(f"n{len(self.known) + 1:04d}CNTRL", hostname)

    def devices(self) -> list[Device]:
        return list(self.known.values())

    def delete_device(self, device_id: str) -> None:
        self.journal.append(("delete_device", device_id))
        self.known = {k: d for k, d in self.known.items() if d.id != device_id}


@dataclass
class SimulatedWorld:
    """One stack with its cluster and tailnet: burst nodes that `up` creates boot and join the
    tailnet; configuring them joins them to the cluster."""

    stack: SimulatedStack
    cluster: SimulatedCluster
    tailnet: SimulatedTailnet
    journal: Journal
    configured: list[str] = field(default_factory=list)
    configure_fails: bool = False
    joins_ready: bool = True

    @classmethod
    def from_file(cls, path: Path, **kwargs: Any) -> SimulatedWorld:
        journal: Journal = []
        stack = SimulatedStack.from_file(path, journal, **kwargs)
        world = cls(stack, SimulatedCluster(journal), SimulatedTailnet(journal), journal)
        if not stack.deployed:
            # The stack as its file describes it is what is running before the first change.
            stack.up(lambda line: None)
            journal.clear()
        stack.on_up = world._booted
        return world

    def _booted(self, created: list[str], deleted: list[str]) -> None:
        del deleted  # a destroyed ephemeral node's device stays until it times out or is deleted
        for urn in created:
            kind, name = urn.rsplit("::", 2)[-2:]
            if kind.endswith(":Instance") and "$" in kind and (node := _burst_node(name)):
                self.tailnet.add(node)

    def configure(self, inventory: dict[str, Any], secrets: dict[str, str], limit: str) -> bool:
        """Stands in for the playbook: the k3s agents of `limit` join the cluster."""
        del secrets
        self.journal.append(("configure", limit))
        hosts = inventory_hosts(inventory)
        if self.configure_fails:
            return False
        for name in limit.split(","):
            provider = hosts[name]["ecoma_provider"]
            self.cluster.join(name, provider, ready=self.joins_ready)
            self.configured.append(name)
        return True


def _burst_node(resource: str) -> str | None:
    """`burst-aws-wkr-aws-1` (the pool's instance resource) -> `wkr-aws-1`."""
    match = re.fullmatch(r"burst-[a-z]+-(wkr-[a-z]+-[0-9]+)", resource)
    return match.group(1) if match else None
