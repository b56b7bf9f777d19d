"""The stack configuration: one typed model of everything under the `ecoma:` namespace.

A stack file (`Pulumi.<stack>.yaml`) holds the config as Pulumi structured config:

    config:
      ecoma:network: {...}        # the address plan (defaults: the seed's plan)
      ecoma:proxmox: {...}        # endpoint, hypervisors, template 9000, a datastore per tier
      ecoma:ssh: {...}            # the cloud-init user and its keys
      ecoma:nodes: [...]          # on-prem nodes
      ecoma:burst: {...}          # burst pools per cloud provider
      ecoma:tailscale: {...}
      ecoma:k3s: {...}
      ecoma:k3s_token: {secure: ...}   # secrets: separate keys, always `secure:`

`parse_stack_config` turns the raw mapping into `StackConfig` in two passes: pydantic checks the
shape and types (unknown fields rejected), then `rules.check_rules` checks every rule of the
design that spans fields. Both passes report all their findings at once, each naming the file,
the node or section, the field and the fix. Nothing here touches Pulumi: `__main__.py` and the
CLI feed it the same mapping from different places.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
)

from ecoma_infra.stack.secret_shapes import PROVIDER_SECRET_KEYS

NAMESPACE = "ecoma"
# The config namespaces something reads besides ours: Pulumi's own (`pulumi:tags`,
# `pulumi:disable-default-providers`) and those of the providers this program uses.
OTHER_NAMESPACES: tuple[str, ...] = ("pulumi", *PROVIDER_SECRET_KEYS)
# What Pulumi reads from a stack file (pulumi.com/docs/iac/concepts/projects/stack-settings-file).
STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")

Tier = Literal["swap", "hot", "warm", "cold"]
Role = Literal["cpl", "ops", "sts", "wkr"]
Provider = Literal["proxmox", "aws", "gcp", "oci"]
CloudProvider = Literal["aws", "gcp", "oci"]
Filesystem = Literal["ext4", "xfs"]

TIERS: tuple[Tier, ...] = ("swap", "hot", "warm", "cold")
DATA_TIERS: tuple[Tier, ...] = ("hot", "warm", "cold")
ROLES: tuple[Role, ...] = ("cpl", "ops", "sts", "wkr")
PROVIDERS: tuple[Provider, ...] = ("proxmox", "aws", "gcp", "oci")
CLOUD_PROVIDERS: tuple[CloudProvider, ...] = ("aws", "gcp", "oci")
ON_PREM_ONLY_ROLES: tuple[Role, ...] = ("cpl", "ops", "sts")
MAX_DISKS = len(TIERS)

# RFC 1123 label: what a hostname, a Tailscale machine name and a k8s node name all accept.
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# At most 7 digits: every duration here is checked against a bound far below 10^7 units, and
# `99999999999d` would overflow `timedelta` before any bound is checked.
DURATION = r"^[1-9][0-9]{0,6}(s|m|h|d)$"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

Name = Annotated[str, StringConstraints(pattern=DNS_LABEL)]
Duration = Annotated[str, StringConstraints(pattern=DURATION)]
# A value of one word: no blank, no space, no control character.
Word = Annotated[str, StringConstraints(pattern=r"^\S+$")]
# A DNS name: labels of letters, digits and '-', joined by dots, 253 characters at most.
DNS_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
# A Proxmox storage id (PVE's `pve-storage-id` format: [a-z][a-z0-9-_.]*[a-z0-9], any case).
DATASTORE = r"^[A-Za-z][A-Za-z0-9_.-]*[A-Za-z0-9]$"
Datastore = Annotated[str, StringConstraints(pattern=DATASTORE)]
# Kubernetes supports clusters of at most 5,000 nodes ("Considerations for large clusters",
# kubernetes.io/docs/setup/best-practices/cluster-large); a pool's max beyond that is a typo.
MAX_CLUSTER_NODES = 5000
# Burst nodes are disposable capacity for a load peak (the seed); a lease longer than this is
# a static node in disguise, and the reaper would never see it end.
MAX_BURST_TTL = "30d"
# Tailscale auth keys expire after 1 to 90 days (pulumi_tailscale TailnetKey.expiry: "Defaults
# to 7776000 (90 days)", the API's maximum).
MAX_KEY_EXPIRY = "90d"
MAX_COOLDOWN = "1d"
MAX_CREDENTIAL_AGE = "3650d"
# A bound against typos, not a platform limit: 4 TiB is above the RAM of any hypervisor this
# project plans for, and 10^15 MB passes the provider's integer type but no host has it.
MAX_MEMORY_MB = 4 * 1024 * 1024


def _as_text(value: Any) -> Any:
    """Addresses are written as text: YAML's `true` or `168430091` would otherwise become
    0.0.0.1 or 10.10.10.11 without a word."""
    if isinstance(value, str | IPv4Address | IPv4Network):
        return value
    raise ValueError("write the address or network as text, e.g. 10.41.1.20 or 10.41.1.0/24")


Address = Annotated[IPv4Address, BeforeValidator(_as_text)]
Network = Annotated[IPv4Network, BeforeValidator(_as_text)]


def _at_most(limit: str) -> AfterValidator:
    def check(value: str) -> str:
        if duration_seconds(value) > duration_seconds(limit):
            raise ValueError(f"{value} is longer than the most allowed here, {limit}")
        return value

    return AfterValidator(check)


def burst_node_name(provider: str, index: int) -> str:
    """`wkr-aws-1`: a burst node's hostname, Tailscale machine name and k8s node name."""
    return f"wkr-{provider}-{index}"


def burst_node_index(provider: str, name: str) -> int | None:
    """1 for `wkr-aws-1` in the aws pool; None for a name that is not of that pool."""
    prefix = f"wkr-{provider}-"
    suffix = name.removeprefix(prefix)
    if suffix == name or not suffix.isdigit() or suffix.startswith("0"):
        return None
    return int(suffix)


def duration_seconds(value: str) -> int:
    """`90m` -> 5400. The model's pattern has already rejected anything else."""
    match = re.fullmatch(DURATION, value)
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30m, 4h, 1d)")
    return int(value[:-1]) * _DURATION_UNITS[value[-1]]


class _Model(BaseModel):
    # No NaN or infinity in any float: a NaN threshold passes every comparison as false.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class NetworkPlan(_Model):
    """The address plan: Tailscale, link-local, pods, services, the SDN subnet and the fixed
    addresses in them. Every default is the design's value (README, "The stack file")."""

    tailscale_cidr: Network = IPv4Network("100.64.0.0/10")
    link_local_cidr: Network = IPv4Network("169.254.0.0/16")
    pod_cidr: Network = IPv4Network("10.42.0.0/16")
    service_cidr: Network = IPv4Network("10.43.0.0/16")
    sdn_subnet: Network = IPv4Network("10.41.1.0/24")
    coredns_ip: Address = IPv4Address("10.43.0.10")
    node_local_dns_ip: Address = IPv4Address("169.254.20.10")
    kube_vip: Address = IPv4Address("10.41.1.254")
    sdn_gateway: Address = IPv4Address("10.41.1.1")
    # No default: nothing in the SDN serves DNS by itself (a Proxmox Simple zone runs dnsmasq
    # only with DHCP on, and an L2 zone has no Proxmox gateway at all), and cloud-init's apt and
    # the Tailscale install need a resolver on first boot. The stack file names them.
    dns_servers: list[Address] = Field(
        min_length=1,
        max_length=3,
        description="Resolvers that cloud-init writes for on-prem nodes, reachable from the SDN "
        "subnet on first boot (glibc uses at most 3).",
    )
    search_domain: str = Field(
        "ecoma.internal",
        pattern=DNS_NAME,
        max_length=253,
        description="The DNS search domain cloud-init writes for on-prem nodes.",
    )


SdnKind = Literal["simple", "vlan", "vxlan"]
VXLAN_OVERHEAD = 50  # bytes a VXLAN header costs (pulumi_proxmoxve sdn/zone/vxlan.py)
# Tailscale's MTU is 1280; its WireGuard packets add 80 bytes over IPv6 (60 over IPv4), so the
# underlay must carry at least 1360 for the overlay never to fragment.
MIN_UNDERLAY_MTU = 1360


class ProxmoxSdn(_Model):
    """The SDN zone the nodes' subnet lives in.

    `simple`: a bridge local to each hypervisor ("VM traffic is only local on each the node",
    pulumi_proxmoxve sdn/zone/simple.py); Proxmox runs the gateway and SNAT on it. One
    hypervisor only. `vlan`: a VLAN tag on a bridge that every hypervisor already has; nodes on
    different hypervisors share one layer 2 (kube-vip's ARP address works), and the site's
    router serves the gateway address (Proxmox deploys gateways only on layer-3 zones).
    `vxlan`: layer 2 over UDP between the hypervisors' addresses (`peers`), MTU 50 bytes below
    the underlay's; the gateway likewise lives on a router in that layer 2.
    """

    zone: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,7}$")] = "ecoma"
    vnet: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9]{0,7}$")] = "ecomanet"
    kind: SdnKind = Field(
        default="simple", description="simple (one hypervisor), vlan or vxlan (span hypervisors)."
    )
    bridge: str | None = Field(
        default=None,
        pattern=r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$",
        description="vlan: the bridge on every hypervisor that carries the VLAN, e.g. vmbr0.",
    )
    tag: StrictInt | None = Field(
        default=None, ge=1, le=16_777_215, description="vlan: the VLAN id (1-4094); vxlan: the VNI."
    )
    peers: dict[Name, Address] = Field(
        default_factory=dict,
        description="vxlan: every hypervisor's underlay address (the VXLAN peers).",
    )
    mtu: StrictInt | None = Field(
        default=None,
        ge=MIN_UNDERLAY_MTU,
        le=9000,
        description="vxlan: the zone's MTU, 50 below the underlay's (default 1450).",
    )

    @property
    def zone_mtu(self) -> int | None:
        if self.kind == "vxlan":
            return self.mtu or 1500 - VXLAN_OVERHEAD
        return self.mtu


class TemplateImage(_Model):
    """Template `template_vm_id` made by `up` from a Debian 12 cloud image: the seed's
    prerequisite as code. Absent (the default), the template is made by hand and `up` only
    clones it."""

    url: str = Field(
        pattern=r"^https://\S+/[^/\s]+\.qcow2$",
        description="A dated Debian 12 genericcloud qcow2 build, e.g. https://cloud.debian.org/"
        "images/cloud/bookworm/20250210-2019/debian-12-genericcloud-amd64-20250210-2019.qcow2 "
        "(not latest/: a new build there would no longer match the checksum).",
    )
    sha512: str = Field(
        pattern=r"^[0-9a-f]{128}$", description="The image's SHA-512, from SHA512SUMS beside it."
    )
    import_datastore: str = Field(
        "local",
        description="Directory datastore on the template node with the `import` content type "
        "(PVE 8.3+), which the image is downloaded to.",
    )
    datastore: str = Field(
        description="Datastore on the template node for the template's disk and cloud-init drive."
    )
    disk_size_gb: int = Field(
        8,
        ge=2,
        le=1024,
        description="The template's disk: at least the image's virtual size (Proxmox cannot "
        "shrink a disk); every node's OS disk is at least this.",
    )


class ProxmoxSettings(_Model):
    endpoint: Annotated[str, StringConstraints(pattern=r"^https://[^\s/]+(:[0-9]+)?/?$")]
    insecure: StrictBool = Field(False, description="Skip TLS verification (self-signed PVE).")
    hypervisors: list[Name] = Field(min_length=1, description="Proxmox node names.")
    template_vm_id: StrictInt = Field(
        9000, ge=100, le=999_999_999, description="Debian 12 cloud-image template."
    )
    template_node: Name | None = Field(
        None, description="Hypervisor holding the template (default: the first hypervisor)."
    )
    # The provider keeps a cloned disk only where the interface matches the template's: any other
    # interface gets a new blank disk (bpg provider, vm/disk CreateClone), so the OS disk must sit
    # on the interface the template boots from. No default: a wrong guess boots the unresized
    # template disk next to a blank one.
    template_boot_interface: Literal["virtio0", "scsi0"] = Field(
        description="The disk interface template 9000 boots from: virtio0, or scsi0 (the Proxmox "
        "wiki's cloud-init recipe)."
    )
    template_image: TemplateImage | None = Field(
        None,
        description="Set to have `up` make the template from this image (off when absent).",
    )
    ssh_username: str = Field(
        "root",
        pattern=r"^[a-z_][a-z0-9_-]{0,31}$",
        description="SSH user the provider uploads cloud-init snippets with.",
    )
    datastores: dict[Tier, Datastore] = Field(description="Datastore that holds each tier's disks.")
    snippets_datastore: Datastore = Field(
        "local", description="Datastore with the snippets content."
    )
    sdn: ProxmoxSdn = ProxmoxSdn()
    clone_parallelism: StrictInt = Field(
        2, ge=1, le=8, description="Clones at once: parallel clones can fail on storage locks."
    )
    protect_stateful: StrictBool = Field(
        True, description="Protect cpl and sts VMs against deletion and replacement."
    )
    unlock_disks: list[Name] = Field(
        default_factory=list,
        description="Protected nodes whose disk list `up` may change this time (then remove).",
    )
    replacing: list[Name] = Field(
        default_factory=list,
        description="Nodes `ecoma-infra replace` is rebuilding (it sets and clears this): their "
        "protection is lifted, and an sts node's new VM comes without its data disks, which "
        "replace re-attaches.",
    )


# One OpenSSH public key line: type, base64 blob, an optional comment; nothing after it (a
# newline would smuggle a second key into authorized_keys).
_PUBLIC_KEY = (
    r"^(?P<type>ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) (?P<blob>[A-Za-z0-9+/]+={0,2})( [^\x00-\x1f\x7f]*)?$"
)


def _public_key_blob_matches_type(line: str) -> str:
    """The blob of an OpenSSH key starts with its own type name (RFC 4253 6.6): a key line whose
    blob is not base64 or names another type was mangled or pasted wrong."""
    match = re.match(_PUBLIC_KEY, line)
    if match is None:  # the pattern reports it
        return line
    try:
        blob = base64.b64decode(match["blob"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's base64 part does not decode") from None
    length = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + length].decode("ascii", "replace") != match["type"]:
        raise ValueError(f"the key's base64 part is not a {match['type']} key")
    return line


PublicKey = Annotated[
    str, StringConstraints(pattern=_PUBLIC_KEY), AfterValidator(_public_key_blob_matches_type)
]


class SshSettings(_Model):
    user: Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")] = "ecoma"
    authorized_keys: list[PublicKey] = Field(min_length=1, max_length=100)


class Disk(_Model):
    tier: Tier
    size_gb: StrictInt = Field(ge=1, le=65536)
    os: StrictBool = Field(False, description="The OS disk: the root filesystem.")
    filesystem: Filesystem | None = Field(
        None, description="For hot/warm/cold data disks; default: ecoma:storage.filesystems."
    )


class Node(_Model):
    name: Name
    role: Role
    provider: Provider = "proxmox"
    hypervisor: Name
    vm_id: StrictInt = Field(ge=100, le=999_999_999)
    ip: Address
    cpu_cores: StrictInt = Field(ge=1, le=512)
    memory_mb: StrictInt = Field(ge=512, le=MAX_MEMORY_MB)
    disks: list[Disk] = Field(min_length=1)


class BurstPool(_Model):
    count: StrictInt = Field(0, ge=0, description="Burst nodes running now.")
    max: StrictInt = Field(
        ge=0, le=MAX_CLUSTER_NODES, description="The most nodes this pool may ever have."
    )
    region: str = Field(
        pattern=r"^[a-z]+(-[a-z0-9]+)+$",
        description="e.g. eu-central-1 (AWS), europe-west3 (GCP), eu-frankfurt-1 (OCI).",
    )
    zone: Word = Field(description="AZ, zone or availability domain.")
    instance_type: Word = Field(description="Instance type, machine type or shape.")
    ttl: Annotated[Duration, _at_most(MAX_BURST_TTL)] = Field(
        "4h",
        description=f"Time to live of a burst node, e.g. 90m, 4h, 1d (at most {MAX_BURST_TTL}).",
    )
    vpc_cidr: Network
    subnet_cidr: Network
    public_ip: StrictBool = Field(
        False, description="Give nodes a public IP for egress instead of a NAT gateway."
    )
    hourly_price_usd: StrictFloat = Field(ge=0, le=1000, description="Price of one node per hour.")
    disks: list[Disk] = Field(min_length=1)
    expires_at: dict[Name, AwareDatetime] = Field(
        default_factory=dict,
        description="Lease end of each running burst node (written by `ecoma-infra burst`).",
    )
    launched_at: dict[Name, AwareDatetime] = Field(
        default_factory=dict,
        description="When each running burst node was added (written by `ecoma-infra burst`).",
    )

    @property
    def ttl_seconds(self) -> int:
        return duration_seconds(self.ttl)

    @property
    def shared_hourly_price_usd(self) -> float:
        """What the pool costs per hour while it has any node, beyond the nodes themselves."""
        return 0.0

    def hourly_cost(self, count: int | None = None) -> float:
        """The pool's cost per hour with `count` nodes (default: its count now)."""
        count = self.count if count is None else count
        return count * self.hourly_price_usd + (self.shared_hourly_price_usd if count else 0.0)

    def node_names(self, provider: str) -> list[str]:
        """The running nodes: every leased node, then the lowest free indices up to `count`.

        Names are stable: removing `wkr-aws-1` of two leaves `wkr-aws-2` running, and the next
        node added takes the free `wkr-aws-1` again."""
        leased = set(self.expires_at) | set(self.launched_at)
        taken = {index for name in leased if (index := burst_node_index(provider, name))}
        names = set(leased)
        index = 1
        while len(names) < self.count:
            if index not in taken:
                names.add(burst_node_name(provider, index))
            index += 1
        return sorted(names, key=lambda name: burst_node_index(provider, name) or 0)


DEBIAN_AWS_ACCOUNT = "136693071363"  # the Debian cloud team's AWS account (wiki.debian.org/Cloud)


class AwsImage(_Model):
    """The AMI, looked up by owner and exact name in the pool's region (AMI ids differ per
    region). The name is pinned: an AMI change replaces every running burst node at the next
    `up`, without a drain, so a new Debian build is taken on purpose, not by surprise."""

    owner: str = Field(
        DEBIAN_AWS_ACCOUNT,
        pattern=r"^[0-9]{12}$",
        description="The AWS account that publishes the AMI (default: Debian's).",
    )
    name: str = Field(
        pattern=r"^[A-Za-z0-9()\[\]./'@_ -]{3,128}$",
        description="The exact AMI name, e.g. debian-12-amd64-20250610-2137 (no wildcards).",
    )


class AwsPool(BurstPool):
    image: AwsImage = Field(description="The Debian 12 AMI by owner and exact name.")
    role_arn: str | None = Field(
        None,
        # IAM role ARNs: arn:<partition>:iam::<account>:role/<path><name> (IAM identifiers).
        pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$",
        description="IAM role assumed with the CI's OIDC token (no long-lived keys).",
    )
    nat_hourly_price_usd: StrictFloat = Field(
        0.057,
        ge=0,
        description="NAT gateway and its public IPv4 per hour (eu-central-1: 0.052 + 0.005); "
        "the pool has them only while it has nodes and no public_ip.",
    )

    @property
    def shared_hourly_price_usd(self) -> float:
        return 0.0 if self.public_ip else self.nat_hourly_price_usd


class GcpPool(BurstPool):
    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    image: Word = Field(description="Image self-link or family, e.g. projects/debian-cloud/...")


class OciPool(BurstPool):
    compartment_id: str = Field(pattern=r"^ocid1\.(compartment|tenancy)\.")
    tenancy_ocid: str = Field(pattern=r"^ocid1\.tenancy\.")
    user_ocid: str = Field(pattern=r"^ocid1\.user\.", description="The CI's API user.")
    fingerprint: str = Field(
        pattern=r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$", description="Of the oci_private_key."
    )
    image: str = Field(pattern=r"^ocid1\.image\.", description="The image OCID.")
    ocpus: StrictFloat | None = Field(None, gt=0, le=512, description="For flexible shapes.")
    memory_gb: StrictFloat | None = Field(
        None, gt=0, le=MAX_MEMORY_MB / 1024, description="For flexible shapes."
    )


class MetricRule(_Model):
    """One load signal: a PromQL query that returns one number, and its hysteresis band."""

    query: str = Field(
        pattern=r"\S", max_length=10_000, description="PromQL returning one sample (or a scalar)."
    )
    scale_up_above: StrictFloat = Field(description="Add nodes while the value is above this.")
    scale_down_below: StrictFloat = Field(
        description="Remove nodes only while every signal is below its own value of this."
    )


class AutoscaleSettings(_Model):
    """What `ecoma-infra autoscale` reads and how it decides: three load signals (cpu, queue,
    latency) from Prometheus."""

    preference: list[CloudProvider] = Field(
        min_length=1,
        description="Providers in the order nodes are added; removed in the reverse order.",
    )
    cpu: MetricRule = Field(description="CPU use of the worker nodes (0..1).")
    queue: MetricRule = Field(description="Length of the work queue (messages).")
    latency: MetricRule = Field(description="Request latency (seconds, e.g. p95).")
    step: StrictInt = Field(1, ge=1, le=10, description="Nodes added or removed per decision.")
    cooldown: Annotated[Duration, _at_most(MAX_COOLDOWN)] = Field(
        "10m", description="No new decision this soon after a change."
    )
    min_nodes: StrictInt = Field(
        0, ge=0, le=MAX_CLUSTER_NODES, description="Burst nodes kept even when the load is low."
    )

    @property
    def cooldown_seconds(self) -> int:
        return duration_seconds(self.cooldown)

    def rules(self) -> dict[str, MetricRule]:
        return {"cpu": self.cpu, "queue": self.queue, "latency": self.latency}


class BurstSettings(_Model):
    budget_usd_per_hour: StrictFloat = Field(
        ge=0, le=100_000, description="Cap on all burst pools together."
    )
    aws: AwsPool | None = None
    gcp: GcpPool | None = None
    oci: OciPool | None = None
    autoscale: AutoscaleSettings | None = None
    last_scaled_at: AwareDatetime | None = Field(
        None, description="When a pool size last changed (written by `ecoma-infra burst`)."
    )

    def pools(self) -> dict[CloudProvider, BurstPool]:
        found: dict[CloudProvider, BurstPool | None] = {
            "aws": self.aws,
            "gcp": self.gcp,
            "oci": self.oci,
        }
        return {name: pool for name, pool in found.items() if pool is not None}


TagName = Annotated[str, StringConstraints(pattern=r"^tag:[a-z0-9][a-z0-9-]*$")]


class TailscaleSettings(_Model):
    tailnet: str = Field(
        pattern=r"^[A-Za-z0-9._@-]+$", description="Tailnet name, e.g. ecoma.io or '-'."
    )
    magic_dns_suffix: str = Field(
        pattern=r"^[a-z0-9-]+\.ts\.net$", description="e.g. tail1234.ts.net"
    )
    oauth_client_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="OAuth client id; its secret is the tailscale_oauth_client_secret key.",
    )
    tags: dict[Role, TagName] = Field(
        default_factory=lambda: {role: f"tag:ecoma-{role}" for role in ROLES}
    )
    subnet_routers: list[Name] = Field(
        min_length=1, description="On-prem nodes that advertise the SDN subnet."
    )
    key_expiry: Annotated[Duration, _at_most(MAX_KEY_EXPIRY)] = Field(
        "1h", description=f"Expiry of the nodes' auth keys (at most {MAX_KEY_EXPIRY})."
    )
    admins: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=list,
        description="Tailnet users (emails) in group:ecoma-admins: SSH to every node.",
    )

    @property
    def key_expiry_seconds(self) -> int:
        return duration_seconds(self.key_expiry)


K3S_VERSION = r"^v1\.[0-9]+\.[0-9]+\+k3s[0-9]+$"
# robfig/cron (what k3s schedules snapshots with): five fields, or a descriptor.
CRON = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every [0-9]+[hms]"
    r"|[0-9A-Za-z*/,?-]+( [0-9A-Za-z*/,?-]+){4})$"
)


class EtcdS3Target(_Model):
    """Where the servers also upload their etcd snapshots (k3s's --etcd-s3-* flags). The
    credentials are the secrets etcd_s3_access_key_id and etcd_s3_secret_access_key."""

    endpoint: str = Field(
        default="s3.amazonaws.com",
        pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        description="Host[:port] of the S3 API, without a scheme (k3s default s3.amazonaws.com).",
    )
    bucket: str = Field(
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="An existing bucket: k3s checks that it exists and never creates it.",
    )
    folder: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$|^$", description="Key prefix."
    )
    region: str = Field(default="us-east-1", min_length=1)
    insecure: bool = Field(
        default=False, description="Plain HTTP to the endpoint (never on the internet)."
    )
    skip_ssl_verify: bool = Field(
        default=False, description="Do not verify the endpoint's certificate."
    )


class EtcdSnapshotSettings(_Model):
    """Scheduled etcd snapshots of every server, kept on its disk and, with `s3`, in a bucket."""

    schedule_cron: Annotated[str, StringConstraints(pattern=CRON)] = Field(
        default="0 */12 * * *",
        description="When (k3s default: 00:00 and 12:00, the servers' time).",
    )
    retention: int = Field(default=5, ge=1, le=1000, description="Snapshots kept per server.")
    compress: bool = Field(default=False, description="Zip the snapshots.")
    s3: EtcdS3Target | None = Field(default=None, description="Also upload them to this S3 target.")


class K3sSettings(_Model):
    version: Annotated[str, StringConstraints(pattern=K3S_VERSION)] = Field(
        description="The k3s release every node runs; change it with `ecoma-infra upgrade`."
    )
    flannel_backend: Literal["vxlan", "wireguard-native", "host-gw"] = "vxlan"
    node_local_dns: StrictBool = True
    server_args: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Extra k3s server flags (no secrets: see k3s_token)."
    )
    agent_args: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list, description="Extra k3s agent flags (no secrets)."
    )
    etcd_snapshots: EtcdSnapshotSettings = EtcdSnapshotSettings()


DataTier = Literal["hot", "warm", "cold"]


def _default_filesystems() -> dict[DataTier, Filesystem]:
    return {"hot": "ext4", "warm": "ext4", "cold": "ext4"}


class StorageSettings(_Model):
    filesystems: dict[DataTier, Filesystem] = Field(default_factory=_default_filesystems)

    def filesystem_for(self, disk: Disk) -> str | None:
        """What the storage role puts on a disk; None for the OS disk (it is the root fs)."""
        if disk.os:
            return None
        if disk.tier == "swap":
            return "swap"
        return disk.filesystem or self.filesystems.get(disk.tier, "ext4")


# A Pulumi resource name of this program (`sts-1-vm`, `sdn-zone`, `burst-aws-vpc`) and a
# provider's import id (`pve1/5301`, `ecomanet/ecoma-10.41.1.0-24`, `vpc-0a1b2c3d`).
ResourceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,127}$")]
ImportId = Annotated[str, StringConstraints(pattern=r"^\S{1,256}$")]


class CredentialPolicy(_Model):
    """When a credential of the stack was last rotated and how old it may get."""

    rotated_at: AwareDatetime = Field(description="When it was last created or rotated.")
    max_age: Annotated[Duration, _at_most(MAX_CREDENTIAL_AGE)] = Field(
        "90d", description="Rotate before it is this old."
    )
    key_id: Word | None = Field(
        None,
        description="The provider's id of it, to read its expiry (Tailscale key id, "
        "Proxmox USER@REALM!TOKENID, OCI key fingerprint).",
    )

    @property
    def max_age_seconds(self) -> int:
        return duration_seconds(self.max_age)


class StackConfig(_Model):
    network: NetworkPlan
    proxmox: ProxmoxSettings
    ssh: SshSettings
    nodes: list[Node] = Field(min_length=1)
    burst: BurstSettings
    tailscale: TailscaleSettings
    k3s: K3sSettings
    storage: StorageSettings = StorageSettings()
    credentials: dict[str, CredentialPolicy] = Field(
        default_factory=dict,
        description="Rotation record per credential CI uses, keyed like the secret keys "
        "(and `k3s_agent_token`); read by `ecoma-infra credentials check`.",
    )
    adopt: dict[ResourceName, ImportId] = Field(
        default_factory=dict,
        description="Existing resources that `up` imports instead of creating (the `import` "
        "resource option): the resource's name, as `ecoma-infra preview --offline` shows it, "
        "-> the provider's import id. Written by `ecoma-infra migrate terraform state`; keep it "
        "while those resources live (the engine skips an id it has already imported).",
    )

    def nodes_with_role(self, role: Role) -> list[Node]:
        return [node for node in self.nodes if node.role == role]


# Secrets are separate config keys, read with `require_secret` and never fields of the model.
SECRET_KEYS: dict[str, str] = {
    "k3s_token": "k3s server token (secure K10... form or a random secret)",
    "k3s_agent_token": "k3s agent token, given to agents instead of the server token",
    "proxmox_api_token": "Proxmox API token, USER@REALM!TOKENID=UUID",
    "proxmox_ssh_private_key": "SSH key the Proxmox provider uploads cloud-init snippets with",
    "tailscale_oauth_client_secret": "Tailscale OAuth client secret (or tailscale_api_key)",
    "tailscale_api_key": "Tailscale API key (if no OAuth client is used)",
    "gcp_credentials": "GCP credentials JSON (service account or workload identity config)",
    "oci_private_key": "OCI API signing key (PEM)",
    "aws_web_identity_token": "the CI's OIDC token, exchanged for the AWS pool's role_arn",
    "aws_access_key_id": "AWS access key id (only without role_arn)",
    "aws_secret_access_key": "AWS secret access key (only without role_arn)",
    "etcd_s3_access_key_id": "access key id of the etcd snapshots' S3 target",
    "etcd_s3_secret_access_key": "secret key of the etcd snapshots' S3 target",
}

MODEL_KEYS: tuple[str, ...] = tuple(StackConfig.model_fields)


def required_secrets(config: StackConfig) -> list[str]:
    """The secret keys `pulumi up` needs for this stack."""
    needed = ["k3s_token", "k3s_agent_token", "proxmox_api_token", "proxmox_ssh_private_key"]
    needed.append(
        "tailscale_oauth_client_secret" if config.tailscale.oauth_client_id else "tailscale_api_key"
    )
    pools = config.burst.pools()
    if "gcp" in pools:
        needed.append("gcp_credentials")
    if "oci" in pools:
        needed.append("oci_private_key")
    if config.burst.aws is not None:
        if config.burst.aws.role_arn:
            needed.append("aws_web_identity_token")
        else:
            needed += ["aws_access_key_id", "aws_secret_access_key"]
    if config.k3s.etcd_snapshots.s3 is not None:
        needed += ["etcd_s3_access_key_id", "etcd_s3_secret_access_key"]
    return needed


def json_schema() -> dict[str, Any]:
    """JSON Schema of one stack file's `config:` block, for editors."""
    properties: dict[str, Any] = {}
    definitions: dict[str, Any] = {}
    model_schema = StackConfig.model_json_schema(ref_template="#/$defs/{model}")
    definitions.update(model_schema.pop("$defs", {}))
    for key, schema in model_schema["properties"].items():
        properties[f"{NAMESPACE}:{key}"] = schema
    secure = {
        "type": "object",
        "properties": {"secure": {"type": "string"}},
        "required": ["secure"],
        "additionalProperties": False,
    }
    for key, description in SECRET_KEYS.items():
        properties[f"{NAMESPACE}:{key}"] = {**secure, "description": description}
    required = [f"{NAMESPACE}:{key}" for key in model_schema.get("required", [])]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ecoma-infra stack file (Pulumi.<stack>.yaml)",
        "type": "object",
        "properties": {
            "secretsprovider": {"type": "string"},
            "encryptedkey": {"type": "string"},
            "encryptionsalt": {"type": "string"},
            "environment": {},
            "config": {
                "type": "object",
                "properties": properties,
                "required": required,
                "patternProperties": {rf"^({'|'.join(OTHER_NAMESPACES)}):.": {}},
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
        "required": ["config"],
        "$defs": definitions,
    }


def split_namespace(config_block: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `ecoma:`-prefixed keys into (model values, secret values); other namespaces dropped."""
    values: dict[str, Any] = {}
    secrets: dict[str, Any] = {}
    for full_key, value in config_block.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != NAMESPACE or not key:
            continue
        (secrets if key in SECRET_KEYS else values)[key] = value
    return values, secrets
