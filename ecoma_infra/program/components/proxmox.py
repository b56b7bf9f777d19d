"""Proxmox: the SDN subnet the nodes live on, and one VM per on-prem node."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_proxmoxve as proxmox

from ecoma_infra.program.cloudinit import NodeBoot, render_user_data, tailscale_up_args
from ecoma_infra.program.components.tailscale import node_auth_key
from ecoma_infra.program.disks import ordered, proxmox_interface, proxmox_serial
from ecoma_infra.program.inventory import onprem_node_fact
from ecoma_infra.stack.model import (
    DATA_TIERS,
    NetworkPlan,
    Node,
    ProxmoxSettings,
    SshSettings,
    StorageSettings,
    TailscaleSettings,
)
from ecoma_infra.stack.pulumi_config import Secrets, as_secret

# Roles whose machines hold state that a rebuild would lose: etcd on cpl, data on sts.
STATEFUL_ROLES = ("cpl", "sts")
# The VM tag of a node that `ecoma-infra replace` is rebuilding (a stateful one unprotected):
# what lets the policy pack's stateful-vms-protected rule, which sees resources and not the
# stack's config, tell a reviewed replacement from protection lost by mistake. It also shows in
# Proxmox's UI while the rebuild runs. Tags are "only meta information" (VmLegacy docstring):
# adding and removing it is an update in place.
REPLACING_TAG = "ecoma-replacing"
# Never rename: the name is the VM's identity in the stack (and in `ecoma:adopt`).
VM_SUFFIX = "-vm"
# The user data every VM keeps from its creation (see ProxmoxNode).
USER_DATA_FIELD = "initialization.userDataFileId"


def vm_name(node_name: str) -> str:
    """`sts-1` -> `sts-1-vm`: the Pulumi name of a node's VM."""
    return f"{node_name}{VM_SUFFIX}"


def make_provider(settings: ProxmoxSettings, secrets: Secrets) -> proxmox.Provider:
    return proxmox.Provider(
        "proxmox",
        endpoint=settings.endpoint,
        insecure=settings.insecure,
        api_token=secrets.require("proxmox_api_token"),
        # Snippets (cloud-init user data) are uploaded over SSH, not through the API.
        ssh=proxmox.ProviderSshArgs(
            username=settings.ssh_username,
            private_key=as_secret(secrets.require("proxmox_ssh_private_key")),
            agent=False,
        ),
    )


class ProxmoxSdn(pulumi.ComponentResource):
    """The SDN zone (simple, vlan or vxlan: see `ProxmoxSdn` in the stack model), its vnet and the
    node subnet, then applied.

    Proxmox deploys the subnet's gateway and SNAT only on layer-3 zones ("On layer3 zones
    (simple/evpn plugins), it'll be deployed on the vnet", PVE admin guide, SDN subnets): on a
    vlan or vxlan zone the gateway is the site's router and `gateway` only records it.
    """

    def __init__(
        self,
        name: str,
        settings: ProxmoxSettings,
        network: NetworkPlan,
        *,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:proxmox:Sdn", name, None, opts)
        sdn = settings.sdn
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # Destroyed last, it applies the deletions of the zone, vnet and subnet (the provider's
        # own example: every SDN object depends on a finalizer Applier).
        finalizer = proxmox.sdn.Applier(
            f"{name}-finalizer", on_create=False, on_destroy=True, opts=child
        )
        after_finalizer = pulumi.ResourceOptions.merge(
            child, pulumi.ResourceOptions(depends_on=[finalizer])
        )
        zone = _zone(f"{name}-zone", settings, opts=after_finalizer)
        vnet = proxmox.sdn.Vnet(
            f"{name}-vnet",
            resource_id=sdn.vnet,
            zone=zone.resource_id,
            # "Tag value for VLAN/VXLAN (can't be used with other zone types)" (sdn/vnet.py).
            tag=sdn.tag if sdn.kind != "simple" else None,
            opts=after_finalizer,
        )
        subnet = proxmox.sdn.Subnet(
            f"{name}-subnet",
            vnet=vnet.resource_id,
            cidr=str(network.sdn_subnet),
            gateway=str(network.sdn_gateway),
            snat=True if sdn.kind == "simple" else None,
            opts=after_finalizer,
        )
        # SDN changes are pending until applied: re-apply whenever any part of the definition
        # changes (the Applier is meant to be replaced on change, sdn/applier.py).
        definition = {
            **sdn.model_dump(mode="json"),
            "zone_mtu": sdn.zone_mtu,
            "hypervisors": sorted(settings.hypervisors),
            "cidr": str(network.sdn_subnet),
            "gateway": str(network.sdn_gateway),
        }
        self.applied = proxmox.sdn.Applier(
            f"{name}-apply",
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[zone, vnet, subnet],
                    replacement_trigger=json.dumps(definition, sort_keys=True),
                ),
            ),
        )
        self.vnet_id: pulumi.Output[str] = vnet.resource_id
        self.register_outputs({"vnet_id": self.vnet_id})


def _zone(name: str, settings: ProxmoxSettings, *, opts: pulumi.ResourceOptions) -> Any:
    sdn = settings.sdn
    nodes = list(settings.hypervisors)
    if sdn.kind == "vlan":
        # "uses an existing local Linux or OVS bridge ... allows connectivity of VMs between
        # different nodes" (sdn/zone/vlan.py); the bridge must exist on every hypervisor.
        return proxmox.sdn.zone.Vlan(
            name,
            resource_id=sdn.zone,
            nodes=nodes,
            bridge=sdn.bridge,
            mtu=sdn.mtu,
            ipam="pve",
            opts=opts,
        )
    if sdn.kind == "vxlan":
        # "All nodes in the cluster need to be mentioned here"; "the MTU needs to be 50 bytes
        # lower than the outgoing physical interface" (sdn/zone/vxlan.py). Tailscale (1280) and
        # flannel on tailscale0 (1280 - 50) ride inside it.
        return proxmox.sdn.zone.Vxlan(
            name,
            resource_id=sdn.zone,
            nodes=nodes,
            peers=[str(sdn.peers[node]) for node in nodes],
            mtu=sdn.zone_mtu,
            ipam="pve",
            opts=opts,
        )
    return proxmox.sdn.zone.Simple(name, resource_id=sdn.zone, nodes=nodes, ipam="pve", opts=opts)


@dataclass(frozen=True)
class ProxmoxNodeArgs:
    stack: str
    node: Node
    settings: ProxmoxSettings
    network: NetworkPlan
    ssh: SshSettings
    storage: StorageSettings
    tailscale: TailscaleSettings
    vnet_id: pulumi.Input[str]

    @property
    def stateful(self) -> bool:
        return self.node.role in STATEFUL_ROLES

    @property
    def replacing(self) -> bool:
        """`ecoma-infra replace` is rebuilding this node (ecoma:proxmox.replacing)."""
        return self.node.name in self.settings.replacing

    @property
    def protected(self) -> bool:
        return self.stateful and self.settings.protect_stateful and not self.replacing

    @property
    def keeps_data_disks(self) -> bool:
        """An sts node being rebuilt: its data disks wait on a holder VM (`replace` moved them
        there) and are re-attached to the new VM, which therefore is created without them."""
        return self.replacing and self.node.role == "sts"

    @property
    def router(self) -> bool:
        return self.node.name in self.tailscale.subnet_routers

    def boot(self) -> NodeBoot:
        node = self.node
        return NodeBoot(
            hostname=node.name,
            domain=self.network.search_domain,
            user=self.ssh.user,
            authorized_keys=tuple(self.ssh.authorized_keys),
            tailscale_up_args=tailscale_up_args(
                node.name,
                advertise_routes=[str(self.network.sdn_subnet)] if self.router else [],
                accept_routes=False,
            ),
            ip_forwarding=self.router,
        )


class ProxmoxNode(pulumi.ComponentResource):
    """A clone of the Debian 12 template with cloud-init, CPU, memory and a disk per tier.

    Each disk sits on its tier's datastore at a fixed virtio slot with `serial=<tier>`, so the
    guest sees `/dev/disk/by-id/virtio-<tier>`. Stateful machines (cpl, sts) are protected:
    Pulumi refuses to delete or replace them, Proxmox's own protection flag blocks removal,
    a `destroy` leaves them in place, a template change never re-clones them, and their disk
    list changes only when the node is named in `ecoma:proxmox.unlock_disks`. While
    `ecoma-infra replace` rebuilds a node (`ecoma:proxmox.replacing`), its protection is lifted.

    The node's place in its clone lane: the component itself depends on `prerequisites` (the
    applied SDN, the template when the stack makes it) and on `after` (the clone before it in
    the lane). The SDK registers a component only once its dependencies exist, and every child
    only once its parent is registered, so nothing of the node, its Tailscale key included, is
    created before the clone ahead of it is. Held by the component rather than by the key and
    the VM, the lane costs the SDK's cycle check (which walks every ancestor of a dependency,
    recursively) a few steps per node instead of the whole lane: a lane of VMs that depend on
    VMs made a 1000-node program quadratic to build and deeper than Python's recursion limit.
    """

    def __init__(
        self,
        name: str,
        args: ProxmoxNodeArgs,
        *,
        provider: pulumi.ProviderResource,
        tailscale_provider: pulumi.ProviderResource,
        prerequisites: Sequence[pulumi.Resource],
        after: pulumi.Resource | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        lane = [*prerequisites] if after is None else [*prerequisites, after]
        super().__init__(
            "ecoma:proxmox:Node",
            name,
            None,
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=lane)),
        )
        node, settings = args.node, args.settings
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        # The key is minted right before its VM (same place in the clone lane), so its short
        # life covers this clone and first boot only, not the waves of clones before it. A
        # single-use key is never recreated by the provider once invalid: it is replaced with
        # the VM instead, on the inputs that replace the VM (vm_id, the hypervisor).
        key = node_auth_key(
            f"{name}-tailscale-key",
            node.name,
            node.role,
            args.tailscale,
            ephemeral=False,
            parent=self,
            provider=tailscale_provider,
            replacement_trigger={"vm_id": node.vm_id, "hypervisor": node.hypervisor},
        )
        boot = args.boot()
        user_data = as_secret(key.key).apply(lambda k: render_user_data(boot, k))
        # Pulumi never deletes a snippet's file (retain_on_delete): Proxmox reads it at every
        # start of the VM to build its cloud-init drive. The provider (bpg,
        # proxmoxtf/resource/file.go) replaces a snippet whose content changes (source_raw is
        # ForceNew): it uploads the new content over the file of the same name (`overwrite`
        # defaults to true), then deletes the old resource's file by its volume id, which is
        # the same file. Without the option, `ecoma-infra replace` (a new key, so new user
        # data) left the new VM without the file it boots from. The name stays the same: a
        # snippet already in state has no retain_on_delete, and Pulumi decides the deletion of
        # a replaced resource from its old state, so a new name would delete every running VM's
        # file once (the first `up` records the option without touching the file).
        snippet = proxmox.FileLegacy(
            f"{name}-user-data",
            node_name=node.hypervisor,
            datastore_id=settings.snippets_datastore,
            content_type="snippets",
            source_raw=proxmox.FileLegacySourceRawArgs(
                data=user_data,
                file_name=f"ecoma-{args.stack}-{node.name}-user-data.yaml",
            ),
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
        )
        disks = ordered(node.disks)
        os_disk = disks[0]
        boot_interface = settings.template_boot_interface
        prefix = args.network.sdn_subnet.prefixlen
        ignore = ["clone"]
        stateful_disks = args.stateful and settings.protect_stateful
        if stateful_disks and node.name not in settings.unlock_disks:
            # Also while the node is being replaced: the old VM's disk list is never rewritten.
            ignore.append("disks")
        # The snippet's id never changes (its datastore and name are fixed), but while a snippet
        # is being replaced its new id is unknown to a preview, and `user_data_file_id` is
        # ForceNew (bpg vm.go): every VM would show as replaced. Ignored, the VM keeps the id it
        # has (the same file). An adopted VM keeps the old codebase's snippet this way too.
        ignore.append(USER_DATA_FIELD)
        created_disks = [
            disk
            for disk in disks
            if not (args.keeps_data_disks and not disk.os and disk.tier in DATA_TIERS)
        ]
        self.vm = proxmox.VmLegacy(
            vm_name(name),
            node_name=node.hypervisor,
            name=node.name,
            vm_id=node.vm_id,
            description=f"ecoma {args.stack} {node.role} node {node.name} (managed by Pulumi)",
            # Proxmox always sorts a VM's tags, and an unsorted list would show a difference on
            # every refresh (VmLegacy docstring).
            tags=sorted(
                {"ecoma", args.stack, node.role} | ({REPLACING_TAG} if args.replacing else set())
            ),
            clone=proxmox.VmLegacyCloneArgs(
                vm_id=settings.template_vm_id,
                node_name=settings.template_node or settings.hypervisors[0],
                datastore_id=settings.datastores[os_disk.tier],
                full=True,
            ),
            cpu=proxmox.VmLegacyCpuArgs(cores=node.cpu_cores, type="x86-64-v2-AES"),
            memory=proxmox.VmLegacyMemoryArgs(dedicated=node.memory_mb, floating=0),
            # Set explicitly: a clone inherits the template's agent setting otherwise. With it
            # on, every create and refresh waits for the agent (VmLegacy docstring), so the user
            # data starts qemu-guest-agent on first boot (cloudinit.render_user_data).
            agent=proxmox.VmLegacyAgentArgs(enabled=True, timeout="15m"),
            # The template's own boot disk, whatever its bus; never a blank disk beside it.
            boot_orders=[boot_interface],
            # IO threads on SCSI disks need one controller per disk (`virtio-scsi-single`);
            # with the default `virtio-scsi-pci` Proxmox ignores `iothread`.
            scsi_hardware="virtio-scsi-single" if boot_interface.startswith("scsi") else None,
            disks=[
                proxmox.VmLegacyDiskArgs(
                    interface=proxmox_interface(disk, boot_interface),
                    datastore_id=settings.datastores[disk.tier],
                    size=disk.size_gb,
                    serial=proxmox_serial(disk),
                    file_format="raw",
                    discard="on",
                    iothread=True,
                )
                for disk in created_disks
            ],
            network_devices=[
                proxmox.VmLegacyNetworkDeviceArgs(
                    bridge=args.vnet_id,
                    model="virtio",
                    # "Set to 1 to use the bridge MTU": a VXLAN zone's bridge is 50 bytes
                    # below 1500, and a guest left at 1500 would send frames it drops.
                    mtu=1 if settings.sdn.kind == "vxlan" else None,
                )
            ],
            initialization=proxmox.VmLegacyInitializationArgs(
                datastore_id=settings.datastores[os_disk.tier],
                ip_configs=[
                    proxmox.VmLegacyInitializationIpConfigArgs(
                        ipv4=proxmox.VmLegacyInitializationIpConfigIpv4Args(
                            address=f"{node.ip}/{prefix}", gateway=str(args.network.sdn_gateway)
                        )
                    )
                ],
                dns=proxmox.VmLegacyInitializationDnsArgs(
                    servers=[str(server) for server in args.network.dns_servers],
                    domain=args.network.search_domain,
                ),
                user_data_file_id=snippet.id,
            ),
            operating_system=proxmox.VmLegacyOperatingSystemArgs(type="l26"),
            on_boot=True,
            started=True,
            stop_on_destroy=True,
            protection=args.protected,
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    protect=args.protected,
                    retain_on_delete=args.protected,
                    ignore_changes=ignore,
                    depends_on=list(prerequisites),
                    # The VM id is fixed: Proxmox refuses a second VM with it, so a replacement
                    # must delete the old VM first (the engine's default creates first).
                    delete_before_replace=True,
                ),
            ),
        )
        self.fact = onprem_node_fact(
            node, args.storage, args.tailscale.subnet_routers, boot_interface
        )
        self.tailscale_key: pulumi.Output[str] = key.key
        self.register_outputs({"vm_id": self.vm.vm_id, "ip": str(node.ip)})
