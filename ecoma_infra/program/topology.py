"""Where things run, as a Mermaid flowchart: a pure function of a stack's config.

Hypervisors with their VMs (name, role, IP), the SDN zone and the kube-vip address in front of
the k3s servers, the subnet routers that carry the SDN subnet into the tailnet, and the burst
pools (count, max, TTL) whose nodes join the tailnet from their cloud. `ecoma-infra diagram`
prints it; README.md shows prod's, and a test keeps the two in step.
"""

from __future__ import annotations

import re

from ecoma_infra.stack.model import ROLES, StackConfig

_ROLE_WORDS = {
    "cpl": "control plane",
    "ops": "operators",
    "sts": "stateful",
    "wkr": "worker",
}
_STYLES = {
    "cpl": "fill:#dbeafe,stroke:#1d4ed8",
    "ops": "fill:#ede9fe,stroke:#6d28d9",
    "sts": "fill:#fee2e2,stroke:#b91c1c",
    "wkr": "fill:#dcfce7,stroke:#15803d",
    "burst": "fill:#fef9c3,stroke:#a16207,stroke-dasharray:4 3",
    "net": "fill:#f3f4f6,stroke:#374151",
}
_CLOUDS = {"aws": "AWS", "gcp": "GCP", "oci": "OCI"}


def _id(*parts: str) -> str:
    """A Mermaid node id: letters, digits and underscores."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


def _label(*lines: str) -> str:
    text = "<br/>".join(lines)
    return '"' + text.replace('"', "'") + '"'


def _sdn(config: StackConfig) -> str:
    sdn = config.proxmox.sdn
    if sdn.kind == "vlan":
        return f"VLAN {sdn.tag} on {sdn.bridge}"
    if sdn.kind == "vxlan":
        return f"VXLAN {sdn.tag}, MTU {sdn.zone_mtu}"
    return "simple zone (one hypervisor)"


def mermaid(config: StackConfig, stack: str) -> str:
    """The stack's topology as a Mermaid `flowchart`."""
    network = config.network
    routers = set(config.tailscale.subnet_routers)
    lines = [
        "flowchart LR",
        f"  %% ecoma-infra diagram -s {stack}: generated from Pulumi.{stack}.yaml, do not edit",
    ]
    sdn_title = (
        f"Proxmox SDN {config.proxmox.sdn.zone}/{config.proxmox.sdn.vnet}: {_sdn(config)}, "
        f"{network.sdn_subnet}, gateway {network.sdn_gateway}"
    )
    lines.append(f"  subgraph onprem[{_label(sdn_title)}]")
    lines.append("    direction TB")
    servers = ", ".join(node.name for node in config.nodes_with_role("cpl"))
    lines.append(f"    vip([{_label(f'kube-vip {network.kube_vip}', f'k3s API of {servers}')}])")
    for hypervisor in config.proxmox.hypervisors:
        nodes = sorted(
            (node for node in config.nodes if node.hypervisor == hypervisor),
            key=lambda n: (ROLES.index(n.role), n.name),
        )
        lines.append(f"    subgraph {_id('pve', hypervisor)}[{_label(f'hypervisor {hypervisor}')}]")
        if not nodes:
            lines.append(f"      {_id('empty', hypervisor)}[{_label('no VM')}]")
        for node in nodes:
            extra = " · subnet router" if node.name in routers else ""
            text = _label(f"{node.name} ({_ROLE_WORDS[node.role]})", f"{node.ip}{extra}")
            lines.append(f"      {_id(node.name)}[{text}]:::{node.role}")
        lines.append("    end")
    lines.append("  end")
    tailnet = _label(
        f"Tailscale tailnet {config.tailscale.tailnet}",
        f"{network.tailscale_cidr} · MagicDNS {config.tailscale.magic_dns_suffix}",
    )
    lines.append(f"  tailnet(({tailnet})):::net")
    for name in config.tailscale.subnet_routers:
        lines.append(f"  {_id(name)} -- {_label(f'routes {network.sdn_subnet}')} --> tailnet")
    for node in config.nodes_with_role("cpl"):
        lines.append(f"  vip -.- {_id(node.name)}")
    for provider, pool in config.burst.pools().items():
        cloud = _label(f"{_CLOUDS[provider]} {pool.region} · VPC {pool.vpc_cidr}")
        lines.append(f"  subgraph {_id('cloud', provider)}[{cloud}]")
        text = _label(
            f"burst pool {provider}: {pool.count} of max {pool.max}",
            f"{pool.instance_type} · TTL {pool.ttl} · wkr-{provider}-N",
        )
        lines.append(f"    {_id('pool', provider)}[{text}]:::burst")
        lines.append("  end")
        lines.append(f"  {_id('pool', provider)} -- {_label('joins, accepts routes')} --> tailnet")
    lines += [f"  classDef {name} {style}" for name, style in _STYLES.items()]
    return "\n".join(lines) + "\n"
