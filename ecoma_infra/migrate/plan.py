"""Which Terraform resources this stack adopts, with which import ids, and what the first `up`
will still change: the heart of `ecoma-infra migrate terraform state`.

Every resource the program declares comes from the offline preview (type, name, parent,
inputs), so an adopted name is exactly a name the program registers. Matching:

- a Proxmox VM by hypervisor and VM id (import id `<node>/<vm id>`, VmLegacy docstring, "Import");
- the SDN zone and vnet by id, the subnet by vnet and CIDR (import id `<vnet>/<subnet id>`);
- the AWS pool's VPC by CIDR and region, its subnet by VPC and CIDR, its internet gateway by VPC.

Burst workers are never adopted: Terraform must scale them to 0 first. Anything else in the state
is left alone with the reason. A state object that contradicts the stack (a VM id on another
hypervisor, a zone of another type, a disk the stack does not declare) is a blocker, never an
import; on a stateful node (cpl, sts) it stops the migration with an error naming the node.

What the first `up` changes is predicted by comparing the program's inputs with the Terraform
state, field by field, with what the bpg provider does on a change (proxmoxtf/resource/vm/vm.go
at v0.111: ForceNew fields replace, `rebootRequired` fields restart the VM). The prediction reads
the Terraform state, not the machine: `pulumi preview` with the imports is the authority, and the
engine refuses to replace a resource whose declaration still carries its import id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any, Literal

from ecoma_infra.errors import EcomaError
from ecoma_infra.migrate.tfstate import TfResource, TfState
from ecoma_infra.program.components.proxmox import STATEFUL_ROLES, USER_DATA_FIELD
from ecoma_infra.program.offline import PreviewResult, Recorded
from ecoma_infra.stack.model import StackConfig

# replace: ForceNew, the resource would be rebuilt; harm: `up` would fail or hurt the machine
# (a disk detached, a shrink); both block the migration. reboot: an update that restarts the VM.
# kept: differs, but the program does not apply it (ignore_changes).
Effect = Literal["replace", "harm", "reboot", "update", "create", "kept"]
BLOCKING: frozenset[str] = frozenset({"replace", "harm"})

VM = "proxmoxve:index/vmLegacy:VmLegacy"
VNET = "proxmoxve:sdn/vnet:Vnet"
SUBNET = "proxmoxve:sdn/subnet:Subnet"
ZONE_PREFIX = "proxmoxve:sdn/zone/"
AWS_VPC = "aws:ec2/vpc:Vpc"
AWS_SUBNET = "aws:ec2/subnet:Subnet"
AWS_IGW = "aws:ec2/internetGateway:InternetGateway"

TF_VM = "proxmox_virtual_environment_vm"
# bpg >= 0.100 added short names (proxmox_sdn_*) beside the deprecated long ones.
TF_ZONE = re.compile(r"^proxmox_(?:virtual_environment_)?sdn_zone_(?P<kind>[a-z]+)$")
TF_VNET = re.compile(r"^proxmox_(?:virtual_environment_)?sdn_vnet$")
TF_SUBNET = re.compile(r"^proxmox_(?:virtual_environment_)?sdn_subnet$")
TF_APPLIER = re.compile(r"^proxmox_(?:virtual_environment_)?sdn_applier$")
TF_FILE = re.compile(r"^proxmox_(?:virtual_environment_)?file$")
TF_BURST_INSTANCES = frozenset({"aws_instance", "google_compute_instance", "oci_core_instance"})

# VM blocks the program never declares: in the state, they change on the first `up`.
# ForceNew in bpg's schema (hostpci, usb, numa, amd_sev): the VM would be replaced.
VM_FORCE_NEW_BLOCKS = ("hostpci", "usb", "numa", "amd_sev")
# Removed on update, with a restart (vmUpdate sets rebootRequired): a UEFI VM loses its vars.
VM_REBOOT_BLOCKS = ("efi_disk", "tpm_state", "virtiofs", "rng", "audio_device")
# Top-level settings with a provider default the program keeps (bpg vm.go dv* constants), and
# whether a change restarts the VM.
VM_DEFAULTS: dict[str, tuple[Any, bool]] = {
    "acpi": (True, True),
    "bios": ("seabios", True),
    "machine": ("", True),
    "keyboard_layout": ("en-us", True),
    "kvm_arguments": ("", True),
    "tablet_device": (True, True),
    "hook_script_file_id": ("", False),
    "pool_id": ("", False),
}
SCSI_HARDWARE_DEFAULT = "virtio-scsi-pci"


# Resources the program never adopts, by kind (see `_kind`), and why.
LEFT_ALONE = {
    "deposed": "a deposed object (a failed replacement): never adopted",
    "data": "a data source: read-only, nothing to adopt",
    "applier": "an SDN applier cannot be imported (the provider has no import); the program's "
    "sdn-apply is created instead and applies the SDN once",
    "tailscale_tailnet_key": "a single-use auth key, used or expired; the program mints its own",
    "tailscale_acl": "the program's tailnet-policy-acl replaces the whole tailnet policy",
}


_KIND_PATTERNS = (
    ("zone", TF_ZONE),
    ("vnet", TF_VNET),
    ("subnet", TF_SUBNET),
    ("applier", TF_APPLIER),
    ("file", TF_FILE),
)
_KIND_TYPES = {
    TF_VM: "vm",
    **dict.fromkeys(TF_BURST_INSTANCES, "burst"),
    **dict.fromkeys(("aws_vpc", "aws_subnet", "aws_internet_gateway"), "aws"),
    **{kind: kind for kind in ("tailscale_tailnet_key", "tailscale_acl")},
}


def _kind(resource: TfResource) -> str:
    """What a state resource is to the migration."""
    if resource.deposed:
        return "deposed"
    if not resource.managed:
        return "data"
    found = next((kind for kind, pattern in _KIND_PATTERNS if pattern.match(resource.type)), None)
    return found or _KIND_TYPES.get(resource.type, "other")


class MigrationRefusedError(EcomaError):
    """Adopting the state would replace or break a stateful node: nothing is written."""


@dataclass(frozen=True)
class Change:
    """One thing the first `up` does to an adopted (or a new) resource."""

    resource: str
    field: str
    before: Any
    after: Any
    effect: Effect
    safe: bool
    why: str


@dataclass(frozen=True)
class Adopted:
    name: str
    type: str
    import_id: str
    address: str


@dataclass(frozen=True)
class LeftAlone:
    address: str
    reason: str


@dataclass(frozen=True)
class Blocker:
    """A state object that contradicts the stack: the migration does not adopt anything."""

    subject: str  # a node, a resource name or a Terraform address
    problem: str
    fix: str
    stateful: bool = False
    resource: str = ""  # the program's resource it concerns, if any


@dataclass
class MigrationPlan:
    stack: str
    state_source: str
    adopted: list[Adopted] = field(default_factory=list)
    left_alone: list[LeftAlone] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    blockers: list[Blocker] = field(default_factory=list)

    @property
    def import_ids(self) -> dict[str, str]:
        return {a.name: a.import_id for a in sorted(self.adopted, key=lambda a: a.name)}

    def refusal(self) -> MigrationRefusedError | None:
        stateful = [b for b in self.blockers if b.stateful]
        if not stateful:
            return None
        lines = [f"  - {b.subject}: {b.problem}. Fix: {b.fix}" for b in stateful]
        nodes = ", ".join(sorted({b.subject for b in stateful}))
        return MigrationRefusedError(
            f"{self.state_source}: adopting this state would replace or break stateful "
            f"node(s) {nodes}; nothing was written\n" + "\n".join(lines)
        )


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Declared:
    """What the preview declares, indexed for matching."""

    records: dict[str, Recorded]
    vms: dict[tuple[str, int], Recorded]  # (hypervisor, vm id) -> VM
    vm_ids: dict[int, Recorded]
    vm_names: dict[str, Recorded]  # node name -> VM
    stateful: set[str]  # node names


def plan_adoption(
    config: StackConfig, preview: PreviewResult, state: TfState, *, as_adopted: bool = True
) -> MigrationPlan:
    """The plan for `state` against the program's `preview`.

    With `as_adopted`, a VM is judged as the program treats an adopted VM (its user data kept,
    see ProxmoxNode), since `preview` may come from the stack before the adoption; without it,
    only the preview's own options count (to check a preview that applies the imports)."""
    declared = _declare(config, preview)
    plan = MigrationPlan(preview.stack, state.source)
    planner = _Planner(config, declared, state, plan, as_adopted=as_adopted)
    planner.run()
    planner.creates()
    return plan


def _declare(config: StackConfig, preview: PreviewResult) -> _Declared:
    records: dict[str, Recorded] = {}
    for record in preview.records:
        if record.custom and not record.type.startswith("pulumi:providers:"):
            if record.name in records:
                raise EcomaError(
                    f"the program declares two resources named {record.name}: adoption by name "
                    "would be ambiguous (a bug of the program)"
                )
            records[record.name] = record
    vms = [r for r in records.values() if r.type == VM]
    stateful = {n.name for n in config.nodes if n.role in STATEFUL_ROLES}
    return _Declared(
        records=records,
        vms={(str(r.inputs["nodeName"]), _int(r.inputs["vmId"])): r for r in vms},
        vm_ids={_int(r.inputs["vmId"]): r for r in vms},
        vm_names={str(r.inputs["name"]): r for r in vms},
        stateful=stateful,
    )


class _Planner:
    def __init__(
        self,
        config: StackConfig,
        declared: _Declared,
        state: TfState,
        plan: MigrationPlan,
        *,
        as_adopted: bool,
    ) -> None:
        self.config = config
        self.declared = declared
        self.state = state
        self.plan = plan
        self.as_adopted = as_adopted
        self.used: set[str] = set()
        self.zone_pending = False
        self.snippets: dict[str, list[str]] = {}  # snippet file id -> adopted nodes using it

    # ------------------------------------------------------------------ helpers

    def adopt(self, record: Recorded, import_id: str, resource: TfResource) -> None:
        if record.name in self.used:
            self.block(
                record.name,
                f"two Terraform resources match it ({resource.address} is the second)",
                "remove the duplicate from the Terraform state (terraform state rm)",
            )
            return
        self.used.add(record.name)
        self.plan.adopted.append(Adopted(record.name, record.type, import_id, resource.address))

    def leave(self, resource: TfResource, reason: str) -> None:
        self.plan.left_alone.append(LeftAlone(resource.address, reason))

    def block(
        self, subject: str, problem: str, fix: str, *, stateful: bool = False, resource: str = ""
    ) -> None:
        self.plan.blockers.append(Blocker(subject, problem, fix, stateful, resource or subject))

    def change(self, resource: str, path: str, before: Any, after: Any, **kind: Any) -> None:
        self.plan.changes.append(Change(resource, path, before, after, **kind))

    # ------------------------------------------------------------------ the state

    def run(self) -> None:
        groups: dict[str, list[TfResource]] = {}
        for resource in self.state.resources:
            groups.setdefault(_kind(resource), []).append(resource)
        for resource in groups.get("zone", []):
            zone_type = TF_ZONE.match(resource.type)
            self.zone(resource, zone_type.group("kind") if zone_type else "")
        for resource in groups.get("vnet", []):
            self.vnet(resource)
        for resource in groups.get("subnet", []):
            self.sdn_subnet(resource)
        for resource in groups.get("vm", []):
            self.vm(resource)
        self.aws(groups.get("aws", []))
        for resource in groups.get("file", []):
            self.file(resource)
        for resource in groups.get("burst", []):
            self.block(
                resource.address,
                "a burst worker still runs under Terraform; burst workers are not adopted",
                "scale the pool to 0 with Terraform (count = 0, terraform apply), then migrate; "
                "grow it again with `ecoma-infra burst`",
            )
        for kind, reason in LEFT_ALONE.items():
            for resource in groups.get(kind, []):
                self.leave(resource, reason)
        for resource in groups.get("other", []):
            self.leave(resource, f"not declared by this program ({resource.type})")

    # ------------------------------------------------------------------ Proxmox VMs

    def vm(self, resource: TfResource) -> None:
        values = resource.values
        node_name, vm_id = values.get("node_name"), values.get("vm_id")
        if not isinstance(node_name, str) or not isinstance(vm_id, int):
            raise EcomaError(
                f"{self.state.source}: {resource.address}: node_name and vm_id missing or of the "
                "wrong type. Fix: give the state of the bpg/proxmox provider"
            )
        if values.get("template"):
            self.leave(resource, f"the template VM {vm_id}: never managed by the program")
            return
        name = str(values.get("name", ""))
        record = self.declared.vms.get((node_name, vm_id))
        if record is None:
            self.unmatched_vm(resource, node_name, vm_id, name)
            return
        node = str(record.inputs["name"])
        stateful = node in self.declared.stateful
        if resource.tainted:
            self.block(
                node,
                f"{resource.address} is tainted in Terraform (a create that failed half-way)",
                "check the VM by hand, then `terraform untaint` it or remove it",
                stateful=stateful,
                resource=record.name,
            )
            return
        before = len(self.plan.blockers)
        ignored = set(record.ignore_changes) | ({USER_DATA_FIELD} if self.as_adopted else set())
        changes = vm_changes(record, values, ignored)
        for change in changes:
            if change.effect in BLOCKING:
                verb = "replace" if change.effect == "replace" else "harm"
                self.block(
                    node,
                    f"adopting VM {vm_id} would {verb} it: {change.field} "
                    f"{_show(change.before)} -> {_show(change.after)} ({change.why})",
                    "make the stack match the machine, or change the machine first",
                    stateful=stateful,
                    resource=record.name,
                )
        self.boot_disk(node, record, values, stateful)
        if len(self.plan.blockers) > before:
            return
        self.plan.changes.extend(c for c in changes if c.effect not in BLOCKING)
        self.adopt(record, f"{node_name}/{vm_id}", resource)
        user_data = _first(values, "initialization").get("user_data_file_id")
        if user_data:
            self.snippets.setdefault(str(user_data), []).append(node)

    def boot_disk(
        self, node: str, record: Recorded, values: Mapping[str, Any], stateful: bool
    ) -> None:
        boot = self.config.proxmox.template_boot_interface
        interfaces = {str(d.get("interface")) for d in _blocks(values, "disk")}
        if boot not in interfaces:
            self.block(
                node,
                f"the VM has no disk on {boot}, the template boot interface of the stack (it has "
                f"{', '.join(sorted(interfaces)) or 'no disk'}); the first `up` would boot it "
                "from nothing",
                "set ecoma:proxmox.template_boot_interface to the interface the VMs boot from",
                stateful=stateful,
                resource=record.name,
            )

    def unmatched_vm(self, resource: TfResource, node_name: str, vm_id: int, name: str) -> None:
        same_id = self.declared.vm_ids.get(vm_id)
        same_name = self.declared.vm_names.get(name)
        if same_id is not None:
            node = str(same_id.inputs["name"])
            self.block(
                node,
                f"VM {vm_id} is on {node_name} in Terraform, the stack puts {node} on "
                f"{same_id.inputs['nodeName']}: adopting it there would replace it (node_name "
                "is ForceNew), and creating it would collide on the VM id",
                f"set the node's hypervisor to {node_name}, or migrate the VM to "
                f"{same_id.inputs['nodeName']} in Proxmox first",
                stateful=node in self.declared.stateful,
                resource=same_id.name,
            )
        elif same_name is not None:
            node = str(same_name.inputs["name"])
            self.block(
                node,
                f"a VM named {name} is VM {vm_id} on {node_name} in Terraform; the stack "
                f"declares VM {_int(same_name.inputs['vmId'])} on {same_name.inputs['nodeName']}: "
                "`up` would clone a second machine with the same name and address",
                f"set the node's vm_id to {vm_id} and hypervisor to {node_name}",
                stateful=node in self.declared.stateful,
                resource=same_name.name,
            )
        else:
            self.leave(
                resource,
                f"VM {vm_id} ({name or 'unnamed'}) on {node_name} is not in ecoma:nodes: it keeps "
                "running, unmanaged; add it to the stack to adopt it, or remove it from the "
                "Terraform state",
            )

    def file(self, resource: TfResource) -> None:
        if str(resource.values.get("id", "")) in self.snippets:
            self.leave(
                resource,
                "cloud-init user data that an adopted VM boots from: keep the file on the "
                "hypervisor (Proxmox reads it at every start), remove it from the Terraform "
                "state only",
            )
        else:
            self.leave(resource, "a file no adopted VM uses; the program uploads its own")

    # ------------------------------------------------------------------ SDN

    def zone(self, resource: TfResource, kind: str) -> None:
        record = self.declared.records.get("sdn-zone")
        zone_id = resource.values.get("id")
        if record is None or zone_id != record.inputs.get("resourceId"):
            self.leave(resource, f"SDN zone {zone_id} is not the stack's zone")
            return
        declared_kind = record.type.removeprefix(ZONE_PREFIX).split(":")[0]
        if kind != declared_kind:
            self.block(
                record.name,
                f"zone {zone_id} is a {kind} zone in Terraform, the stack declares a "
                f"{declared_kind} zone; a zone's type cannot change in place (the VMs on it "
                "would lose their network while it is recreated)",
                f"set ecoma:proxmox.sdn.kind to {kind}, or rebuild the zone in a maintenance "
                "window outside this migration",
            )
            return
        values = resource.values
        inputs = record.inputs
        if sorted(values.get("nodes") or []) != sorted(inputs.get("nodes") or []):
            self.change(
                record.name,
                "nodes",
                sorted(values.get("nodes") or []),
                sorted(inputs.get("nodes") or []),
                effect="update",
                safe=True,
                why="the hypervisors the zone is deployed on (applied by sdn-apply)",
            )
        for key, why in (
            ("bridge", "re-bridges the zone: its VMs lose the network until the SDN is applied"),
            ("ipam", "another IPAM for the zone's subnets"),
            ("mtu", "another MTU for every VM on the zone"),
        ):
            if (
                key in inputs
                and inputs[key] is not None
                and _norm(values.get(key)) != _norm(inputs[key])
            ):
                self.change(
                    record.name, key, values.get(key), inputs[key],
                    effect="update", safe=False, why=why,
                )  # fmt: skip
        if values.get("pending"):
            self.zone_pending = True
        self.adopt(record, str(zone_id), resource)

    def vnet(self, resource: TfResource) -> None:
        record = self.declared.records.get("sdn-vnet")
        vnet_id = resource.values.get("id")
        if record is None or vnet_id != record.inputs.get("resourceId"):
            self.leave(resource, f"SDN vnet {vnet_id} is not the stack's vnet")
            return
        values, inputs = resource.values, record.inputs
        if values.get("zone") != inputs.get("zone"):
            self.change(
                record.name, "zone", values.get("zone"), inputs.get("zone"), effect="update",
                safe=False, why="moves the vnet (and every VM on it) to another zone",
            )  # fmt: skip
        if _norm(values.get("tag")) != _norm(inputs.get("tag")):
            self.change(
                record.name, "tag", values.get("tag"), inputs.get("tag"), effect="update",
                safe=False, why="re-tags the VLAN/VNI: the VMs lose the network until the "
                "switches and the router carry the new tag",
            )  # fmt: skip
        self.adopt(record, str(vnet_id), resource)

    def sdn_subnet(self, resource: TfResource) -> None:
        record = self.declared.records.get("sdn-subnet")
        values = resource.values
        if (
            record is None
            or values.get("vnet") != record.inputs.get("vnet")
            or not _same_network(values.get("cidr"), record.inputs.get("cidr"))
        ):
            self.leave(
                resource,
                f"SDN subnet {values.get('cidr')} on vnet {values.get('vnet')} is not the "
                "stack's subnet: it stays in Proxmox",
            )
            return
        inputs = record.inputs
        if values.get("gateway") != inputs.get("gateway"):
            self.change(
                record.name, "gateway", values.get("gateway"), inputs.get("gateway"),
                effect="update", safe=False,
                why="the nodes' default route points at the old gateway until they change",
            )  # fmt: skip
        if bool(values.get("snat")) != bool(inputs.get("snat")):
            self.change(
                record.name, "snat", values.get("snat"), inputs.get("snat"), effect="update",
                safe=False, why="turns SNAT on the zone's gateway on or off: outbound traffic",
            )  # fmt: skip
        # The subnet's import id is `<vnet>/<canonical id>` (pulumi_proxmoxve sdn/subnet.py).
        self.adopt(record, f"{values.get('vnet')}/{values.get('id')}", resource)

    # ------------------------------------------------------------------ AWS networks

    def aws(self, resources: list[TfResource]) -> None:
        pool = self.config.burst.aws
        vpcs = [r for r in resources if r.type == "aws_vpc"]
        subnets = [r for r in resources if r.type == "aws_subnet"]
        gateways = [r for r in resources if r.type == "aws_internet_gateway"]
        vpc_record = self.declared.records.get("burst-aws-vpc")
        matched_vpc: TfResource | None = None
        for vpc in vpcs:
            if (
                pool is not None
                and vpc_record is not None
                and matched_vpc is None
                and _same_network(vpc.values.get("cidr_block"), str(pool.vpc_cidr))
                and _region(vpc) in (None, pool.region)
            ):
                matched_vpc = vpc
                self.aws_vpc(vpc_record, vpc)
            else:
                self.leave(vpc, "not the AWS pool's VPC (another CIDR or region)")
        subnet_record = self.declared.records.get("burst-aws-subnet")
        for subnet in subnets:
            if (
                pool is not None
                and subnet_record is not None
                and matched_vpc is not None
                and subnet.values.get("vpc_id") == matched_vpc.values.get("id")
                and _same_network(subnet.values.get("cidr_block"), str(pool.subnet_cidr))
            ):
                self.aws_subnet(subnet_record, subnet)
            else:
                self.leave(subnet, "not the AWS pool's subnet (another VPC or CIDR)")
        igw_record = self.declared.records.get("burst-aws-igw")
        for gateway in gateways:
            if (
                igw_record is not None
                and matched_vpc is not None
                and gateway.values.get("vpc_id") == matched_vpc.values.get("id")
            ):
                # A VPC takes one internet gateway: the program's would collide, so adopt it.
                self.tags(igw_record, gateway)
                self.adopt(igw_record, str(gateway.values.get("id")), gateway)
            else:
                self.leave(gateway, "not attached to the AWS pool's VPC")

    def aws_vpc(self, record: Recorded, resource: TfResource) -> None:
        values, inputs = resource.values, record.inputs
        for key, tf_key in (
            ("enableDnsSupport", "enable_dns_support"),
            ("enableDnsHostnames", "enable_dns_hostnames"),
        ):
            if key in inputs and values.get(tf_key) != inputs[key]:
                self.change(
                    record.name, tf_key, values.get(tf_key), inputs[key], effect="update",
                    safe=True, why="a VPC attribute, changed in place",
                )  # fmt: skip
        self.tags(record, resource)
        self.adopt(record, str(values.get("id")), resource)

    def aws_subnet(self, record: Recorded, resource: TfResource) -> None:
        values, inputs = resource.values, record.inputs
        zone = values.get("availability_zone")
        if zone != inputs.get("availabilityZone"):
            self.block(
                record.name,
                f"the Terraform subnet is in {zone}, the stack's pool zone is "
                f"{inputs.get('availabilityZone')}; availability_zone is ForceNew",
                f"set ecoma:burst.aws.zone to {zone}",
            )
            return
        if bool(values.get("map_public_ip_on_launch")) != bool(inputs.get("mapPublicIpOnLaunch")):
            self.change(
                record.name, "map_public_ip_on_launch", values.get("map_public_ip_on_launch"),
                inputs.get("mapPublicIpOnLaunch"), effect="update", safe=True,
                why="new instances get (or no longer get) a public IP; the pool is at 0",
            )  # fmt: skip
        self.tags(record, resource)
        self.adopt(record, str(values.get("id")), resource)

    def tags(self, record: Recorded, resource: TfResource) -> None:
        before = resource.values.get("tags") or {}
        after = record.inputs.get("tags") or {}
        if before != after:
            self.change(
                record.name, "tags", before, after, effect="update", safe=True,
                why="cost tags, changed in place",
            )  # fmt: skip

    # ------------------------------------------------------------------ creates

    def creates(self) -> None:
        """Everything the program declares that this state does not give: created by `up`."""
        adopted = {a.name for a in self.plan.adopted}
        blocked = {b.resource for b in self.plan.blockers}
        for record in sorted(self.declared.records.values(), key=lambda r: (r.type, r.name)):
            if record.name in adopted or record.name in blocked:
                continue
            safe, why = _create_verdict(record, self.zone_pending)
            self.change(
                record.name, "(new)", None, record.type, effect="create", safe=safe, why=why
            )


# --------------------------------------------------------------------------- VM comparison


RESTART = (
    "the provider restarts the VM to apply it (reboot_after_update defaults to true), in "
    "parallel with other VMs: apply it by hand first, one node at a time (docs/migration.md, "
    "step 4), or drain the node and accept the restart"
)
# Program input -> (Terraform path, effect, safe, why) for the VM settings compared one to one.
VM_SETTINGS: dict[str, tuple[tuple[str, ...], Effect, bool, str]] = {
    "name": (("name",), "update", True, "the VM's name in Proxmox"),
    "description": (("description",), "update", True, "text only"),
    "cpu.cores": (("cpu", "cores"), "reboot", False, RESTART),
    "cpu.type": (("cpu", "type"), "reboot", False, RESTART),
    "memory.floating": (("memory", "floating"), "reboot", False, RESTART),
    "agent.enabled": (("agent", "enabled"), "reboot", False, RESTART),
    "agent.timeout": (("agent", "timeout"), "reboot", False, RESTART),
    "operatingSystem.type": (("operating_system", "type"), "reboot", False, RESTART),
    "onBoot": (("on_boot",), "update", True, "start at the hypervisor's boot"),
    "started": (("started",), "update", True, "the VM is kept running"),
    "protection": (("protection",), "update", True, "Proxmox refuses to delete it"),
    "stopOnDestroy": (("stop_on_destroy",), "update", True, "a provider setting only"),
}


def vm_changes(record: Recorded, values: Mapping[str, Any], ignored: set[str]) -> list[Change]:
    return [
        *_vm_settings(record, values),
        *_vm_network(record.name, record.inputs, values),
        *_vm_initialization(record.name, record.inputs, values, ignored),
        *_vm_disks(record.name, record.inputs, values, ignored),
        *_vm_undeclared(record.name, values),
    ]


def _vm_settings(record: Recorded, values: Mapping[str, Any]) -> list[Change]:
    inputs, name = record.inputs, record.name
    found: list[Change] = []
    for path, (tf_path, effect, safe, why) in VM_SETTINGS.items():
        after = _get(inputs, path.split("."))
        before = _tf(values, tf_path)
        if after is not None and _norm(before) != _norm(after):
            found.append(Change(name, path, before, after, effect, safe, why))
    tags_before, tags_after = sorted(values.get("tags") or []), sorted(inputs.get("tags") or [])
    if tags_before != tags_after:
        found.append(Change(name, "tags", tags_before, tags_after, "update", True, "labels"))
    memory_before = _norm(_tf(values, ("memory", "dedicated")))
    memory_after = _norm(_get(inputs, ["memory", "dedicated"]))
    if memory_after is not None and memory_before != memory_after:
        # Only a memory increase is hot-plugged, and only with `memory` in hotplug (vmUpdate).
        hotplug = "memory" in str(values.get("hotplug") or "")
        grows = isinstance(memory_before, int) and memory_after > memory_before
        memory_effect: Effect = "update" if grows and hotplug else "reboot"
        why = "hot-plugged" if memory_effect == "update" else RESTART
        found.append(
            Change(name, "memory.dedicated", memory_before, memory_after, memory_effect, grows, why)
        )
    boot_before, boot_after = values.get("boot_order") or [], inputs.get("bootOrders") or []
    if boot_after and list(boot_before) != list(boot_after):
        found.append(Change(name, "bootOrders", boot_before, boot_after, "reboot", False, RESTART))
    scsi_before = values.get("scsi_hardware") or SCSI_HARDWARE_DEFAULT
    scsi_after = inputs.get("scsiHardware") or SCSI_HARDWARE_DEFAULT
    if scsi_before != scsi_after:
        found.append(
            Change(name, "scsiHardware", scsi_before, scsi_after, "reboot", False, RESTART)
        )
    return found


def _vm_undeclared(name: str, values: Mapping[str, Any]) -> list[Change]:
    """What the VM has that the program never declares: reset or removed by the first `up`."""
    found: list[Change] = []
    for block in VM_FORCE_NEW_BLOCKS:
        if _blocks(values, block):
            found.append(
                Change(name, block, _blocks(values, block), [], "replace", False, "ForceNew")
            )
    for block in VM_REBOOT_BLOCKS:
        if _blocks(values, block):
            why = f"removed; {RESTART}"
            found.append(Change(name, block, _blocks(values, block), [], "reboot", False, why))
    for key, (default, reboots) in VM_DEFAULTS.items():
        if key in values and values[key] is not None and _norm(values[key]) != default:
            why = "the program keeps the provider's default" + (f"; {RESTART}" if reboots else "")
            effect: Effect = "reboot" if reboots else "update"
            found.append(Change(name, key, values[key], default, effect, False, why))
    return found


def _vm_network(name: str, inputs: Mapping[str, Any], values: Mapping[str, Any]) -> list[Change]:
    found = []
    declared = list(inputs.get("networkDevices") or [])
    present = _blocks(values, "network_device")
    for index, device in enumerate(declared):
        current = present[index] if index < len(present) else {}
        for key, tf_key in (("bridge", "bridge"), ("model", "model"), ("mtu", "mtu")):
            after = device.get(key)
            if after is not None and _norm(current.get(tf_key)) != _norm(after):
                found.append(
                    Change(
                        name, f"networkDevices[{index}].{key}", current.get(tf_key), after,
                        "update", False, "re-plugs the VM's network card: a network outage",
                    )
                )  # fmt: skip
    for index in range(len(declared), len(present)):
        found.append(
            Change(
                name, f"networkDevices[{index}]", present[index].get("bridge"), None, "reboot",
                False, f"a network card the stack does not declare is removed; {RESTART}",
            )
        )  # fmt: skip
    return found


def _vm_initialization(
    name: str, inputs: Mapping[str, Any], values: Mapping[str, Any], ignored: set[str]
) -> list[Change]:
    found = []
    declared = inputs.get("initialization") or {}
    current = _first(values, "initialization")
    # Proxmox derives the cloud-init instance-id from the user data and the network config
    # (qemu-server Cloudinit.pm, nocloud_gen_metadata): a change runs first boot again at the
    # next start (new SSH host keys, the old user data's commands again).
    first_boot = (
        "changes the cloud-init network config and so the instance-id: at the restart the "
        "provider does, cloud-init runs first boot again (new SSH host keys, the old user data "
        "once more); make the stack match the machine instead"
    )
    ip_before = _first(_first(current, "ip_config"), "ipv4")
    ip_after = ((declared.get("ipConfigs") or [{}])[0] or {}).get("ipv4") or {}
    dns_before = _first(current, "dns")
    dns_after = declared.get("dns") or {}
    prefix = "initialization"
    for path, before, after in (
        (f"{prefix}.ipConfigs[0].ipv4.address", ip_before.get("address"), ip_after.get("address")),
        (f"{prefix}.ipConfigs[0].ipv4.gateway", ip_before.get("gateway"), ip_after.get("gateway")),
        (f"{prefix}.dns.servers", list(dns_before.get("servers") or []), dns_after.get("servers")),
        (f"{prefix}.dns.domain", dns_before.get("domain"), dns_after.get("domain")),
    ):
        if after is not None and _norm(before) != _norm(after):
            found.append(Change(name, path, before, after, "reboot", False, first_boot))
    datastore_before, datastore_after = current.get("datastore_id"), declared.get("datastoreId")
    if datastore_after is not None and datastore_before != datastore_after:
        found.append(
            Change(
                name, "initialization.datastoreId", datastore_before, datastore_after, "reboot",
                False, "moves the cloud-init drive; the provider restarts the VM",
            )
        )  # fmt: skip
    user_before, user_after = current.get("user_data_file_id"), declared.get("userDataFileId")
    if user_after is not None and user_before != user_after:
        if USER_DATA_FIELD in ignored:
            found.append(
                Change(
                    name, USER_DATA_FIELD, user_before, user_after, "kept", True,
                    "the VM keeps the user data it booted with (ignore_changes for adopted "
                    "VMs); keep that snippet file on the hypervisor",
                )
            )  # fmt: skip
        else:
            found.append(
                Change(
                    name, USER_DATA_FIELD, user_before, user_after, "replace", False,
                    "user_data_file_id is ForceNew in the provider",
                )
            )  # fmt: skip
    return found


def _vm_disks(
    name: str,
    inputs: Mapping[str, Any],
    values: Mapping[str, Any],
    ignored: set[str],
) -> list[Change]:
    """Disks by interface. A protected node's disks are locked (`ignore_changes`): nothing is
    applied, but what differs still matters to the storage role, which trusts the inventory."""
    locked = "disks" in ignored
    declared = {str(d.get("interface")): d for d in inputs.get("disks") or []}
    present = {str(d.get("interface")): d for d in _blocks(values, "disk")}
    found: list[Change] = []

    def add(path: str, before: Any, after: Any, effect: Effect, *, safe: bool, why: str) -> None:
        if locked:
            effect, why = "kept", f"not applied (disks locked, see unlock_disks); {why}"
        found.append(Change(name, path, before, after, effect, safe, why))

    for interface, disk in sorted(declared.items()):
        path = f"disks[{interface}]"
        current = present.get(interface)
        if current is None:
            label = f"{disk.get('serial')} {_int(disk.get('size'))}G on {disk.get('datastoreId')}"
            why = "a new blank disk"
            if locked:
                why += "; the inventory lists it, so the storage role stops until it exists"
            add(path, None, label, "update", safe=not locked, why=why)
            continue
        size_before, size_after = _int(current.get("size")), _int(disk.get("size"))
        if size_after > size_before:
            add(f"{path}.size", size_before, size_after, "update", safe=True, why="grown online")
        elif size_after < size_before:
            why = "a disk cannot shrink: make the stack's size match the disk"
            add(f"{path}.size", size_before, size_after, "harm", safe=False, why=why)
        if current.get("datastore_id") != disk.get("datastoreId"):
            why = "moves the disk to another datastore (move_disk: long I/O)"
            before, after = current.get("datastore_id"), disk.get("datastoreId")
            add(f"{path}.datastoreId", before, after, "update", safe=False, why=why)
        if (current.get("serial") or "") != (disk.get("serial") or ""):
            why = (
                "the guest sees the serial (its /dev/disk/by-id link) only after a power cycle: "
                "restart the VM before `ecoma-infra configure`"
            )
            if locked:
                why = (
                    "the storage role finds no /dev/disk/by-id link for this disk: name the node "
                    "in ecoma:proxmox.unlock_disks for one `up`, restart the VM, then remove it"
                )
            before, after = current.get("serial") or "", disk.get("serial")
            add(f"{path}.serial", before, after, "update", safe=False, why=why)
    for interface, current in sorted(present.items()):
        if interface not in declared:
            size = f"{_int(current.get('size'))}G on {current.get('datastore_id')}"
            why = "a disk the stack does not declare: the provider would detach it"
            if locked:
                why = "a disk the stack does not declare: never mounted; declare it in ecoma:nodes"
            add(f"disks[{interface}]", size, None, "harm", safe=False, why=why)
    return found


# --------------------------------------------------------------------------- creates

# What creating a resource of a type does to what exists (default: nothing).
CREATE_VERDICTS: dict[str, tuple[bool, str]] = {
    "proxmoxve:index/fileLegacy:FileLegacy": (
        True,
        "uploads the program's user data; a VM that exists keeps its own",
    ),
    "tailscale:index/tailnetKey:TailnetKey": (
        True,
        "mints a single-use key; a node that is joined already ignores it",
    ),
    "tailscale:index/acl:Acl": (
        False,
        "replaces the whole tailnet policy: make sure the tailnet holds no rules of its own "
        "(`ecoma-infra preview --offline` shows the policy)",
    ),
    "tailscale:index/deviceSubnetRoutes:DeviceSubnetRoutes": (
        True,
        "approves the SDN route the router nodes advertise",
    ),
    "aws:ec2/natGateway:NatGateway": (True, "bills by the hour while it exists"),
    "aws:ec2/eip:Eip": (True, "bills by the hour while it exists"),
}


def _create_verdict(record: Recorded, zone_pending: bool) -> tuple[bool, str]:
    kind = record.type
    if kind == "proxmoxve:sdn/applier:Applier":
        if zone_pending and record.name.endswith("-apply"):
            return False, "applies the SDN, and the zone has pending changes: review them first"
        return True, "applies the SDN configuration (nothing pending: nothing changes)"
    if kind == VM:
        return True, (
            f"clones a new VM {_int(record.inputs.get('vmId'))} on {record.inputs.get('nodeName')}"
            ": no VM of that id may exist outside the Terraform state"
        )
    if kind.startswith("proxmoxve:sdn/"):
        return False, "not in the Terraform state: if it exists in Proxmox, the create collides"
    return CREATE_VERDICTS.get(kind, (True, "a new resource; nothing that exists changes"))


# --------------------------------------------------------------------------- values


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _norm(value: Any) -> Any:
    """The engine's numbers are floats; Terraform's are ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def _show(value: Any) -> str:
    return repr(_norm(value))


def _get(inputs: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = inputs
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _blocks(values: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    found = values.get(key) or []
    return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []


def _first(values: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A Terraform block with at most one item: its item, or {}."""
    found = values.get(key)
    if isinstance(found, list) and found and isinstance(found[0], dict):
        return found[0]
    return found if isinstance(found, dict) else {}


def _tf(values: Mapping[str, Any], path: Sequence[str]) -> Any:
    """A value by path through Terraform's one-item block lists (`cpu[0].cores`)."""
    *blocks, leaf = path
    current: Mapping[str, Any] = values
    for key in blocks:
        current = _first(current, key)
    return current.get(leaf)


def _same_network(a: Any, b: Any) -> bool:
    try:
        return IPv4Network(str(a)) == IPv4Network(str(b))
    except ValueError:
        return False


def _region(resource: TfResource) -> str | None:
    region = resource.values.get("region")
    if isinstance(region, str) and region:
        return region
    arn = str(resource.values.get("arn") or "")
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else None
