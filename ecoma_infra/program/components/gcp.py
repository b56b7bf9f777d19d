"""The GCP burst pool: a custom-mode network with no inbound path but Tailscale.

Google's `debian-cloud` images run the guest agent's `startup-script` at every boot instead of
cloud-init, so the node's setup (user, keys, Tailscale join) is the same as everywhere else but
rendered as an idempotent shell script (`cloudinit.render_startup_script`).

Logins go through OS Login or the node user's keys over Tailscale; project-wide SSH keys
and the serial console are off. VMs get no service account (no Google credentials on the
machine) and run as Shielded VMs (the image must support Secure Boot).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from ecoma_infra.program.components.pool import (
    TAILSCALE_UDP_PORT,
    BurstPoolArgs,
    BurstPoolComponent,
    node_fact,
    startup_script,
)
from ecoma_infra.program.components.tailscale import node_auth_key
from ecoma_infra.program.disks import extra_disks, gcp_device, gcp_device_name, ordered
from ecoma_infra.program.tags import cost_tags
from ecoma_infra.stack.model import Disk, GcpPool
from ecoma_infra.stack.pulumi_config import Secrets

DISK_TYPE = "pd-balanced"
# The network tag the Tailscale firewall rule targets.
NODE_NETWORK_TAG = "ecoma-wkr-burst"
ANYWHERE = "0.0.0.0/0"


def make_provider(
    name: str,
    pool: GcpPool,
    secrets: Secrets,
    *,
    stack: str,
    opts: pulumi.ResourceOptions | None = None,
) -> gcp.Provider:
    """A GCP provider with explicit credentials (never Application Default Credentials)."""
    # The SDK does not mark `credentials` secret by itself.
    credentials: pulumi.Output[str] = pulumi.Output.secret(secrets.require("gcp_credentials"))
    return gcp.Provider(
        name,
        project=pool.project,
        region=pool.region,
        zone=pool.zone,
        credentials=credentials,
        default_labels=cost_tags(stack, "wkr", burst=True),
        add_pulumi_attribution_label=False,
        opts=opts,
    )


class GcpBurstPool(BurstPoolComponent):
    """Network, subnetwork, the Tailscale firewall rule and (without public IPs) a Cloud NAT,
    then per node: a Tailscale key, a pd-balanced disk per extra tier and the instance.

    GCP networks have no CIDR of their own: `vpc_cidr` only reserves the range in the address
    plan; the subnetwork takes `subnet_cidr`. Networks, subnetworks, firewalls and routers take
    no labels; instances and disks carry the cost labels.
    """

    def __init__(
        self,
        name: str,
        args: BurstPoolArgs,
        *,
        provider: pulumi.ProviderResource,
        tailscale_provider: pulumi.ProviderResource,
        tailscale_direct: bool = True,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:gcp:BurstPool", name, opts)
        pool = args.pool
        child = pulumi.ResourceOptions(parent=self, provider=provider)

        self.network = gcp.compute.Network(
            f"{name}-network",
            auto_create_subnetworks=False,
            routing_mode="REGIONAL",
            description="ecoma burst workers",
            opts=child,
        )
        self.subnetwork = gcp.compute.Subnetwork(
            f"{name}-subnet",
            network=self.network.id,
            ip_cidr_range=str(pool.subnet_cidr),
            region=pool.region,
            private_ip_google_access=True,
            opts=child,
        )
        # A custom-mode network has no rules but the implied ones (deny all ingress, allow all
        # egress): this is the only way in.
        if tailscale_direct:
            gcp.compute.Firewall(
                f"{name}-tailscale-udp",
                network=self.network.self_link,
                direction="INGRESS",
                priority=1000,
                source_ranges=[ANYWHERE],
                allows=[
                    gcp.compute.FirewallAllowArgs(protocol="udp", ports=[str(TAILSCALE_UDP_PORT)])
                ],
                target_tags=[NODE_NETWORK_TAG],
                description="Tailscale direct connections",
                opts=child,
            )
        egress: list[pulumi.Resource] = [self.subnetwork]
        if not pool.public_ip:
            router = gcp.compute.Router(
                f"{name}-router", network=self.network.id, region=pool.region, opts=child
            )
            egress.append(
                gcp.compute.RouterNat(
                    f"{name}-nat",
                    router=router.name,
                    region=pool.region,
                    nat_ip_allocate_option="AUTO_ONLY",
                    source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
                    subnetworks=[
                        gcp.compute.RouterNatSubnetworkArgs(
                            name=self.subnetwork.id,
                            source_ip_ranges_to_nats=["ALL_IP_RANGES"],
                        )
                    ],
                    log_config=gcp.compute.RouterNatLogConfigArgs(
                        enable=True, filter="ERRORS_ONLY"
                    ),
                    opts=child,
                )
            )

        for node in args.node_names():
            self._node(
                name, node, args=args, egress=egress, child=child, tailscale=tailscale_provider
            )

        self.register_outputs(
            {
                "network_id": self.network.id,
                "subnetwork_id": self.subnetwork.id,
                "instance_ids": {node: inst.id for node, inst in self.instances.items()},
            }
        )

    def _node(
        self,
        name: str,
        node: str,
        *,
        args: BurstPoolArgs,
        egress: list[pulumi.Resource],
        child: pulumi.ResourceOptions,
        tailscale: pulumi.ProviderResource,
    ) -> None:
        pool = args.pool
        if not isinstance(pool, GcpPool):
            raise TypeError(f"{name}: GcpBurstPool needs a GcpPool, got {type(pool).__name__}")
        labels = args.node_tags(node)
        os_disk = ordered(pool.disks)[0]
        key = node_auth_key(
            f"{name}-{node}-tailscale-key",
            node,
            "wkr",
            args.tailscale,
            ephemeral=True,
            parent=self,
            provider=tailscale,
        )
        devices: list[tuple[Disk, pulumi.Input[str]]] = [(os_disk, gcp_device(os_disk))]
        attached: list[gcp.compute.InstanceAttachedDiskArgs] = []
        for disk in extra_disks(pool.disks):
            volume = gcp.compute.Disk(
                f"{name}-{node}-{disk.tier}",
                zone=pool.zone,
                size=disk.size_gb,
                type=DISK_TYPE,
                labels=labels,
                opts=child,
            )
            attached.append(
                gcp.compute.InstanceAttachedDiskArgs(
                    source=volume.id, device_name=gcp_device_name(disk), mode="READ_WRITE"
                )
            )
            devices.append((disk, gcp_device(disk)))
        instance = gcp.compute.Instance(
            f"{name}-{node}",
            machine_type=pool.instance_type,
            zone=pool.zone,
            tags=[NODE_NETWORK_TAG],
            boot_disk=gcp.compute.InstanceBootDiskArgs(
                auto_delete=True,
                device_name=gcp_device_name(os_disk),
                initialize_params=gcp.compute.InstanceBootDiskInitializeParamsArgs(
                    image=pool.image, size=os_disk.size_gb, type=DISK_TYPE, labels=labels
                ),
            ),
            attached_disks=attached,
            network_interfaces=[
                gcp.compute.InstanceNetworkInterfaceArgs(
                    subnetwork=self.subnetwork.id,
                    # An empty access config is an ephemeral external IP; none is no public IP.
                    access_configs=(
                        [gcp.compute.InstanceNetworkInterfaceAccessConfigArgs()]
                        if pool.public_ip
                        else None
                    ),
                )
            ],
            metadata={
                "startup-script": startup_script(args.boot(node), key),
                "enable-oslogin": "TRUE",
                "block-project-ssh-keys": "TRUE",
                "serial-port-enable": "FALSE",
            },
            shielded_instance_config=gcp.compute.InstanceShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            labels=labels,
            allow_stopping_for_update=True,
            # The node installs Tailscale at first boot: its way out must exist by then.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=egress)),
        )
        self.instances[node] = instance
        self.node_facts.append(node_fact(args, node, devices))
