"""Validate a stack's config: shape and types first, then every rule of the design at once.

Every finding is a `ConfigIssue` naming where it is (`ecoma:nodes[cpl-2].disks[1].tier`), what is
wrong and what would fix it; `ConfigError` carries all of them with the file they came from.
"""

from __future__ import annotations

import types
import typing
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ecoma_infra.config import (
    DATA_TIERS,
    MAX_DISKS,
    NAMESPACE,
    ON_PREM_ONLY_ROLES,
    ROLES,
    SECRET_KEYS,
    AutoscaleSettings,
    BurstPool,
    CloudProvider,
    Disk,
    StackConfig,
    required_secrets,
    split_namespace,
)
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.naming import burst_node_index, burst_node_names

OCI_MIN_VOLUME_GB = 50  # OCI's smallest block and boot volume


@dataclass(frozen=True)
class ConfigIssue:
    where: str
    message: str
    fix: str

    def render(self, source: str) -> str:
        return f"{source}: {self.where}: {self.message}. Fix: {self.fix}"


class ConfigError(EcomaError):
    """The stack config breaks one or more rules; `issues` lists every one of them."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = [issue.render(source) for issue in self.issues]
        count = len(lines)
        header = f"{source}: {count} problem{'s' if count != 1 else ''} in the stack config"
        super().__init__("\n".join([header, *(f"  - {line}" for line in lines)]))


@dataclass(frozen=True)
class LoadedStack:
    config: StackConfig
    source: str
    secrets_present: frozenset[str]
    notices: tuple[str, ...] = ()


# --------------------------------------------------------------------------- loading


def stack_file(stack: str, root: Path) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def load_stack_file(path: Path, *, require_secrets: bool = False) -> LoadedStack:
    """Read and validate a `Pulumi.<stack>.yaml` file."""
    source = path.name if path.parent == Path.cwd() else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such stack file. Fix: give an existing file, or create it "
            f"with `pulumi stack init` and copy Pulumi.staging.yaml as a start"
        ) from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read the stack file: {error.strerror}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            source, [ConfigIssue(f"YAML{at}", str(problem), "fix the YAML syntax")]
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(
            source,
            [ConfigIssue("config", "no `config:` mapping", "put the ecoma:* keys under `config:`")],
        )
    values, secrets = split_namespace(document["config"])
    issues = [
        ConfigIssue(
            f"{NAMESPACE}:{key}",
            "a secret is stored in plain text",
            f"remove it from the file and run `pulumi config set --secret {NAMESPACE}:{key}`",
        )
        for key, value in secrets.items()
        if not (isinstance(value, dict) and set(value) == {"secure"})
    ]
    config = parse_stack_config(values, source, earlier_issues=issues)
    present = frozenset(secrets)
    missing = [key for key in required_secrets(config) if key not in present]
    notices: tuple[str, ...] = ()
    if missing:
        if require_secrets:
            raise ConfigError(
                source,
                [
                    ConfigIssue(
                        f"{NAMESPACE}:{key}",
                        f"secret missing: {SECRET_KEYS[key]}",
                        f"run `pulumi config set --secret {NAMESPACE}:{key} ...`",
                    )
                    for key in missing
                ],
            )
        notices = (
            "secrets `pulumi up` will ask for: " + ", ".join(f"{NAMESPACE}:{k}" for k in missing),
        )
    return LoadedStack(config, source, present, notices)


def parse_stack_config(
    values: Mapping[str, Any], source: str, *, earlier_issues: Sequence[ConfigIssue] = ()
) -> StackConfig:
    """Turn the `ecoma:` values (namespace stripped, no secrets) into a checked `StackConfig`."""
    issues = list(earlier_issues)
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as error:
        issues += [_translate(item, values) for item in error.errors(include_url=False)]
        raise ConfigError(source, issues) from None
    issues += check_rules(config)
    if issues:
        raise ConfigError(source, issues)
    return config


# --------------------------------------------------------------------------- pydantic errors

_PATTERN_HINTS = {
    "name": "lowercase letters, digits and '-', 1-63 characters, starting and ending with a "
    "letter or digit",
    "hypervisor": "the Proxmox node's name: lowercase letters, digits and '-'",
    "hypervisors": "Proxmox node names: lowercase letters, digits and '-'",
    "subnet_routers": "node names: lowercase letters, digits and '-'",
    "ttl": "a positive duration such as 30m, 4h or 1d",
    "key_expiry": "a positive duration such as 30m, 1h or 1d",
    "version": "a k3s release such as v1.31.4+k3s1",
    "endpoint": "the API URL such as https://pve.example.internal:8006/",
    "user": "a Linux user name such as ecoma",
    "authorized_keys": "an OpenSSH public key line such as 'ssh-ed25519 AAAA... you@host'",
    "tags": "a Tailscale tag such as tag:ecoma-cpl",
    "magic_dns_suffix": "the tailnet's MagicDNS suffix such as tail1234.ts.net",
    "project": "a GCP project id",
    "compartment_id": "an OCI compartment OCID (ocid1.compartment....)",
    "zone": "1-8 lowercase letters and digits, starting with a letter",
    "vnet": "1-8 lowercase letters and digits, starting with a letter",
}


def _where(loc: Sequence[int | str], values: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = values
    for depth, segment in enumerate(loc):
        label: str
        if isinstance(segment, int):
            label = f"[{segment}]"
            item = node[segment] if isinstance(node, list) and segment < len(node) else None
            if depth == 1 and loc[0] == "nodes" and isinstance(item, dict) and "name" in item:
                label = f"[{item['name']}]"
            node = item
        else:
            label = f"{NAMESPACE}:{segment}" if depth == 0 else f".{segment}"
            node = node.get(segment) if isinstance(node, dict) else None
        parts.append(label)
    return "".join(parts) or f"{NAMESPACE}:"


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class whose field the last element of `loc` would be (for 'allowed fields')."""
    current: Any = StackConfig
    for segment in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(segment))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(segment, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X; `Annotated[X, ...]` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation


def _translate(error: Mapping[str, Any], values: Mapping[str, Any]) -> ConfigIssue:
    loc = tuple(error["loc"])
    where = _where(loc, values)
    kind = error["type"]
    field = next((str(s) for s in reversed(loc) if isinstance(s, str)), "")
    message = str(error["msg"])
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = ", ".join(model.model_fields) if model else "see `ecoma-infra schema`"
        return ConfigIssue(where, "unknown field", f"remove it or fix its spelling ({allowed})")
    if kind == "missing":
        return ConfigIssue(where, "required field is missing", "add it (see `ecoma-infra schema`)")
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(field, "see `ecoma-infra schema` for the expected form")
        return ConfigIssue(where, f"{error.get('input')!r} is not valid", f"use {hint}")
    if kind == "literal_error":
        return ConfigIssue(where, message, "use one of the listed values")
    if kind.startswith("ip_v4"):
        return ConfigIssue(
            where,
            message,
            "give an address like 10.41.1.20 or a network like 10.41.1.0/24 with no host bits set",
        )
    return ConfigIssue(where, message, "change the value as the message says")


# --------------------------------------------------------------------------- rules


def check_rules(config: StackConfig) -> list[ConfigIssue]:
    """Every rule that spans fields, all at once, in a stable order."""
    return [
        *_node_rules(config),
        *_uniqueness_rules(config),
        *_network_rules(config),
        *_burst_rules(config),
        *_tailscale_rules(config),
        *_credential_rules(config),
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
    for name in config.proxmox.unlock_disks:
        if name not in names:
            yield ConfigIssue(
                f"{NAMESPACE}:proxmox.unlock_disks",
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
    burst_names = [
        name
        for provider, pool in config.burst.pools().items()
        for name in burst_node_names(provider, pool.max)
    ]
    for name in _duplicates([n.name for n in config.nodes]):
        yield ConfigIssue(
            f"{NAMESPACE}:nodes[{name}].name",
            "name used by more than one node",
            "give every node its own name",
        )
    for name in sorted({n.name for n in config.nodes} & set(burst_names)):
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


def _burst_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    burst = config.burst
    pools = burst.pools()
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
        yield from _lease_rules(where, provider, pool)
    if burst.autoscale is not None:
        yield from _autoscale_rules(burst.autoscale, pools)
    hourly = sum(pool.count * pool.hourly_price_usd for pool in pools.values())
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


def _lease_rules(where: str, provider: str, pool: BurstPool) -> Iterator[ConfigIssue]:
    """The leases `ecoma-infra burst` writes: one per running node, named for this pool."""
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


def _credential_rules(config: StackConfig) -> Iterator[ConfigIssue]:
    for key in sorted(config.credentials):
        if key not in SECRET_KEYS:
            yield ConfigIssue(
                f"{NAMESPACE}:credentials.{key}",
                "not a credential of this project",
                f"use one of: {', '.join(SECRET_KEYS)}",
            )


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
