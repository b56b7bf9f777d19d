"""Proxmox: the SDN subnet the nodes live on, and one VM per on-prem node."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmox

from ecoma_infra.program.cloudinit import NodeBoot, render_user_data, tailscale_up_args
from ecoma_infra.program.components.tailscale import node_auth_key
from ecoma_infra.program.disks import ordered, proxmox_interface, proxmox_serial
from ecoma_infra.program.inventory import onprem_node_fact
from ecoma_infra.stack.model import (
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
    """A simple SDN zone, its vnet and the node subnet with the gateway, then applied."""

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
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        zone = proxmox.sdn.zone.Simple(
            f"{name}-zone",
            resource_id=settings.sdn.zone,
            nodes=list(settings.hypervisors),
            ipam="pve",
            opts=child,
        )
        vnet = proxmox.sdn.Vnet(
            f"{name}-vnet", resource_id=settings.sdn.vnet, zone=zone.resource_id, opts=child
        )
        subnet = proxmox.sdn.Subnet(
            f"{name}-subnet",
            vnet=vnet.resource_id,
            cidr=str(network.sdn_subnet),
            gateway=str(network.sdn_gateway),
            snat=True,
            opts=child,
        )
        # SDN changes are pending until applied; re-apply whenever the definition changes.
        self.applied = proxmox.sdn.Applier(
            f"{name}-apply",
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    depends_on=[zone, vnet, subnet],
                    replacement_trigger=pulumi.Output.json_dumps(
                        {"zone": zone.resource_id, "vnet": vnet.resource_id, "cidr": subnet.cidr}
                    ),
                ),
            ),
        )
        self.vnet_id: pulumi.Output[str] = vnet.resource_id
        self.register_outputs({"vnet_id": self.vnet_id})


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
    def protected(self) -> bool:
        return self.stateful and self.settings.protect_stateful

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
    list changes only when the node is named in `ecoma:proxmox.unlock_disks`.
    """

    def __init__(
        self,
        name: str,
        args: ProxmoxNodeArgs,
        *,
        provider: pulumi.ProviderResource,
        tailscale_provider: pulumi.ProviderResource,
        after: list[pulumi.Resource] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:proxmox:Node", name, None, opts)
        node, settings = args.node, args.settings
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        key = node_auth_key(
            f"{name}-tailscale-key",
            node.name,
            node.role,
            args.tailscale,
            ephemeral=False,
            parent=self,
            provider=tailscale_provider,
        )
        boot = args.boot()
        user_data = as_secret(key.key).apply(lambda k: render_user_data(boot, k))
        snippet = proxmox.FileLegacy(
            f"{name}-user-data",
            node_name=node.hypervisor,
            datastore_id=settings.snippets_datastore,
            content_type="snippets",
            source_raw=proxmox.FileLegacySourceRawArgs(
                data=user_data, file_name=f"ecoma-{args.stack}-{node.name}-user-data.yaml"
            ),
            opts=child,
        )
        disks = ordered(node.disks)
        os_disk = disks[0]
        prefix = args.network.sdn_subnet.prefixlen
        ignore = ["clone"]
        if args.protected and node.name not in settings.unlock_disks:
            ignore.append("disks")
        self.vm = proxmox.VmLegacy(
            f"{name}-vm",
            node_name=node.hypervisor,
            name=node.name,
            vm_id=node.vm_id,
            description=f"ecoma {args.stack} {node.role} node {node.name} (managed by Pulumi)",
            tags=sorted({"ecoma", args.stack, node.role}),
            clone=proxmox.VmLegacyCloneArgs(
                vm_id=settings.template_vm_id,
                node_name=settings.template_node or settings.hypervisors[0],
                datastore_id=settings.datastores[os_disk.tier],
                full=True,
            ),
            cpu=proxmox.VmLegacyCpuArgs(cores=node.cpu_cores, type="x86-64-v2-AES"),
            memory=proxmox.VmLegacyMemoryArgs(dedicated=node.memory_mb, floating=0),
            # Set explicitly: a clone inherits the template's agent setting otherwise.
            agent=proxmox.VmLegacyAgentArgs(enabled=True, timeout="15m"),
            disks=[
                proxmox.VmLegacyDiskArgs(
                    interface=proxmox_interface(disk),
                    datastore_id=settings.datastores[disk.tier],
                    size=disk.size_gb,
                    serial=proxmox_serial(disk),
                    file_format="raw",
                    discard="on",
                    iothread=True,
                )
                for disk in disks
            ],
            network_devices=[
                proxmox.VmLegacyNetworkDeviceArgs(bridge=args.vnet_id, model="virtio")
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
                    depends_on=after or [],
                ),
            ),
        )
        self.fact = onprem_node_fact(node, args.storage, args.tailscale.subnet_routers)
        self.tailscale_key: pulumi.Output[str] = key.key
        self.register_outputs({"vm_id": self.vm.vm_id, "ip": str(node.ip)})
