"""Every rule of the design over a parsed stack config, each finding a `ConfigIssue` naming the
node or section, the field and the fix."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from ecoma_infra.stack.issues import ConfigIssue
from ecoma_infra.stack.model import (
    DATA_TIERS,
    MAX_CLUSTER_NODES,
    MAX_DISKS,
    NAMESPACE,
    ON_PREM_ONLY_ROLES,
    ROLES,
    SECRET_KEYS,
    AutoscaleSettings,
    AwsPool,
    BurstPool,
    CloudProvider,
    Disk,
    StackConfig,
)
from ecoma_infra.stack.names import burst_node_index
from ecoma_infra.stack.secret_shapes import secret_flag, secret_kind

OCI_MIN_VOLUME_GB = 50  # OCI's smallest block and boot volume
MAX_VLAN_ID = 4094
# How far a recorded time may be ahead of this machine's clock.
CLOCK_SKEW = timedelta(hours=1)


def check_rules(config: StackConfig, *, now: datetime | None = None) -> list[ConfigIssue]:
    """Every rule that spans fields, all at once, in a stable order. `now` (default: the clock)
    is what recorded times must not be after."""
    now = now or datetime.now(UTC)
    return [
        *_node_rules(config),
        *_uniqueness_rules(config),
        *_network_rules(config),
        *_cloud_network_rules(config),
        *_sdn_rules(config),
        *_resolver_rules(config),
        *_template_rules(config),
        *_burst_rules(config, now),
        *_tailscale_rules(config),
        *_k3s_rules(config),
        *_credential_rules(config, now),
    ]


def _disk_rules(where: str, disks: Sequence[Disk]) -> Iterator[ConfigIssue]:
    os_disks = [d for d in disks if d.os]
    if not os_disks:
        yield ConfigIssue(f"{where}.disks", "no OS disk", "mark exactly one disk with `os: true`")
    elif len(os_disks) > 1:
        yield ConfigIssue(
            f"{where}.disks",
            f"{len(os_disks)} OS disks (tiers {', '.join(d.tier for d in os_disks)})",
            "keep `os: true` on exactly one disk",
        )
    if len(disks) > MAX_DISKS:
        yield ConfigIssue(
            f"{where}.disks",
            f"{len(disks)} disks, at most {MAX_DISKS} (one OS disk + 3 data/swap)",
            "remove disks so that each tier appears once",
        )
    for tier, count in Counter(d.tier for d in disks).items():
        if count > 1:
            yield ConfigIssue(
                f"{where}.disks",
                f"{count} disks have tier '{tier}'; a node has only one disk per tier",
                "give each disk its own tier (swap, hot, warm, cold) or merge them",
            )
    for index, disk in enumerate(disks):
        if disk.os and disk.tier == "swap":
            yield ConfigIssue(
                f"{where}.disks[{index}].tier",
                "the OS disk cannot be the swap tier",
                "give the OS disk tier hot, warm or cold",
            )
        if disk.filesystem is not None and (disk.os or disk.tier == "swap"):
            what = "the OS disk (it is the root filesystem)" if disk.os else "a swap disk"
            yield ConfigIssue(
                f"{where}.disks[{index}].filesystem",
                f"a filesystem cannot be chosen for {what}",
                "remove `filesystem`",
            )
    if not any(d.tier in DATA_TIERS for d in disks):
        yield ConfigIssue(
            f"{where}.disks",
            "no hot, warm or cold disk; /var/storage needs at least one of them",
            "give the OS disk or another disk tier hot, warm or cold",
        )


def _node_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    hypervisors = set(config.proxmox.hypervisors)
    for node in config.nodes:
        where = f"{NAMESPACE}:nodes[{node.name}]"
        if node.role in ON_PREM_ONLY_ROLES and node.provider != "proxmox":
            yield ConfigIssue(
                f"{where}.provider",
                f"role {node.role} runs only on proxmox (control plane, operators and stateful "
                f"services stay on-prem), not on {node.provider}",
                "set `provider: proxmox`",
            )
        elif node.provider != "proxmox":
            yield ConfigIssue(
                f"{where}.provider",
                f"cloud workers are ephemeral burst nodes, not static nodes on {node.provider}",
                f"remove this node and size the pool in {NAMESPACE}:burst.{node.provider}",
            )
        if node.hypervisor not in hypervisors:
            yield ConfigIssue(
                f"{where}.hypervisor",
                f"'{node.hypervisor}' is not one of ecoma:proxmox.hypervisors "
                f"({', '.join(sorted(hypervisors))})",
                "use a listed hypervisor or add it to ecoma:proxmox.hypervisors",
            )
        yield from _disk_rules(where, node.disks)
        for index, disk in enumerate(node.disks):
            if disk.tier not in config.proxmox.datastores:
                yield ConfigIssue(
                    f"{where}.disks[{index}].tier",
                    f"no datastore for tier '{disk.tier}'",
                    f"add `{disk.tier}: <datastore>` to ecoma:proxmox.datastores",
                )
    template_node = config.proxmox.template_node
    if template_node is not None and template_node not in hypervisors:
        yield ConfigIssue(
            f"{NAMESPACE}:proxmox.template_node",
            f"'{template_node}' is not one of ecoma:proxmox.hypervisors",
            "name the hypervisor that holds the template",
        )
    names = {node.name for node in config.nodes}
    for field_name in ("unlock_disks", "replacing"):
        for name in getattr(config.proxmox, field_name):
            if name not in names:
                yield ConfigIssue(
                    f"{NAMESPACE}:proxmox.{field_name}",
                    f"'{name}' is not a node",
                    "name nodes from ecoma:nodes",
                )
    servers = config.nodes_with_role("cpl")
    if len(servers) % 2 == 0:
        yield ConfigIssue(
            f"{NAMESPACE}:nodes",
            f"{len(servers)} cpl nodes; etcd needs an odd number of servers for a quorum",
            "use 1, 3 or 5 cpl nodes",
        )


def _duplicates(values: Iterable[Any]) -> list[Any]:
    return [value for value, count in Counter(values).items() if count > 1]


def _uniqueness_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    pools = config.burst.pools()
    for name in _duplicates([n.name for n in config.nodes]):
        yield ConfigIssue(
            f"{NAMESPACE}:nodes[{name}].name",
            "name used by more than one node",
            "give every node its own name",
        )
    reserved = {
        name
        for name in (n.name for n in config.nodes)
        for provider, pool in pools.items()
        if (index := burst_node_index(provider, name)) is not None and index <= pool.max
    }
    for name in sorted(reserved):
        yield ConfigIssue(
            f"{NAMESPACE}:nodes[{name}].name",
            "name is reserved for a burst node (wkr-<provider>-<n>)",
            "rename the node",
        )
    for vm_id in _duplicates([n.vm_id for n in config.nodes]):
        names = ", ".join(n.name for n in config.nodes if n.vm_id == vm_id)
        yield ConfigIssue(
            f"{NAMESPACE}:nodes[{names}].vm_id",
            f"VM id {vm_id} used by {names}",
            "give every node its own vm_id",
        )
    template = config.proxmox.template_vm_id
    for node in config.nodes:
        if node.vm_id == template:
            yield ConfigIssue(
                f"{NAMESPACE}:nodes[{node.name}].vm_id",
                f"VM id {template} is the Debian 12 template",
                "choose another vm_id",
            )
    for ip in _duplicates([n.ip for n in config.nodes]):
        names = ", ".join(n.name for n in config.nodes if n.ip == ip)
        yield ConfigIssue(
            f"{NAMESPACE}:nodes[{names}].ip",
            f"IP {ip} used by {names}",
            "give every node its own IP",
        )


def _reserved(config: StackConfig) -> dict[IPv4Address, str]:
    plan = config.network
    subnet = plan.sdn_subnet
    return {
        subnet.network_address: "the network address",
        subnet.broadcast_address: "the broadcast address",
        plan.sdn_gateway: "the SDN gateway",
        plan.kube_vip: "the kube-vip address",
    }


def _network_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    plan = config.network
    fixed = [
        ("coredns_ip", plan.coredns_ip, "service_cidr", plan.service_cidr),
        ("node_local_dns_ip", plan.node_local_dns_ip, "link_local_cidr", plan.link_local_cidr),
        ("kube_vip", plan.kube_vip, "sdn_subnet", plan.sdn_subnet),
        ("sdn_gateway", plan.sdn_gateway, "sdn_subnet", plan.sdn_subnet),
    ]
    for field, address, range_field, network in fixed:
        if address not in network:
            yield ConfigIssue(
                f"{NAMESPACE}:network.{field}",
                f"{address} is outside {range_field} {network}",
                f"pick an address inside {network}",
            )
        elif address in (network.network_address, network.broadcast_address):
            yield ConfigIssue(
                f"{NAMESPACE}:network.{field}",
                f"{address} is the network or broadcast address of {network}",
                "pick a host address",
            )
    if plan.kube_vip == plan.sdn_gateway:
        yield ConfigIssue(
            f"{NAMESPACE}:network.kube_vip",
            "the VIP equals the SDN gateway",
            "give the VIP its own address (the seed uses 10.41.1.254)",
        )
    ranges: list[tuple[str, IPv4Network]] = [
        (f"{NAMESPACE}:network.tailscale_cidr", plan.tailscale_cidr),
        (f"{NAMESPACE}:network.link_local_cidr", plan.link_local_cidr),
        (f"{NAMESPACE}:network.pod_cidr", plan.pod_cidr),
        (f"{NAMESPACE}:network.service_cidr", plan.service_cidr),
        (f"{NAMESPACE}:network.sdn_subnet", plan.sdn_subnet),
    ]
    ranges += [
        (f"{NAMESPACE}:burst.{provider}.vpc_cidr", pool.vpc_cidr)
        for provider, pool in config.burst.pools().items()
    ]
    for index, (name_a, net_a) in enumerate(ranges):
        for name_b, net_b in ranges[index + 1 :]:
            if net_a.overlaps(net_b):
                yield ConfigIssue(
                    name_b,
                    f"{net_b} overlaps {name_a} ({net_a})",
                    "choose ranges that share no address",
                )
    reserved = _reserved(config)
    for node in config.nodes:
        where = f"{NAMESPACE}:nodes[{node.name}].ip"
        if node.ip not in plan.sdn_subnet:
            yield ConfigIssue(
                where,
                f"{node.ip} is outside the SDN subnet {plan.sdn_subnet}",
                f"pick a free address inside {plan.sdn_subnet}",
            )
        elif node.ip in reserved:
            yield ConfigIssue(
                where,
                f"{node.ip} is {reserved[node.ip]}, reserved",
                f"pick another address inside {plan.sdn_subnet}",
            )


def _burst_rules(config: StackConfig, now: datetime) -> Iterator[ConfigIssue]:
    burst = config.burst
    pools = burst.pools()
    ceiling = len(config.nodes) + sum(pool.max for pool in pools.values())
    if ceiling > MAX_CLUSTER_NODES:
        yield ConfigIssue(
            f"{NAMESPACE}:burst",
            f"{len(config.nodes)} nodes and pools of max "
            f"{' + '.join(str(pool.max) for pool in pools.values())} make up to {ceiling} nodes, "
            f"above Kubernetes' {MAX_CLUSTER_NODES} nodes per cluster",
            "lower the pools' max",
        )
    if burst.last_scaled_at is not None and burst.last_scaled_at > now + CLOCK_SKEW:
        yield ConfigIssue(
            f"{NAMESPACE}:burst.last_scaled_at",
            f"{burst.last_scaled_at:%Y-%m-%dT%H:%M:%SZ} is in the future: the autoscaler's "
            "cooldown would never end",
            "remove it; `ecoma-infra burst` writes it",
        )
    for provider, pool in pools.items():
        where = f"{NAMESPACE}:burst.{provider}"
        if pool.count > pool.max:
            yield ConfigIssue(
                f"{where}.count",
                f"count {pool.count} is above the pool's max {pool.max}",
                f"lower count to at most {pool.max} or raise max",
            )
        if not pool.subnet_cidr.subnet_of(pool.vpc_cidr):
            yield ConfigIssue(
                f"{where}.subnet_cidr",
                f"{pool.subnet_cidr} is not inside vpc_cidr {pool.vpc_cidr}",
                "choose a subnet inside the VPC range",
            )
        yield from _disk_rules(where, pool.disks)
        if provider == "oci":
            for index, disk in enumerate(pool.disks):
                if disk.size_gb < OCI_MIN_VOLUME_GB:
                    yield ConfigIssue(
                        f"{where}.disks[{index}].size_gb",
                        f"{disk.size_gb} GB is below OCI's smallest volume "
                        f"({OCI_MIN_VOLUME_GB} GB)",
                        f"give the disk at least {OCI_MIN_VOLUME_GB} GB",
                    )
        yield from _lease_rules(where, provider, pool, now)
    if burst.autoscale is not None:
        yield from _autoscale_rules(burst.autoscale, pools)
    hourly = sum(pool.hourly_cost() for pool in pools.values())
    if hourly > burst.budget_usd_per_hour:
        yield ConfigIssue(
            f"{NAMESPACE}:burst.budget_usd_per_hour",
            f"the pools cost {hourly:.2f} USD/h, above the budget of "
            f"{burst.budget_usd_per_hour:.2f} USD/h",
            "lower the pool counts or raise the budget",
        )


def _autoscale_rules(
    settings: AutoscaleSettings, pools: Mapping[CloudProvider, BurstPool]
) -> Iterator[ConfigIssue]:
    where = f"{NAMESPACE}:burst.autoscale"
    for provider in _duplicates(settings.preference):
        yield ConfigIssue(
            f"{where}.preference", f"'{provider}' is listed twice", "list each provider once"
        )
    for index, provider in enumerate(settings.preference):
        if provider not in pools:
            yield ConfigIssue(
                f"{where}.preference[{index}]",
                f"there is no {provider} pool in burst",
                f"add burst.{provider} or remove '{provider}' from the list",
            )
    for signal, rule in settings.rules().items():
        if rule.scale_down_below >= rule.scale_up_above:
            yield ConfigIssue(
                f"{where}.{signal}.scale_down_below",
                f"{rule.scale_down_below} is not below scale_up_above {rule.scale_up_above}: "
                "there is no hysteresis band",
                "set scale_down_below lower than scale_up_above",
            )
    ceiling = sum(pools[p].max for p in settings.preference if p in pools)
    if settings.min_nodes > ceiling:
        yield ConfigIssue(
            f"{where}.min_nodes",
            f"{settings.min_nodes} is above the preferred pools' max total of {ceiling}",
            f"lower min_nodes to at most {ceiling}",
        )


def _lease_rules(
    where: str, provider: str, pool: BurstPool, now: datetime
) -> Iterator[ConfigIssue]:
    """The leases `ecoma-infra burst` writes: one per running node, named for this pool, each
    ending after it starts; nothing launched in the future."""
    for name in sorted(set(pool.expires_at) & set(pool.launched_at)):
        if pool.expires_at[name] <= pool.launched_at[name]:
            yield ConfigIssue(
                f"{where}.expires_at.{name}",
                f"the lease ends ({pool.expires_at[name]:%Y-%m-%dT%H:%M:%SZ}) before it starts "
                f"(launched_at {pool.launched_at[name]:%Y-%m-%dT%H:%M:%SZ})",
                "remove both entries; `ecoma-infra burst` keeps these maps",
            )
    for name, launched in sorted(pool.launched_at.items()):
        if launched > now + CLOCK_SKEW:
            yield ConfigIssue(
                f"{where}.launched_at.{name}",
                f"{launched:%Y-%m-%dT%H:%M:%SZ} is in the future",
                "remove the entry; `ecoma-infra burst` keeps this map",
            )
    for field in ("expires_at", "launched_at"):
        for name in sorted(getattr(pool, field)):
            index = burst_node_index(provider, name)
            if index is None or index > pool.max:
                yield ConfigIssue(
                    f"{where}.{field}.{name}",
                    f"'{name}' is not a node name of this pool "
                    f"(wkr-{provider}-1 .. wkr-{provider}-{pool.max})",
                    "remove the entry; `ecoma-infra burst` keeps this map",
                )
    leased = set(pool.expires_at) | set(pool.launched_at)
    if len(leased) > pool.count:
        yield ConfigIssue(
            f"{where}.expires_at",
            f"{len(leased)} nodes have leases but count is {pool.count}",
            "remove the leases of nodes that no longer run; `ecoma-infra burst` keeps this map",
        )


def _credential_rules(config: StackConfig, now: datetime) -> Iterator[ConfigIssue]:
    for key, record in sorted(config.credentials.items()):
        if key not in SECRET_KEYS:
            yield ConfigIssue(
                f"{NAMESPACE}:credentials.{key}",
                "not a credential of this project",
                f"use one of: {', '.join(SECRET_KEYS)}",
            )
        if record.rotated_at > now + CLOCK_SKEW:
            yield ConfigIssue(
                f"{NAMESPACE}:credentials.{key}.rotated_at",
                f"{record.rotated_at:%Y-%m-%dT%H:%M:%SZ} is in the future: the credential would "
                "never be due for rotation",
                "give the time it was really created or rotated",
            )


def _k3s_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    """k3s flags go into the inventory as plain text, which ansible-runner writes to disk: a
    secret among them would leave the secret channel (docs/contracts.md)."""
    k3s = config.k3s
    for field, args in (("server_args", k3s.server_args), ("agent_args", k3s.agent_args)):
        for index, flag in secret_flag(args):
            yield ConfigIssue(
                f"{NAMESPACE}:k3s.{field}[{index}]",
                f"`{flag}` carries a secret, and these flags reach the inventory in plain text",
                "remove it: the join token is the secret ecoma:k3s_token (ecoma:k3s_agent_token "
                "for agents), which the playbook hands to k3s through a 0600 file",
            )
            following = index + 1
            if "=" not in args[index] and following < len(args):
                yield ConfigIssue(
                    f"{NAMESPACE}:k3s.{field}[{following}]",
                    f"the value of `{flag}` in plain text",
                    "remove it together with the flag",
                )
        for index, arg in enumerate(args):
            kind = secret_kind(arg)
            if kind and not any(i in (index, index - 1) for i, _ in secret_flag(args)):
                yield ConfigIssue(
                    f"{NAMESPACE}:k3s.{field}[{index}]",
                    f"looks like {kind} in plain text",
                    "remove it; secrets are separate `secure:` keys",
                )
    if k3s.flannel_backend == "host-gw":
        yield ConfigIssue(
            f"{NAMESPACE}:k3s.flannel_backend",
            "host-gw routes pod CIDRs between nodes on one layer 2, which the Tailscale overlay "
            "between on-prem and cloud nodes cannot carry",
            "use vxlan or wireguard-native",
        )


# AWS: "The allowed block size is between a /16 netmask (65,536 IP addresses) and /28 netmask
# (16 IP addresses)", for a VPC and a subnet alike (EC2 API CreateVpc, CreateSubnet). OCI: "The
# CIDR blocks can range from /16 to /30" (Core Services API CreateVcn), subnets likewise. GCP:
# the smallest IPv4 subnet range is /29 (VPC "Valid ranges"); its networks have no range of
# their own (program/components/gcp.py), so only the subnet is bound.
_PREFIX_BOUNDS: dict[str, dict[str, tuple[int, int]]] = {
    "aws": {"vpc_cidr": (16, 28), "subnet_cidr": (16, 28)},
    "oci": {"vpc_cidr": (16, 30), "subnet_cidr": (16, 30)},
    "gcp": {"subnet_cidr": (8, 29)},
}
# RFC 1918: a VPC range outside these would shadow those internet addresses for the nodes
# (AWS, GCP and OCI all recommend them; GCP accepts others only as "privately used public IPs").
_PRIVATE_RANGES = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
# The NAT gateway's own public subnet (program/components/aws.py) is a /28.
NAT_SUBNET_PREFIX = 28


def _cloud_network_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    for provider, pool in config.burst.pools().items():
        where = f"{NAMESPACE}:burst.{provider}"
        for field, (widest, narrowest) in _PREFIX_BOUNDS[provider].items():
            network: IPv4Network = getattr(pool, field)
            if not widest <= network.prefixlen <= narrowest:
                yield ConfigIssue(
                    f"{where}.{field}",
                    f"{network} is a /{network.prefixlen}; {provider.upper()} takes /{widest} "
                    f"to /{narrowest}",
                    f"choose a range between /{widest} and /{narrowest}",
                )
        for field in ("vpc_cidr", "subnet_cidr"):
            network = getattr(pool, field)
            if not any(network.subnet_of(private) for private in _PRIVATE_RANGES):
                yield ConfigIssue(
                    f"{where}.{field}",
                    f"{network} is not a private range (RFC 1918): nodes could not reach the "
                    "internet addresses it shadows",
                    "choose a range inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16",
                )
        if provider == "aws" and isinstance(pool, AwsPool):
            yield from _aws_zone_and_nat_rules(where, pool)
        if provider == "gcp" and not pool.zone.startswith(f"{pool.region}-"):
            yield ConfigIssue(
                f"{where}.zone",
                f"{pool.zone} is not a zone of region {pool.region} (GCP zones are "
                "<region>-<letter>)",
                f"use a zone of {pool.region}, e.g. {pool.region}-a",
            )


def _aws_zone_and_nat_rules(where: str, pool: AwsPool) -> Iterator[ConfigIssue]:
    # AWS availability zone names are the region's name and a letter (eu-central-1a).
    if not (pool.zone.startswith(pool.region) and pool.zone[len(pool.region) :].isalpha()):
        yield ConfigIssue(
            f"{where}.zone",
            f"{pool.zone} is not an availability zone of region {pool.region}",
            f"use a zone of {pool.region}, e.g. {pool.region}a",
        )
    if pool.public_ip:
        return
    if nat_subnet(pool.vpc_cidr, pool.subnet_cidr) is None:
        yield ConfigIssue(
            f"{where}.subnet_cidr",
            f"{pool.subnet_cidr} leaves no room in vpc_cidr {pool.vpc_cidr} for the NAT "
            f"gateway's /{NAT_SUBNET_PREFIX} (its first or last /{NAT_SUBNET_PREFIX})",
            "shrink subnet_cidr, widen vpc_cidr, or set public_ip: true",
        )


def nat_subnet(vpc: IPv4Network, subnet: IPv4Network) -> IPv4Network | None:
    """The public /28 of the NAT gateway: the VPC's last /28, else its first; None when the
    VPC is too small or `subnet` covers both (the program's AWS pool uses this too)."""
    if vpc.prefixlen >= NAT_SUBNET_PREFIX:
        return None
    return next((c for c in (_last(vpc), _first(vpc)) if not c.overlaps(subnet)), None)


def _first(vpc: IPv4Network) -> IPv4Network:
    return IPv4Network((vpc.network_address, NAT_SUBNET_PREFIX))


def _last(vpc: IPv4Network) -> IPv4Network:
    size = 2 ** (32 - NAT_SUBNET_PREFIX)
    return IPv4Network((int(vpc.broadcast_address) - size + 1, NAT_SUBNET_PREFIX))


def _tailscale_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    settings = config.tailscale
    by_name = {node.name: node for node in config.nodes}
    for router in settings.subnet_routers:
        node = by_name.get(router)
        if node is None:
            yield ConfigIssue(
                f"{NAMESPACE}:tailscale.subnet_routers",
                f"'{router}' is not a node",
                "name on-prem nodes from ecoma:nodes",
            )
        elif node.provider != "proxmox":
            yield ConfigIssue(
                f"{NAMESPACE}:tailscale.subnet_routers",
                f"'{router}' is on {node.provider}; only on-prem nodes can route the SDN subnet",
                "name on-prem nodes",
            )
    missing = [role for role in ROLES if role not in settings.tags]
    if missing:
        yield ConfigIssue(
            f"{NAMESPACE}:tailscale.tags",
            f"no tag for role {', '.join(missing)}",
            "give every role a tag such as tag:ecoma-<role>",
        )
    for role, count in Counter(settings.tags.values()).items():
        if count > 1:
            yield ConfigIssue(
                f"{NAMESPACE}:tailscale.tags",
                f"tag {role} is shared by several roles",
                "give each role its own tag, so the tailnet policy can tell them apart",
            )


def _sdn_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    """The zone must reach every hypervisor that holds a node (see `ProxmoxSdn`)."""
    sdn = config.proxmox.sdn
    where = f"{NAMESPACE}:proxmox.sdn"
    hypervisors = sorted(set(config.proxmox.hypervisors))
    only_for = {
        "bridge": ("vlan",),
        "tag": ("vlan", "vxlan"),
        "mtu": ("vxlan",),
        "peers": ("vxlan",),
    }
    for field, kinds in only_for.items():
        if getattr(sdn, field) and sdn.kind not in kinds:
            yield ConfigIssue(
                f"{where}.{field}",
                f"`{field}` is for a {' or '.join(kinds)} zone, this one is {sdn.kind}",
                f"remove `{field}`, or set kind: {kinds[0]}",
            )
    if sdn.kind == "simple" and len(hypervisors) > 1:
        yield ConfigIssue(
            f"{where}.kind",
            "a simple zone is local to each hypervisor (Proxmox: 'VM traffic is only local on "
            f"each the node'), so nodes on {', '.join(hypervisors)} could not reach each other, "
            "the kube-vip address or the subnet routers",
            "set kind: vlan (with bridge and tag) or kind: vxlan (with peers and tag), "
            "or keep to one hypervisor",
        )
    if sdn.kind == "vlan":
        if not sdn.bridge:
            yield ConfigIssue(
                f"{where}.bridge",
                "a vlan zone needs the bridge that carries the VLAN on every hypervisor",
                "set bridge: the bridge every hypervisor has on the trunk, e.g. vmbr0",
            )
        if sdn.tag is None or sdn.tag > MAX_VLAN_ID:
            yield ConfigIssue(
                f"{where}.tag",
                "a vlan zone needs the VLAN id"
                + ("" if sdn.tag is None else f"; {sdn.tag} is above {MAX_VLAN_ID}"),
                f"set tag: the VLAN id (1-{MAX_VLAN_ID}) the switch carries between hypervisors",
            )
    if sdn.kind == "vxlan":
        if sdn.tag is None:
            yield ConfigIssue(
                f"{where}.tag",
                "a vxlan zone's vnet needs its VXLAN id (VNI)",
                "set tag: a VNI (1-16777215) unused by other zones",
            )
        missing = [name for name in hypervisors if name not in sdn.peers]
        if missing:
            yield ConfigIssue(
                f"{where}.peers",
                f"no underlay address for {', '.join(missing)}; Proxmox: 'All nodes in the "
                "cluster need to be mentioned here'",
                "list every hypervisor with the address its peers reach it at, "
                "e.g. peers: {pve1: 192.168.10.11}",
            )
        unknown = sorted(set(sdn.peers) - set(hypervisors))
        if unknown:
            yield ConfigIssue(
                f"{where}.peers",
                f"{', '.join(unknown)} not in ecoma:proxmox.hypervisors",
                "list only the stack's hypervisors",
            )
        for address in _duplicates(sdn.peers.values()):
            yield ConfigIssue(
                f"{where}.peers",
                f"{address} is given for more than one hypervisor",
                "give each hypervisor its own underlay address",
            )


def _template_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    """Template 9000 made by `up` (ecoma:proxmox.template_image): a fixed image that every clone
    can grow from."""
    image = config.proxmox.template_image
    if image is None:
        return
    where = f"{NAMESPACE}:proxmox.template_image"
    if "/latest/" in image.url:
        yield ConfigIssue(
            f"{where}.url",
            "latest/ moves to each new Debian build, and the download then no longer matches "
            "sha512",
            "use the dated build directory (e.g. .../bookworm/20250210-2019/debian-12-"
            "genericcloud-amd64-20250210-2019.qcow2) and the sha512 from its SHA512SUMS",
        )
    for node in config.nodes:
        os_disk = next((disk for disk in node.disks if disk.os), None)
        if os_disk is not None and os_disk.size_gb < image.disk_size_gb:
            yield ConfigIssue(
                f"{NAMESPACE}:nodes[{node.name}].disks",
                f"the OS disk ({os_disk.size_gb} GB) is smaller than the template's disk "
                f"({image.disk_size_gb} GB), and Proxmox cannot shrink a cloned disk",
                f"give the OS disk at least {image.disk_size_gb} GB, or lower {where}.disk_size_gb",
            )


def _resolver_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    """Resolvers must answer at first boot, before Kubernetes or Tailscale exist."""
    plan = config.network
    where = f"{NAMESPACE}:network.dns_servers"
    not_yet = [
        (plan.service_cidr, "the Kubernetes service range"),
        (plan.pod_cidr, "the pod range"),
        (plan.tailscale_cidr, "the Tailscale range"),
        (plan.link_local_cidr, "the link-local range (NodeLocal DNS)"),
    ]
    for server in plan.dns_servers:
        for network, what in not_yet:
            if server in network:
                yield ConfigIssue(
                    where,
                    f"{server} is in {what}, which does not exist yet when cloud-init runs",
                    "name resolvers reachable from the SDN subnet on first boot",
                )
        if server == plan.sdn_gateway and config.proxmox.sdn.kind == "simple":
            yield ConfigIssue(
                where,
                f"{server} is the simple zone's gateway, and Proxmox runs no DNS there (dnsmasq "
                "only serves a zone with DHCP, which this one does not use)",
                "name resolvers that answer, e.g. the site's DNS or a public resolver",
            )
        if server == plan.kube_vip:
            yield ConfigIssue(
                where, f"{server} is the kube-vip address", "name resolvers that answer"
            )
    for server in _duplicates(plan.dns_servers):
        yield ConfigIssue(where, f"{server} is listed twice", "list each resolver once")
