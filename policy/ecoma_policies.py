"""Ecoma's security rules as CrossGuard resource policies: pure functions over engine props.

CrossGuard runs this pack in its own virtualenv with `pulumi-policy` as its only dependency, so
nothing here imports `ecoma_infra`: the few constants the rules share with the program are
copied below, and `tests/test_policy.py` asserts that the copies equal the program's.

Every `validate(args, report_violation)` reads `args.resource_type`, `args.props` (engine names,
camelCase; nested values arrive as read-only Mapping/Sequence proxies, not dicts and lists),
`args.opts`, `args.provider` and `args.get_config()`, and reports each finding with a message
that names the resource, the field and the fix.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
)

# Copies of the program's constants (kept equal by tests/test_policy.py).
COST_TAG_KEYS = ("ecoma-stack", "ecoma-role", "ecoma-burst", "ecoma-expires-at", "managed-by")
ROLE_TAG_KEY = "ecoma-role"
CLOUD_ROLE = "wkr"
CLOUD_PROVIDERS = ("aws", "gcp", "oci")
STATEFUL_ROLES = ("cpl", "sts")
REPLACING_TAG = "ecoma-replacing"  # program.components.proxmox.REPLACING_TAG
TAILSCALE_UDP_PORT = 41641
DEFAULT_WORKER_TAILSCALE_TAGS = ("tag:ecoma-wkr",)

Report = Callable[..., None]
Exposure = tuple[str, int, int]  # (protocol, first port, last port) open to the world

ALL_PORTS = (0, 65535)
SSH_PORT = 22

# Protocol names and numbers as the three clouds spell them, normalised.
_PROTOCOLS = {
    "-1": "all",
    "all": "all",
    "6": "tcp",
    "tcp": "tcp",
    "17": "udp",
    "udp": "udp",
    "1": "icmp",
    "icmp": "icmp",
    "58": "icmpv6",
    "icmpv6": "icmpv6",
}

# Resources whose cost tags live under a known key. A resource type not listed here that still
# carries the key (a new resource a component starts to use) is checked all the same.
TAG_FIELD = {"aws": "tags", "gcp": "labels", "oci": "freeformTags"}
TAGGABLE_TYPES = frozenset(
    {
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/eip:Eip",
        "aws:ec2/natGateway:NatGateway",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        "aws:ec2/instance:Instance",
        "aws:ec2/launchTemplate:LaunchTemplate",
        "aws:ebs/volume:Volume",
        "gcp:compute/instance:Instance",
        "gcp:compute/instanceTemplate:InstanceTemplate",
        "gcp:compute/disk:Disk",
        "gcp:compute/address:Address",
        "oci:Core/vcn:Vcn",
        "oci:Core/subnet:Subnet",
        "oci:Core/internetGateway:InternetGateway",
        "oci:Core/natGateway:NatGateway",
        "oci:Core/serviceGateway:ServiceGateway",
        "oci:Core/routeTable:RouteTable",
        "oci:Core/securityList:SecurityList",
        "oci:Core/networkSecurityGroup:NetworkSecurityGroup",
        "oci:Core/instance:Instance",
        "oci:Core/volume:Volume",
    }
)


# ---------------------------------------------------------------------------------------------
# Reading engine props (Mapping/Sequence proxies under the engine, plain dicts in tests).


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return value
    return ()


def _truthy(value: Any) -> bool:
    """Booleans, and OCI's booleans typed as strings ("true"/"false")."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return value is True


def _cloud(resource_type: str) -> str | None:
    """`aws:ec2/vpc:Vpc` -> aws; `pulumi:providers:gcp` -> gcp; anything else -> None."""
    package = resource_type.split(":", 1)[0]
    if resource_type.startswith("pulumi:providers:"):
        package = resource_type.rsplit(":", 1)[1]
    return package if package in CLOUD_PROVIDERS else None


def _where(args: ResourceValidationArgs) -> str:
    return f"{args.resource_type} {args.name!r}"


def _is_world(cidr: Any) -> bool:
    """0.0.0.0/0, ::/0, or any other spelling of "every address"."""
    if not isinstance(cidr, str):
        return False
    try:
        return ipaddress.ip_network(cidr.strip(), strict=False).prefixlen == 0
    except ValueError:
        return cidr.strip() in ("0.0.0.0/0", "::/0", "*")


def _protocol(value: Any) -> str:
    text = str(value).strip().lower() if value is not None else "all"
    return _PROTOCOLS.get(text, text)


def _port(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    return int(float(value))


# ---------------------------------------------------------------------------------------------
# Rule 1: nothing reachable from the internet but Tailscale's UDP port.


def _aws_range(protocol: str, from_port: Any, to_port: Any) -> tuple[int, int]:
    if protocol == "all":
        return ALL_PORTS
    # For ICMP these are the type and code; any ICMP from the internet is a finding anyway.
    return _port(from_port, 0), _port(to_port, 65535)


def _aws_exposures(args: ResourceValidationArgs) -> Iterator[Exposure]:
    props = args.props
    if args.resource_type == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule":
        if _is_world(props.get("cidrIpv4")) or _is_world(props.get("cidrIpv6")):
            protocol = _protocol(props.get("ipProtocol"))
            yield (protocol, *_aws_range(protocol, props.get("fromPort"), props.get("toPort")))
        return
    rules: Iterable[Any] = ()
    if args.resource_type == "aws:ec2/securityGroupRule:SecurityGroupRule":
        if str(props.get("type", "")).lower() == "ingress":
            rules = [props]
    elif args.resource_type == "aws:ec2/securityGroup:SecurityGroup":
        rules = _seq(props.get("ingress"))
    for raw in rules:
        rule = _map(raw)
        cidrs = [*_seq(rule.get("cidrBlocks")), *_seq(rule.get("ipv6CidrBlocks"))]
        if any(_is_world(cidr) for cidr in cidrs):
            protocol = _protocol(rule.get("protocol"))
            yield (protocol, *_aws_range(protocol, rule.get("fromPort"), rule.get("toPort")))


def _gcp_exposures(args: ResourceValidationArgs) -> Iterator[Exposure]:
    if args.resource_type != "gcp:compute/firewall:Firewall":
        return
    props = args.props
    if str(props.get("direction") or "INGRESS").upper() != "INGRESS":
        return
    if not any(_is_world(cidr) for cidr in _seq(props.get("sourceRanges"))):
        return
    for raw in _seq(props.get("allows")):
        allow = _map(raw)
        protocol = _protocol(allow.get("protocol"))
        ports = _seq(allow.get("ports"))
        if not ports:
            yield (protocol, *ALL_PORTS)
        for spec in ports:
            first, _, last = str(spec).partition("-")
            yield (protocol, int(first), int(last or first))


def _oci_options_range(rule: Mapping[str, Any], protocol: str, nested: bool) -> tuple[int, int]:
    options = _map(rule.get({"tcp": "tcpOptions", "udp": "udpOptions"}.get(protocol, "")))
    if nested:
        options = _map(options.get("destinationPortRange"))
    if not options:
        return ALL_PORTS
    return _port(options.get("min"), 0), _port(options.get("max"), 65535)


def _oci_exposures(args: ResourceValidationArgs) -> Iterator[Exposure]:
    props = args.props
    if args.resource_type == "oci:Core/securityList:SecurityList":
        rules, nested = [_map(r) for r in _seq(props.get("ingressSecurityRules"))], False
    elif args.resource_type == (
        "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"
    ):
        if str(props.get("direction", "")).upper() != "INGRESS":
            return
        rules, nested = [props], True
    else:
        return
    for rule in rules:
        if _is_world(rule.get("source")):
            protocol = _protocol(rule.get("protocol"))
            yield (protocol, *_oci_options_range(rule, protocol, nested))


def _is_tailscale(exposure: Exposure) -> bool:
    return exposure == ("udp", TAILSCALE_UDP_PORT, TAILSCALE_UDP_PORT)


def _describe(exposure: Exposure) -> str:
    protocol, first, last = exposure
    if protocol == "all":
        return "all protocols and ports"
    ports = f"port {first}" if first == last else f"ports {first}-{last}"
    if (first, last) == ALL_PORTS:
        ports = "every port"
    ssh = " (SSH)" if protocol in ("tcp", "all") and first <= SSH_PORT <= last else ""
    return f"{protocol} {ports}{ssh}"


def no_world_ingress(args: ResourceValidationArgs, report_violation: Report) -> None:
    exposures = [
        *_aws_exposures(args),
        *_gcp_exposures(args),
        *_oci_exposures(args),
    ]
    for exposure in exposures:
        if not _is_tailscale(exposure):
            report_violation(
                f"{_where(args)} opens {_describe(exposure)} to the internet (0.0.0.0/0 or ::/0). "
                f"Only Tailscale's udp {TAILSCALE_UDP_PORT} may be; everything else (SSH "
                "included) goes over the tailnet. Fix: remove the rule or narrow its source."
            )


# ---------------------------------------------------------------------------------------------
# Rule 2: instance metadata only with session tokens (AWS IMDSv2; OCI without legacy v1).


def imds_v2_required(args: ResourceValidationArgs, report_violation: Report) -> None:
    props = args.props
    if args.resource_type in ("aws:ec2/instance:Instance", "aws:ec2/launchTemplate:LaunchTemplate"):
        if _map(props.get("metadataOptions")).get("httpTokens") != "required":
            report_violation(
                f'{_where(args)}: metadataOptions.httpTokens must be "required" (IMDSv2 only), '
                "so that an SSRF in a workload cannot read the instance's metadata."
            )
    elif args.resource_type == "oci:Core/instance:Instance":
        options = _map(props.get("instanceOptions"))
        if not _truthy(options.get("areLegacyImdsEndpointsDisabled")):
            report_violation(
                f"{_where(args)}: instanceOptions.areLegacyImdsEndpointsDisabled must be true "
                "(only the IMDS v2 endpoints)."
            )


# ---------------------------------------------------------------------------------------------
# Rule 3: encrypted volumes.


def volumes_encrypted(args: ResourceValidationArgs, report_violation: Report) -> None:
    props, where = args.props, _where(args)
    kind = args.resource_type
    if kind == "aws:ebs/volume:Volume" and not _truthy(props.get("encrypted")):
        report_violation(f"{where}: set encrypted=True (EBS volumes are plain by default).")
    elif kind == "aws:ec2/instance:Instance":
        if not _truthy(_map(props.get("rootBlockDevice")).get("encrypted")):
            report_violation(
                f"{where}: rootBlockDevice.encrypted must be true (changing it later replaces "
                "the instance)."
            )
        for index, raw in enumerate(_seq(props.get("ebsBlockDevices"))):
            if not _truthy(_map(raw).get("encrypted")):
                report_violation(f"{where}: ebsBlockDevices[{index}].encrypted must be true.")
    elif kind == "oci:Core/volumeAttachment:VolumeAttachment":
        # OCI offers in-transit encryption for paravirtualized attachments only; the program's
        # iSCSI attachments (the disk identity that holds on Debian) cannot have it.
        if props.get("attachmentType") == "paravirtualized" and not _truthy(
            props.get("isPvEncryptionInTransitEnabled")
        ):
            report_violation(
                f"{where}: isPvEncryptionInTransitEnabled must be true (encrypt the "
                "paravirtualized path between the instance and the volume)."
            )
    elif kind == "oci:Core/instance:Instance":
        launch = _map(props.get("launchOptions"))
        if not (
            _truthy(props.get("isPvEncryptionInTransitEnabled"))
            or _truthy(launch.get("isPvEncryptionInTransitEnabled"))
        ):
            report_violation(
                f"{where}: isPvEncryptionInTransitEnabled must be true (boot volume traffic "
                "encrypted in transit)."
            )


# ---------------------------------------------------------------------------------------------
# Rule 4: no public IP on burst nodes, unless the stack's policy config allows it per cloud.

PUBLIC_IP_CONFIG = "allow_public_ip_providers"


def _public_ip_findings(args: ResourceValidationArgs) -> Iterator[str]:
    props, kind = args.props, args.resource_type
    if kind == "aws:ec2/instance:Instance" and _truthy(props.get("associatePublicIpAddress")):
        yield "associatePublicIpAddress is true"
    elif kind == "aws:ec2/subnet:Subnet" and _truthy(props.get("mapPublicIpOnLaunch")):
        yield "mapPublicIpOnLaunch is true"
    elif kind in ("gcp:compute/instance:Instance", "gcp:compute/instanceTemplate:InstanceTemplate"):
        for index, raw in enumerate(_seq(props.get("networkInterfaces"))):
            if _seq(_map(raw).get("accessConfigs")):
                yield f"networkInterfaces[{index}].accessConfigs gives an external IP"
    elif kind == "oci:Core/instance:Instance":
        assign = _map(props.get("createVnicDetails")).get("assignPublicIp")
        if assign is None:
            yield "createVnicDetails.assignPublicIp is unset (OCI assigns one on a public subnet)"
        elif _truthy(assign):
            yield "createVnicDetails.assignPublicIp is true"
    elif kind == "oci:Core/subnet:Subnet" and not _truthy(props.get("prohibitPublicIpOnVnic")):
        yield "prohibitPublicIpOnVnic is not true"


def no_public_ip(args: ResourceValidationArgs, report_violation: Report) -> None:
    cloud = _cloud(args.resource_type)
    if cloud is None:
        return
    allowed = [str(p) for p in _seq(args.get_config().get(PUBLIC_IP_CONFIG))]
    if cloud in allowed:
        return
    for finding in _public_ip_findings(args):
        report_violation(
            f"{_where(args)}: {finding}. Burst nodes reach the internet through NAT and are "
            "reached only over Tailscale. Fix: set the pool's public_ip: false, or, when the "
            f"pool really needs public IPs, add {cloud!r} to this policy's "
            f"{PUBLIC_IP_CONFIG} in policy/config/<stack>.json."
        )


# ---------------------------------------------------------------------------------------------
# Rule 5: GCP logins through OS Login only.

_GCP_METADATA = {
    "enable-oslogin": True,
    "block-project-ssh-keys": True,
    "serial-port-enable": False,
}


def gcp_os_login(args: ResourceValidationArgs, report_violation: Report) -> None:
    if args.resource_type not in (
        "gcp:compute/instance:Instance",
        "gcp:compute/instanceTemplate:InstanceTemplate",
    ):
        return
    metadata = _map(args.props.get("metadata"))
    for key, wanted in _GCP_METADATA.items():
        value = metadata.get(key)
        # Project metadata fills in what the instance leaves unset: every key is explicit.
        if value is None or _truthy(value) is not wanted:
            report_violation(
                f'{_where(args)}: metadata[{key!r}] must be "{"TRUE" if wanted else "FALSE"}" '
                f"(is {value!r})."
            )


# ---------------------------------------------------------------------------------------------
# Rules 6 and 7: cost tags, and the role tag of cloud resources.


def _decode(value: Any) -> Any:
    """Provider inputs reach the engine JSON-encoded when they are not strings."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def provider_default_tags(args: ResourceValidationArgs) -> dict[str, Any]:
    """The tags an explicit provider adds to every resource (aws defaultTags, gcp defaultLabels)."""
    provider = args.provider
    if provider is None or _cloud(args.resource_type) is None:
        return {}
    props = _map(provider.props)
    cloud = _cloud(provider.resource_type)
    if cloud == "aws":
        return dict(_map(_map(_decode(props.get("defaultTags"))).get("tags")))
    if cloud == "gcp":
        return dict(_map(_decode(props.get("defaultLabels"))))
    return {}


def _tag_sets(args: ResourceValidationArgs) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field, effective tags) of each place of the resource that carries cost tags."""
    cloud = _cloud(args.resource_type)
    if cloud is None or args.resource_type.startswith("pulumi:providers:"):
        return
    props, field = args.props, TAG_FIELD[cloud]
    defaults = provider_default_tags(args)
    if args.resource_type in TAGGABLE_TYPES or field in props:
        yield field, {**defaults, **_map(props.get(field))}
    if args.resource_type == "aws:ec2/instance:Instance":
        root = _map(props.get("rootBlockDevice"))
        volume_tags = {**_map(props.get("volumeTags")), **_map(root.get("tags"))}
        yield "rootBlockDevice.tags", {**defaults, **volume_tags}
    if args.resource_type == "gcp:compute/instance:Instance":
        params = _map(_map(props.get("bootDisk")).get("initializeParams"))
        yield "bootDisk.initializeParams.labels", {**defaults, **_map(params.get("labels"))}


def cost_tags_present(args: ResourceValidationArgs, report_violation: Report) -> None:
    for field, tags in _tag_sets(args):
        missing = [key for key in COST_TAG_KEYS if not tags.get(key)]
        if missing:
            report_violation(
                f"{_where(args)}: {field} lacks the cost tags {', '.join(missing)}. Fix: build "
                "the tags with ecoma_infra.program.tags.cost_tags()."
            )


_CLOUD_POOL_COMPONENT = re.compile(r"^ecoma:(aws|gcp|oci):")


def _under_cloud_pool(urn: str) -> bool:
    """The URN's type chain (`...::Stack$ecoma:aws:BurstPool$tailscale:...::name`)."""
    parts = urn.split("::")
    if len(parts) < 4:
        return False
    return any(_CLOUD_POOL_COMPONENT.match(t) for t in parts[2].split("$"))


def cloud_role_is_wkr(args: ResourceValidationArgs, report_violation: Report) -> None:
    kind = args.resource_type
    if kind.startswith("pulumi:providers:") and _cloud(kind):
        # A provider's default tags land on every resource it creates.
        props = _map(args.props)
        default = (
            _map(_map(_decode(props.get("defaultTags"))).get("tags"))
            if _cloud(kind) == "aws"
            else _map(_decode(props.get("defaultLabels")))
        )
        role = default.get(ROLE_TAG_KEY)
        if role is not None and role != CLOUD_ROLE:
            report_violation(
                f"{_where(args)}: default {ROLE_TAG_KEY}={role!r}; only {CLOUD_ROLE} nodes run "
                "on cloud providers (cpl, ops and sts stay on-prem)."
            )
        return
    for field, tags in _tag_sets(args):
        role = tags.get(ROLE_TAG_KEY)
        if role is not None and role != CLOUD_ROLE:
            report_violation(
                f"{_where(args)}: {field}[{ROLE_TAG_KEY}]={role!r}; only {CLOUD_ROLE} runs on a "
                "cloud provider (cpl, ops and sts stay on-prem)."
            )
    if kind == "tailscale:index/tailnetKey:TailnetKey" and _under_cloud_pool(args.urn):
        allowed = _seq(args.get_config().get("worker_tailscale_tags")) or (
            DEFAULT_WORKER_TAILSCALE_TAGS
        )
        for tag in _seq(args.props.get("tags")):
            if tag not in allowed:
                report_violation(
                    f"{_where(args)}: a cloud burst node's auth key carries {tag!r}; cloud nodes "
                    f"are workers and may only carry {', '.join(allowed)}."
                )


# ---------------------------------------------------------------------------------------------
# Rule 8: stateful Proxmox VMs are protected.


def stateful_vms_protected(args: ResourceValidationArgs, report_violation: Report) -> None:
    if args.resource_type != "proxmoxve:index/vmLegacy:VmLegacy":
        return
    tags = {str(t) for t in _seq(args.props.get("tags"))}
    roles = sorted(set(STATEFUL_ROLES) & tags)
    if REPLACING_TAG in tags:
        # `ecoma-infra replace` is rebuilding it: the one update that lifts the protection on
        # purpose (ecoma:proxmox.replacing), and puts it back when the new VM is up.
        return
    if roles and not (args.opts is not None and args.opts.protect):
        report_violation(
            f"{_where(args)} is a {'/'.join(roles)} machine (etcd or data lives on it) without "
            "the `protect` option: a replacement or destroy would lose its state. Fix: keep "
            "ecoma:proxmox.protect_stateful true."
        )


# ---------------------------------------------------------------------------------------------
# Rule 9: the SDN zone reaches every hypervisor it is deployed on.

VXLAN_MAX_MTU = 1450  # 1500 - the 50 bytes of a VXLAN header (pulumi_proxmoxve sdn/zone/vxlan.py)


def sdn_zone_spans_its_nodes(args: ResourceValidationArgs, report_violation: Report) -> None:
    kind, props, where = args.resource_type, args.props, _where(args)
    nodes = [str(n) for n in _seq(props.get("nodes"))]
    if kind == "proxmoxve:sdn/zone/simple:Simple" and len(nodes) > 1:
        report_violation(
            f"{where}: a Simple zone over {', '.join(nodes)}: its bridge is local to each "
            "hypervisor ('VM traffic is only local on each the node'), so VMs on different "
            "hypervisors cannot reach each other. Fix: ecoma:proxmox.sdn.kind vlan or vxlan."
        )
    elif kind == "proxmoxve:sdn/zone/vxlan:Vxlan":
        peers = _seq(props.get("peers"))
        if len(peers) < len(nodes):
            report_violation(
                f"{where}: {len(peers)} VXLAN peers for {len(nodes)} hypervisors; every "
                "hypervisor must be a peer. Fix: list each in ecoma:proxmox.sdn.peers."
            )
        mtu = props.get("mtu")
        if mtu is None or int(mtu) > VXLAN_MAX_MTU:
            report_violation(
                f"{where}: MTU {mtu} over VXLAN's {VXLAN_MAX_MTU} (50 bytes of encapsulation "
                "below a 1500 underlay). Fix: ecoma:proxmox.sdn.mtu."
            )


# ---------------------------------------------------------------------------------------------
# Rule 10: Tailscale auth keys are single-use, pre-authorized and short-lived; burst nodes'
# keys are ephemeral (their devices leave the tailnet when they go).

MAX_KEY_EXPIRY_CONFIG = "max_key_expiry_seconds"
DEFAULT_MAX_KEY_EXPIRY = 86_400


def auth_keys_short_lived(args: ResourceValidationArgs, report_violation: Report) -> None:
    if args.resource_type != "tailscale:index/tailnetKey:TailnetKey":
        return
    props, where = args.props, _where(args)
    limit = int(args.get_config().get(MAX_KEY_EXPIRY_CONFIG) or DEFAULT_MAX_KEY_EXPIRY)
    if _truthy(props.get("reusable")):
        report_violation(f"{where}: a reusable auth key; each node gets its own single-use key.")
    if not _truthy(props.get("preauthorized")):
        report_violation(f"{where}: the key is not pre-authorized; a node would wait for approval.")
    expiry = props.get("expiry")
    if expiry is None or int(expiry) > limit:
        report_violation(
            f"{where}: the key lives {expiry} s (the provider's default is 90 days), over "
            f"{limit} s. Fix: ecoma:tailscale.key_expiry."
        )
    if _under_cloud_pool(args.urn) and not _truthy(props.get("ephemeral")):
        report_violation(
            f"{where}: a burst node's key is not ephemeral; its device would stay in the "
            "tailnet after the node is destroyed."
        )


# ---------------------------------------------------------------------------------------------
# Rule 11: a VM boots from a disk it declares (the template's boot interface).


def vm_boots_a_declared_disk(args: ResourceValidationArgs, report_violation: Report) -> None:
    if args.resource_type != "proxmoxve:index/vmLegacy:VmLegacy":
        return
    interfaces = [str(_map(d).get("interface")) for d in _seq(args.props.get("disks"))]
    order = [str(o) for o in _seq(args.props.get("bootOrders"))]
    if not order or order[0] not in interfaces:
        report_violation(
            f"{_where(args)}: boots from {order[0] if order else 'the template default'}, "
            f"not from one of its disks ({', '.join(interfaces)}): a clone whose OS disk sits "
            "on another interface than the template's boots the unresized template disk. Fix: "
            "ecoma:proxmox.template_boot_interface."
        )


# ---------------------------------------------------------------------------------------------
# The pack's policies.

POLICIES: list[ResourceValidationPolicy] = [
    ResourceValidationPolicy(
        name="no-world-ingress",
        description=(
            "No AWS security group rule, GCP ingress firewall, or OCI security list / NSG rule "
            "open to 0.0.0.0/0 or ::/0, SSH included, except Tailscale's UDP 41641."
        ),
        validate=no_world_ingress,
        severity=Severity.CRITICAL,
    ),
    ResourceValidationPolicy(
        name="imds-v2-required",
        description=(
            "AWS instances and launch templates require IMDSv2 (httpTokens=required); OCI "
            "instances disable the legacy IMDS v1 endpoints."
        ),
        validate=imds_v2_required,
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="volumes-encrypted",
        description=(
            "AWS EBS volumes and instance root/EBS block devices are encrypted. GCP persistent "
            "disks and OCI block and boot volumes are always encrypted at rest with provider-"
            "managed keys, so only OCI's in-transit encryption (paravirtualized attachments and "
            "boot volumes) is checked there."
        ),
        validate=volumes_encrypted,
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="no-public-ip",
        description=(
            "Burst nodes get no public IP (AWS associatePublicIpAddress / mapPublicIpOnLaunch, "
            "GCP accessConfigs, OCI assignPublicIp / prohibitPublicIpOnVnic) unless the cloud is "
            "listed in allow_public_ip_providers (a pool with public_ip: true)."
        ),
        validate=no_public_ip,
        config_schema=PolicyConfigSchema(
            properties={
                PUBLIC_IP_CONFIG: {
                    "type": "array",
                    "items": {"type": "string", "enum": list(CLOUD_PROVIDERS)},
                    "default": [],
                    "description": "Clouds whose burst pool has public_ip: true.",
                }
            }
        ),
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="gcp-os-login",
        description=(
            "GCP instances log in through OS Login: enable-oslogin TRUE, project-wide SSH keys "
            "blocked, serial port off, each set explicitly on the instance."
        ),
        validate=gcp_os_login,
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="cost-tags",
        description=(
            "Every cloud resource that takes tags (aws tags, gcp labels, oci freeformTags; "
            "instance root/boot disks included) carries all cost tags: "
            + ", ".join(COST_TAG_KEYS)
            + ". A provider's default tags count."
        ),
        validate=cost_tags_present,
        severity=Severity.MEDIUM,
    ),
    ResourceValidationPolicy(
        name="cloud-role-is-wkr",
        description=(
            "cpl, ops and sts never run on a cloud provider: the ecoma-role tag of a cloud "
            "resource (or a cloud provider's default tags) is wkr, and a cloud burst node's "
            "Tailscale key carries only the worker tag."
        ),
        validate=cloud_role_is_wkr,
        config_schema=PolicyConfigSchema(
            properties={
                "worker_tailscale_tags": {
                    "type": "array",
                    "items": {"type": "string"},
                    "default": list(DEFAULT_WORKER_TAILSCALE_TAGS),
                    "description": "Tailscale tags a cloud node's key may carry.",
                }
            }
        ),
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="stateful-vms-protected",
        description=(
            "Proxmox VMs tagged cpl or sts (etcd, data) have the protect resource option, "
            "except the one `ecoma-infra replace` is rebuilding (tagged ecoma-replacing)."
        ),
        validate=stateful_vms_protected,
        severity=Severity.CRITICAL,
    ),
    ResourceValidationPolicy(
        name="sdn-zone-spans-its-nodes",
        description=(
            "A Proxmox Simple SDN zone is deployed on one hypervisor only (its traffic is local "
            "to each node); a VXLAN zone has every hypervisor as a peer and an MTU of at most "
            "1450."
        ),
        validate=sdn_zone_spans_its_nodes,
        severity=Severity.CRITICAL,
    ),
    ResourceValidationPolicy(
        name="auth-keys-short-lived",
        description=(
            "Tailscale auth keys are single-use, pre-authorized and expire within "
            "max_key_expiry_seconds; burst nodes' keys are ephemeral."
        ),
        validate=auth_keys_short_lived,
        config_schema=PolicyConfigSchema(
            properties={
                MAX_KEY_EXPIRY_CONFIG: {
                    "type": "integer",
                    "minimum": 60,
                    "default": DEFAULT_MAX_KEY_EXPIRY,
                    "description": "The longest an auth key may live, in seconds.",
                }
            }
        ),
        severity=Severity.HIGH,
    ),
    ResourceValidationPolicy(
        name="vm-boots-a-declared-disk",
        description=(
            "A Proxmox VM's first boot device is one of its declared disks (the template's "
            "boot interface), never a disk the provider would leave as cloned and unresized."
        ),
        validate=vm_boots_a_declared_disk,
        severity=Severity.HIGH,
    ),
]

ENFORCEMENT_LEVEL = EnforcementLevel.MANDATORY
