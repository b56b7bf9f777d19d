"""The offline world for tests and `--offline` rehearsals: one stack with its cluster and tailnet.

It wires the three stand-ins that live beside the adapters they replace (`pulumi_simulated`,
`kubernetes_simulated`, `tailscale_simulated`) and stands in for the playbook run: burst nodes
that `up` creates boot and join the tailnet; configuring them joins them to the cluster. A shared
`journal` records every call in order, which is what the tests check the order of steps with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoma_infra.platforms.kubernetes_simulated import SimulatedCluster
from ecoma_infra.platforms.pulumi_simulated import SimulatedStack
from ecoma_infra.platforms.seams import Journal
from ecoma_infra.platforms.tailscale_simulated import SimulatedTailnet
from ecoma_infra.program.inventory import inventory_hosts


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
