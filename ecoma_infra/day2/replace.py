"""Replace an on-prem node with a fresh VM of the same name: `ecoma-infra replace`.

Drain first and never losing data. In order, each step safe to repeat, so that running the same
command again resumes after a failure:

1. drain: cordon and drain the node through the Kubernetes API (the same drain as a burst
   scale-down); a node that is not Ready cannot stop its pods, so its drain is skipped and its
   pods go with its Node object (Kubernetes' garbage collection of pods on a deleted node);
2. stop its VM (an ACPI shutdown through the Proxmox API): a stopped node cannot register its
   Node again;
3. delete its Node object and wait until it is gone: for a server, k3s's etcd member controller
   removes its etcd member first (a finalizer on the Node; k3s pkg/etcd/member_controller.go),
   then etcd must be healthy on the servers that stay;
4. delete its Tailscale device, so the new VM joins under the same name;
5. `sts` only: move its data disks (hot, warm, cold) to a protected holder VM on the same
   hypervisor. Proxmox deletes every volume named after a VM id with the VM (the provider's
   `delete_unreferenced_disks_on_destroy` defaults to true), so a disk detached but left with the
   VM id would still be destroyed; a disk moved to another VM is renamed to that VM's id
   (qemu-server's move_disk with target-vmid) and survives;
6. `up` with the node in `ecoma:proxmox.replacing`: its Pulumi protection, retain-on-delete and
   Proxmox protection flag are lifted (only then may an update delete it: "once the resource is
   unprotected, it can be deleted as part of a following update", Pulumi's protect docs);
7. `up` replacing the VM and its Tailscale key (a fresh single-use key; the new VM joins with
   it at first boot); an sts node's new VM comes without its data disks;
8. `sts` only: stop the new VM, move the data disks back to their slots (their drive options,
   `serial=<tier>` included, move with them), delete the holder, start the VM;
9. configure only that node (`--limit`): a server joins the running cluster (the k3s role
   probes the other servers), the storage role mounts the kept disks as they are;
10. wait until its Node is Ready (for a server: and etcd healthy);
11. `up` with the node out of `ecoma:proxmox.replacing`: protection restored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecoma_infra.burst.plan import StackRef
from ecoma_infra.burst.run import Configure, load_ref
from ecoma_infra.configure.inputs import (
    inventory_from_document,
    secrets_from_environment,
    secrets_from_outputs,
)
from ecoma_infra.day2.common import Day2Error, Waits, ready_on, wait_etcd, wait_ready
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.platforms.seams import Cluster, Hypervisor, StackBackend, Tailnet, VmRef
from ecoma_infra.program.disks import proxmox_interface
from ecoma_infra.stack.model import DATA_TIERS, NAMESPACE, Node

NODE_TYPE = "ecoma:proxmox:Node"
VM_TYPE = "proxmoxve:index/vmLegacy:VmLegacy"
KEY_TYPE = "tailscale:index/tailnetKey:TailnetKey"
SNIPPET_TYPE = "proxmoxve:index/fileLegacy:FileLegacy"
REPLACING = f"{NAMESPACE}:proxmox.replacing"


def child_urn(stack: str, project: str, node: str, type_token: str, name: str) -> str:
    """The URN Pulumi gives a child of the node's `ecoma:proxmox:Node` component."""
    return f"urn:pulumi:{stack}::{project}::{NODE_TYPE}${type_token}::{name}"


@dataclass(frozen=True)
class ReplacePlan:
    stack: str
    node: Node
    project: str
    kept_slots: tuple[str, ...]  # sts: the data disks that wait on the holder VM
    other_servers: tuple[str, ...]
    os_tier: str

    @property
    def vm_urn(self) -> str:
        return child_urn(self.stack, self.project, self.node.name, VM_TYPE, f"{self.node.name}-vm")

    @property
    def key_urn(self) -> str:
        name = f"{self.node.name}-tailscale-key"
        return child_urn(self.stack, self.project, self.node.name, KEY_TYPE, name)

    @property
    def snippet_urn(self) -> str:
        name = f"{self.node.name}-user-data"
        return child_urn(self.stack, self.project, self.node.name, SNIPPET_TYPE, name)

    @property
    def holder_name(self) -> str:
        return f"ecoma-keep-{self.node.name}"

    @property
    def server(self) -> bool:
        return self.node.role == "cpl"

    def describe(self) -> list[str]:
        node = self.node
        lines = [
            f"stack {self.stack}: replace {node.role} node {node.name} (VM {node.vm_id} on "
            f"{node.hypervisor}) with a new VM of the same name",
            f"  1. cordon and drain {node.name}, stop its VM, delete its Node"
            + (" (k3s removes its etcd member), wait for etcd healthy" if self.server else ""),
            "  2. delete its Tailscale device",
        ]
        if self.kept_slots:
            lines.append(
                f"  3. keep its data disks ({', '.join(self.kept_slots)}) on a protected "
                f"holder VM '{self.holder_name}' while the VM is rebuilt"
            )
        lines += [
            f"  4. pulumi up: lift {node.name}'s protection ({REPLACING}), then replace its VM "
            "and its Tailscale key",
        ]
        if self.kept_slots:
            lines.append("  5. move the data disks back into the new VM, delete the holder")
        lines += [
            f"  6. configure {node.name} only"
            + (f", join it to the servers {', '.join(self.other_servers)}" if self.server else ""),
            f"  7. wait until {node.name} is Ready, then restore its protection (pulumi up)",
            f"  recreated: its OS disk (tier {self.os_tier}): anything kept in "
            f"/var/storage/{self.os_tier} on it is lost",
        ]
        if node.role != "sts":
            data = [d.tier for d in node.disks if not d.os and d.tier in DATA_TIERS]
            if data:
                lines.append(f"  recreated empty: its data disks ({', '.join(data)})")
        return lines


def plan_replace(ref: StackRef, name: str, cluster: Cluster, *, project: str) -> ReplacePlan:
    """The plan; `Day2Error` (or `UsageError` for a name that is no node) before anything
    changes when it is not safe."""
    config = ref.config
    nodes = {node.name: node for node in config.nodes}
    node = nodes.get(name)
    if node is None:
        raise UsageError(
            f"--node {name}: not a node of {ref.source} ({', '.join(sorted(nodes))}); burst "
            "nodes are replaced by scaling their pool down and up"
        )
    others = [n for n in config.proxmox.replacing if n != name]
    if others:
        raise Day2Error(
            f"{REPLACING} names {', '.join(others)}: another replace did not finish; run "
            f"`ecoma-infra replace --stack {ref.name} --node {others[0]}` again to finish it first"
        )
    if node.role == "sts" and not config.proxmox.protect_stateful:
        setting = f"{NAMESPACE}:proxmox.protect_stateful"
        raise Day2Error(
            f"{name} is an sts node but {setting} is false: its disk list is then not pinned, "
            "and a later `pulumi up` could rewrite the kept disks. Make it true first"
        )
    other_servers = tuple(n.name for n in config.nodes_with_role("cpl") if n.name != name)
    if node.role == "cpl":
        if not other_servers:
            raise Day2Error(
                f"{name} is the only server: replacing it would start a new, empty cluster. "
                "Restore the cluster from an etcd snapshot instead (docs/day2.md, 'Restore')"
            )
        down = [n for n in other_servers if not ready_on(cluster.node(n))]
        if down:
            raise Day2Error(
                f"the other servers {', '.join(down)} are not Ready: without {name} etcd would "
                "lose its quorum. Bring them back first (or restore, docs/day2.md)"
            )
        if not cluster.etcd_healthy():
            raise Day2Error(
                "etcd is not healthy (kubectl get --raw '/readyz?verbose'): fix it first"
            )
    boot = config.proxmox.template_boot_interface
    kept = tuple(
        proxmox_interface(disk, boot)
        for disk in node.disks
        if node.role == "sts" and not disk.os and disk.tier in DATA_TIERS
    )
    os_tier = next(disk.tier for disk in node.disks if disk.os)
    return ReplacePlan(ref.name, node, project, kept, other_servers, os_tier)


@dataclass
class ReplaceSeams:
    stack: StackBackend
    cluster: Callable[[], Cluster]
    hypervisor: Callable[[], Hypervisor]
    tailnet: Callable[[], Tailnet | None]
    configure: Configure
    forget_host_key: Callable[[str], None] = lambda address: None


@dataclass
class ReplaceOutcome:
    steps: list[str] = field(default_factory=list)


class Replacer:
    def __init__(self, seams: ReplaceSeams, say: Callable[[str], None], waits: Waits) -> None:
        self.seams = seams
        self.say = say
        self.waits = waits
        self.outcome = ReplaceOutcome()
        self.lifted = False  # the stack names the node in ecoma:proxmox.replacing

    def run(self, plan: ReplacePlan) -> ReplaceOutcome:
        cluster = self.seams.cluster()
        hypervisor = self.seams.hypervisor()
        name = plan.node.name
        try:
            self._remove_from_cluster(plan, cluster, hypervisor)
            self._forget_device(name)
            holder = self._park(plan, hypervisor)
            self._up(plan, "lift the protection", replacing=True)
            outputs = self._up(plan, "replace the VM and its key", replacing=True, rebuild=True)
            self._unpark(plan, hypervisor, holder)
            self._configure(plan, outputs)
            wait_ready(cluster, self.waits, name)
            self._done(f"{name} Ready")
            if plan.server:
                wait_etcd(cluster, self.waits)
                self._done("etcd healthy")
            self._up(plan, "restore the protection", replacing=False)
        except EcomaError as error:
            raise Day2Error(self._failure(plan, error)) from None
        return self.outcome

    # --- steps -----------------------------------------------------------------------------

    def _done(self, step: str) -> None:
        self.outcome.steps.append(step)
        self.say(f"  {step}")

    def _remove_from_cluster(self, plan: ReplacePlan, cluster: Cluster, hv: Hypervisor) -> None:
        name = plan.node.name
        status = cluster.node(name)
        if status is not None and not status.deleting:
            cluster.cordon(name)
            if status.ready:
                self.say(f"  {name}: cordoned, draining (timeout {self.waits.drain:.0f} s)")
                try:
                    cluster.drain(name, timeout=self.waits.drain)
                except EcomaError as error:
                    cluster.uncordon(name)
                    raise Day2Error(
                        f"{error}; uncordoned {name}, nothing else was changed. Fix what blocks "
                        "the drain (kubectl get pdb -A)"
                    ) from None
                self._done(f"{name} drained")
            else:
                self._done(
                    f"{name} is not Ready: no drain (its pods cannot stop); they are removed "
                    "with its Node and rescheduled by their controllers"
                )
        vm = hv.vm(name)
        if vm is not None and hv.running(vm):
            hv.stop(vm)
            self._done(f"VM {vm.vm_id} of {name} stopped")
        if cluster.node(name) is not None:
            cluster.delete_node(name)
            what = "its etcd member removed and its Node gone" if plan.server else "Node gone"
            self.waits.until(
                f"{name}: {what}", lambda: cluster.node(name) is None, self.waits.ready
            )
            self._done(f"{name}: {what}")
        if plan.server:
            wait_etcd(cluster, self.waits)
            self._done(f"etcd healthy on {', '.join(plan.other_servers)}")

    def _forget_device(self, name: str) -> None:
        tailnet = self.seams.tailnet()
        if tailnet is None:
            self._done(
                "tailnet: no Tailscale API credentials: the old device stays; the new VM may "
                f"join as {name}-1 until it is removed in the admin console"
            )
            return
        for device in tailnet.devices():
            if device.hostname == name:
                tailnet.delete_device(device.id)
                self._done(f"Tailscale device {device.id} ({name}) deleted")

    def _park(self, plan: ReplacePlan, hv: Hypervisor) -> VmRef | None:
        if not plan.kept_slots:
            return None
        node = plan.node
        vm = hv.vm(node.name)
        holder = hv.vm(plan.holder_name)
        on_vm = sorted(set(hv.disks(vm)) & set(plan.kept_slots)) if vm else []
        if on_vm:
            if vm is None:  # pragma: no cover  (on_vm is empty without a VM)
                raise Day2Error("no VM")
            if holder is None:
                holder = hv.create_holder(
                    vm.hypervisor,
                    plan.holder_name,
                    f"ecoma: keeps the data disks of {node.name} while `ecoma-infra replace` "
                    f"rebuilds VM {node.vm_id}; do not delete",
                )
                self._done(f"holder VM {holder.vm_id} '{plan.holder_name}' created (protected)")
            taken = set(hv.disks(holder))
            clash = sorted(taken & set(on_vm))
            if clash:
                raise Day2Error(
                    f"both VM {vm.vm_id} and the holder VM {holder.vm_id} have {', '.join(clash)}: "
                    "look at both in Proxmox and move the disks by hand (qm disk move)"
                )
            for slot in on_vm:
                hv.move_disk(vm, slot, holder)
                self._done(f"data disk {slot} of {node.name} moved to holder VM {holder.vm_id}")
            left = sorted(set(hv.disks(vm)) & set(plan.kept_slots))
            if left:
                raise Day2Error(f"{', '.join(left)} still on VM {vm.vm_id} after the move")
        if holder is None or not set(plan.kept_slots) & set(hv.disks(holder)):
            raise Day2Error(
                f"the data disks of {node.name} ({', '.join(plan.kept_slots)}) are neither on its "
                f"VM nor on a holder VM '{plan.holder_name}': nothing was rebuilt. Look for them "
                "in Proxmox before running replace again"
            )
        return holder

    def _up(
        self, plan: ReplacePlan, why: str, *, replacing: bool, rebuild: bool = False
    ) -> dict[str, Any]:
        stack = self.seams.stack
        ref = load_ref(stack)
        # The pools as they run now (from the stack's `burst` output), as `deploy` does: an up
        # of the file's committed sizes would destroy burst nodes without a drain.
        stack.set_config(ref.carried)
        stack.remove_config(ref.dropped)
        listed = ref.config.proxmox.replacing
        if replacing and plan.node.name not in listed:
            stack.set_config({f"{REPLACING}[{len(listed)}]": plan.node.name})
        elif not replacing and listed:
            stack.remove_config([REPLACING])
        self.lifted = replacing
        targets = [plan.key_urn, plan.snippet_urn, plan.vm_urn]
        replace = [plan.key_urn, plan.vm_urn] if rebuild else []
        self.say(f"  pulumi up --stack {plan.stack} ({why}; {plan.node.name} only)")
        summary = stack.up(
            lambda line: self.say(f"    | {line.rstrip()}"), replace=replace, target=targets
        )
        changed = ", ".join(
            f"{op} {n}" for op, n in sorted(summary.changes.items()) if op != "same"
        )
        self._done(f"up ({why}): {changed or 'no change'}")
        return dict(summary.outputs)

    def _unpark(self, plan: ReplacePlan, hv: Hypervisor, holder: VmRef | None) -> None:
        if holder is None:
            return
        vm = hv.vm(plan.node.name)
        if vm is None:
            raise Day2Error(f"no VM named {plan.node.name} after the up")
        hv.stop(vm)
        for slot in sorted(set(hv.disks(holder)) & set(plan.kept_slots)):
            hv.move_disk(holder, slot, vm)
            self._done(f"data disk {slot} moved back into VM {vm.vm_id}")
        hv.delete_holder(holder)
        self._done(f"holder VM {holder.vm_id} deleted")
        hv.start(vm, timeout=self.waits.ready)
        self._done(f"VM {vm.vm_id} started, its guest agent answers")

    def _configure(self, plan: ReplacePlan, outputs: dict[str, Any]) -> None:
        name = plan.node.name
        self.seams.forget_host_key(str(plan.node.ip))
        inventory = inventory_from_document(outputs, f"stack {plan.stack}")
        secrets = {**secrets_from_outputs(outputs), **secrets_from_environment()}
        self.say(f"  configuring only {name}: --limit {name}")
        if not self.seams.configure(inventory, secrets, name):
            raise Day2Error(f"configuring {name} failed (see the summary above)")
        self._done(f"{name} configured")

    def _failure(self, plan: ReplacePlan, error: EcomaError) -> str:
        done = "; ".join(self.outcome.steps) or "nothing"
        lines = [
            f"replace of {plan.node.name} stopped: {error}",
            f"  done so far: {done}",
        ]
        if plan.kept_slots:
            lines.append(
                f"  its data disks are on its VM or on the protected holder VM "
                f"'{plan.holder_name}' (Proxmox), never deleted by replace"
            )
        lines.append("  run the same command again to resume (each step checks what is done)")
        if self.lifted:
            lines.append(
                f"  {REPLACING} keeps {plan.node.name}'s protection lifted until replace finishes"
            )
        return "\n".join(lines)
