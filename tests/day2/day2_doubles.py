"""Helpers of the day-2 tests: a fake clock, a stand-in for the playbook runs (test names say
simulated), inventories and kubeconfigs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from simulated_apiserver import SimulatedApiServer

OLD = "v1.32.5+k3s1"
NEW = "v1.33.1+k3s1"


class FakeClock:
    """`clock` and `sleep` for the adapter and the waits: sleeping moves time on, at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class SimulatedPlaybook:
    """Stands in for ansible-playbook: records each run, and does to the simulated cluster what
    the real playbook does to the nodes (upgrade.yaml: the kubelet comes back on the new
    version; playbook.yaml: the node joins and is Ready)."""

    apiserver: SimulatedApiServer
    runs: list[dict[str, Any]] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)  # hosts where the playbook fails
    never_ready: set[str] = field(default_factory=set)  # come back, but not Ready

    def __call__(
        self,
        playbook: str,
        inventory: dict[str, Any],
        secrets: dict[str, str],
        limit: str,
        extravars: dict[str, Any],
    ) -> bool:
        hosts = limit.split(",")
        # where in the API server's request log the run happened: orders both logs
        self.runs.append(
            {
                "playbook": playbook,
                "limit": limit,
                "extravars": dict(extravars),
                "secrets": sorted(secrets),
                "at": len(self.apiserver.requests),
            }
        )
        if self.fail_on & set(hosts):
            return False
        for host in hosts:
            ready = host not in self.never_ready
            if playbook == "upgrade.yaml":
                self.apiserver.set_node(host, version=extravars["k3s_version"], ready=ready)
            elif playbook == "playbook.yaml":
                self.apiserver.add_node(host, ready=ready, version=OLD)
        return True


def inventory(**groups: list[str]) -> dict[str, Any]:
    """A minimal inventory: hosts by role (`cpl=[...]`, `wkr=[...]`)."""
    children = {
        f"ecoma_{role}": {"hosts": {name: {"ecoma_node_name": name} for name in names}}
        for role, names in groups.items()
    }
    for role in ("cpl", "ops", "sts", "wkr"):
        children.setdefault(f"ecoma_{role}", {"hosts": {}})
    return {"all": {"vars": {}, "children": children}}


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "ecoma", "cluster": {"server": server}}],
                "users": [{"name": "ops", "user": {"token": "simulated"}}],
                "contexts": [{"name": "ecoma", "context": {"cluster": "ecoma", "user": "ops"}}],
                "current-context": "ecoma",
            }
        )
    )
    return path
