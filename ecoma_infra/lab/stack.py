"""A stack's on-prem nodes as lab hosts: the spec, the matching inventory, the lab's role vars.

Each on-prem node becomes a host at its own SDN IP, each non-OS disk a loop device linked at the
same `/dev/disk/by-id/virtio-<tier>` path the program's serials give (the OS disk is the host's
root filesystem, as on a VM). The inventory is the one the program outputs for these nodes,
with only the connection variables replaced, plus the role switches for what a lab cannot do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from ecoma_infra.lab.engine import lab_inventory_overrides
from ecoma_infra.lab.state import LabDisk, LabHost, LabSpec, LabState
from ecoma_infra.paths import project_root
from ecoma_infra.program.inventory import build_inventory, inventory_hosts, onprem_node_fact
from ecoma_infra.stack.model import StackConfig

# Sparse files: they cost what is written. xfs refuses filesystems under 300 MB.
LAB_DISK_MB = {"swap": 64, "hot": 320, "warm": 320, "cold": 320}
INVENTORY_FILE = "inventory.json"

# What the lab cannot do (nothing can be downloaded here, hosts run no init system): each is
# skipped visibly by its role, which says so in the play's output.
LAB_ROLE_VARS: dict[str, Any] = {
    "prereq_install_packages": False,
    "tailscale_install": False,
    "tailscale_join": False,
    "k3s_install_binary": False,
    "k3s_start_service": False,
}


def state_dir(stack: str, root: Path | None = None) -> Path:
    return (root or project_root()) / ".lab" / stack


def lab_spec(config: StackConfig, *, lab_id: str = "ecoma") -> LabSpec:
    hosts = [
        LabHost(
            name=node.name,
            ip=str(node.ip),
            disks=[
                LabDisk(tier=d.tier, by_id=f"virtio-{d.tier}", size_mb=LAB_DISK_MB[d.tier])
                for d in node.disks
                if not d.os
            ],
        )
        for node in config.nodes
        if node.provider == "proxmox"
    ]
    return LabSpec(
        hosts=hosts,
        subnet=str(config.network.sdn_subnet),
        gateway=str(config.network.sdn_gateway),
        lab_id=lab_id,
        user=config.ssh.user,
    )


def lab_inventory(stack: str, config: StackConfig, state: LabState) -> dict[str, Any]:
    facts = [
        onprem_node_fact(
            node,
            config.storage,
            config.tailscale.subnet_routers,
            config.proxmox.template_boot_interface,
        )
        for node in config.nodes
        if node.provider == "proxmox"
    ]
    inventory = build_inventory(stack, config, facts)
    overrides = lab_inventory_overrides(state)
    for name, hostvars in inventory_hosts(inventory).items():
        hostvars.update(overrides[name])
    inventory["all"]["vars"].update(LAB_ROLE_VARS)
    return inventory


def write_inventory(directory: Path, inventory: dict[str, Any]) -> Path:
    path = directory / INVENTORY_FILE
    path.write_text(json.dumps(inventory, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def lab_secrets(state: LabState) -> dict[str, str]:
    """Tokens for the lab, never written anywhere: derived from the lab's own 0600 SSH key, so
    they stay the same for every converge of one lab (a re-run changes nothing) and die with it.
    """
    seed = Path(state.private_key).read_bytes()

    def derive(label: str, length: int) -> str:
        return hmac.new(seed, label.encode(), hashlib.sha256).hexdigest()[:length]

    server = f"K10{derive('ca', 64)}::server:{derive('server', 32)}"
    agent = f"K10{derive('ca', 64)}::node:{derive('agent', 32)}"
    return {
        "ECOMA_K3S_TOKEN": server,
        "ECOMA_K3S_AGENT_TOKEN": agent,
        # The lab joins no tailnet (tailscale_join is off): no key to hand out.
        "ECOMA_TAILSCALE_AUTH_KEYS": json.dumps({}),
    }
