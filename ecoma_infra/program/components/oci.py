"""The OCI burst pool: a VCN with no inbound path but Tailscale, and disposable workers.

Extra disks are block volumes attached over iSCSI. Oracle's consistent device paths
(`/dev/oracleoci/oraclevd<b..>`) come from udev rules that only Oracle's platform images carry
("consistent device paths are supported ... when the instance was created using a platform
image", OCI docs), and a Debian image has none; the SCSI ids of a paravirtualized volume have no
link to its OCID. An iSCSI attachment names its own target (`ipv4`, `port`, `iqn` outputs), and
Debian's stock udev links a logged-in session as
`/dev/disk/by-path/ip-<ipv4>:<port>-iscsi-<iqn>-lun-1`: a path that cannot point at another
disk, and that does not exist when the login failed. The storage role logs in (Oracle's
documented `iscsiadm` steps) before it probes; the user data installs open-iscsi. The volume
attachment exists only after the instance, so the login cannot be in the user data.
The image must run cloud-init (OCI's `user_data` metadata).
"""

from __future__ import annotations

import base64
import dataclasses
import re

import pulumi
import pulumi_oci as oci

from ecoma_infra.errors import EcomaError
from ecoma_infra.program.components.pool import (
    TAILSCALE_UDP_PORT,
    BurstPoolArgs,
    BurstPoolComponent,
    node_fact,
    user_data,
)
from ecoma_infra.program.components.tailscale import node_auth_key
from ecoma_infra.program.disks import extra_disks, iscsi_device, ordered
from ecoma_infra.stack.model import Disk, OciPool
from ecoma_infra.stack.pulumi_config import Secrets

ANYWHERE = "0.0.0.0/0"
UDP = "17"
# OCI's smallest block volume and boot volume.
MIN_VOLUME_GB = 50
# Balanced performance (10 VPUs per GB).
VPUS_PER_GB = "10"
# `AD-1` in the config means the region's first availability domain of the tenancy.
_AD_INDEX = re.compile(r"^AD-(?P<index>[1-9])$")


def make_provider(
    name: str,
    pool: OciPool,
    secrets: Secrets,
    *,
    stack: str,
    opts: pulumi.ResourceOptions | None = None,
) -> oci.Provider:
    """An OCI provider that signs with the CI user's API key (never ~/.oci/config).

    OCI providers take no default tags: every resource sets its `freeform_tags` itself.
    """
    del stack  # same signature as the other clouds; tags are set per resource
    return oci.Provider(
        name,
        auth="ApiKey",
        tenancy_ocid=pool.tenancy_ocid,
        user_ocid=pool.user_ocid,
        fingerprint=pool.fingerprint,
        private_key=secrets.require("oci_private_key"),
        region=pool.region,
        opts=opts,
    )


def _volume_size(node: str, disk: Disk) -> str:
    # The config's rules refuse disks under OCI's minimum, so the size is always honest.
    if disk.size_gb < MIN_VOLUME_GB:
        raise EcomaError(f"{node}: OCI volumes are {MIN_VOLUME_GB} GB at least")
    return str(disk.size_gb)


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class OciBurstPool(BurstPoolComponent):
    """VCN, NAT (or internet) gateway, route table, security list and subnet, then per node:
    a Tailscale key, the instance and one block volume (plus attachment) per extra disk."""

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
        super().__init__("ecoma:oci:BurstPool", name, opts)
        pool = args.pool
        if not isinstance(pool, OciPool):
            raise TypeError(f"{name}: OciBurstPool needs an OciPool, got {type(pool).__name__}")
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        tags = args.pool_tags()

        self.vcn = oci.core.Vcn(
            f"{name}-vcn",
            compartment_id=pool.compartment_id,
            cidr_blocks=[str(pool.vpc_cidr)],
            display_name=f"{name}-vcn",
            freeform_tags=tags,
            opts=child,
        )
        gateway: oci.core.NatGateway | oci.core.InternetGateway
        if pool.public_ip:
            gateway = oci.core.InternetGateway(
                f"{name}-igw",
                compartment_id=pool.compartment_id,
                vcn_id=self.vcn.id,
                enabled=True,
                display_name=f"{name}-igw",
                freeform_tags=tags,
                opts=child,
            )
        else:
            gateway = oci.core.NatGateway(
                f"{name}-nat",
                compartment_id=pool.compartment_id,
                vcn_id=self.vcn.id,
                display_name=f"{name}-nat",
                freeform_tags=tags,
                opts=child,
            )
        route_table = oci.core.RouteTable(
            f"{name}-rt",
            compartment_id=pool.compartment_id,
            vcn_id=self.vcn.id,
            route_rules=[
                oci.core.RouteTableRouteRuleArgs(
                    network_entity_id=gateway.id,
                    destination=ANYWHERE,
                    destination_type="CIDR_BLOCK",
                )
            ],
            display_name=f"{name}-rt",
            freeform_tags=tags,
            opts=child,
        )
        ingress = (
            [
                oci.core.SecurityListIngressSecurityRuleArgs(
                    protocol=UDP,
                    source=ANYWHERE,
                    source_type="CIDR_BLOCK",
                    udp_options=oci.core.SecurityListIngressSecurityRuleUdpOptionsArgs(
                        min=TAILSCALE_UDP_PORT, max=TAILSCALE_UDP_PORT
                    ),
                    description="Tailscale direct connections",
                )
            ]
            if tailscale_direct
            else []
        )
        security_list = oci.core.SecurityList(
            f"{name}-sl",
            compartment_id=pool.compartment_id,
            vcn_id=self.vcn.id,
            egress_security_rules=[
                oci.core.SecurityListEgressSecurityRuleArgs(
                    destination=ANYWHERE, destination_type="CIDR_BLOCK", protocol="all"
                )
            ],
            ingress_security_rules=ingress,
            display_name=f"{name}-sl",
            freeform_tags=tags,
            opts=child,
        )
        self.subnet = oci.core.Subnet(
            f"{name}-subnet",
            compartment_id=pool.compartment_id,
            vcn_id=self.vcn.id,
            cidr_block=str(pool.subnet_cidr),
            prohibit_public_ip_on_vnic=not pool.public_ip,
            prohibit_internet_ingress=not pool.public_ip,
            route_table_id=route_table.id,
            security_list_ids=[security_list.id],
            display_name=f"{name}-subnet",
            freeform_tags=tags,
            opts=child,
        )

        nodes = args.node_names()
        # Looked up only when there are nodes: an empty pool needs no invoke.
        availability_domain = self._availability_domain(pool, provider) if nodes else pool.zone
        for node in nodes:
            self._node(
                name,
                node,
                pool=pool,
                args=args,
                availability_domain=availability_domain,
                child=child,
                tailscale=tailscale_provider,
            )

        self.register_outputs(
            {
                "vcn_id": self.vcn.id,
                "subnet_id": self.subnet.id,
                "instance_ids": {node: inst.id for node, inst in self.instances.items()},
            }
        )

    def _availability_domain(
        self, pool: OciPool, provider: pulumi.ProviderResource
    ) -> pulumi.Input[str]:
        """`AD-<n>` becomes the tenancy's n-th availability domain name; a full name stays."""
        match = _AD_INDEX.match(pool.zone)
        if match is None:
            return pool.zone
        index = int(match.group("index")) - 1
        zone = pool.zone
        found = oci.identity.get_availability_domains_output(
            compartment_id=pool.tenancy_ocid,
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider),
        )

        def pick(result: oci.identity.GetAvailabilityDomainsResult) -> str:
            names = sorted(ad.name for ad in result.availability_domains or [])
            if index >= len(names):
                raise EcomaError(
                    f"ecoma:burst.oci.zone: {zone} does not exist: the tenancy sees "
                    f"{len(names)} availability domains in {pool.region} ({', '.join(names)}). "
                    "Fix: use one of them, or its full name"
                )
            return names[index]

        return found.apply(pick)

    def _node(
        self,
        name: str,
        node: str,
        *,
        pool: OciPool,
        args: BurstPoolArgs,
        availability_domain: pulumi.Input[str],
        child: pulumi.ResourceOptions,
        tailscale: pulumi.ProviderResource,
    ) -> None:
        tags = args.node_tags(node)
        disks = ordered(pool.disks)
        os_disk = disks[0]
        key = node_auth_key(
            f"{name}-{node}-tailscale-key",
            node,
            "wkr",
            args.tailscale,
            ephemeral=True,
            parent=self,
            provider=tailscale,
        )
        shape_config = None
        if pool.ocpus is not None or pool.memory_gb is not None:
            shape_config = oci.core.InstanceShapeConfigArgs(
                ocpus=pool.ocpus, memory_in_gbs=pool.memory_gb
            )
        instance = oci.core.Instance(
            f"{name}-{node}",
            availability_domain=availability_domain,
            compartment_id=pool.compartment_id,
            display_name=node,
            shape=pool.instance_type,
            shape_config=shape_config,
            source_details=oci.core.InstanceSourceDetailsArgs(
                source_type="image",
                source_id=pool.image,
                boot_volume_size_in_gbs=_volume_size(node, os_disk),
            ),
            create_vnic_details=oci.core.InstanceCreateVnicDetailsArgs(
                subnet_id=self.subnet.id,
                assign_public_ip="true" if pool.public_ip else "false",
                display_name=f"{node}-vnic",
                freeform_tags=tags,
            ),
            metadata={
                "ssh_authorized_keys": "\n".join(args.ssh.authorized_keys),
                "user_data": user_data(
                    dataclasses.replace(args.boot(node), packages=("open-iscsi",)), key
                ).apply(_base64),
            },
            # The boot volume stays paravirtualized: encrypted in transit ("Use this field only
            # during create"). iSCSI data volumes cannot be (OCI offers in-transit encryption for
            # paravirtualized attachments only); they hold a stateless worker's scratch data.
            is_pv_encryption_in_transit_enabled=True,
            instance_options=oci.core.InstanceInstanceOptionsArgs(
                are_legacy_imds_endpoints_disabled=True
            ),
            freeform_tags=tags,
            opts=child,
        )
        # The boot volume is the root filesystem: the playbook never opens it by path.
        devices: list[tuple[Disk, pulumi.Input[str]]] = [(os_disk, "")]
        targets: dict[str, pulumi.Output[dict[str, object]]] = {}
        for disk in extra_disks(pool.disks):
            volume = oci.core.Volume(
                f"{name}-{node}-{disk.tier}",
                availability_domain=availability_domain,
                compartment_id=pool.compartment_id,
                display_name=f"{node}-{disk.tier}",
                size_in_gbs=_volume_size(node, disk),
                vpus_per_gb=VPUS_PER_GB,
                freeform_tags=tags,
                opts=child,
            )
            attachment = oci.core.VolumeAttachment(
                f"{name}-{node}-{disk.tier}-attachment",
                attachment_type="iscsi",
                instance_id=instance.id,
                volume_id=volume.id,
                display_name=f"{node}-{disk.tier}",
                is_read_only=False,
                # No Oracle Cloud Agent on Debian: the storage role logs in.
                is_agent_auto_iscsi_login_enabled=False,
                opts=child,
            )
            target = pulumi.Output.all(attachment.ipv4, attachment.port, attachment.iqn).apply(
                lambda found: {"address": found[0], "port": found[1], "iqn": found[2]}
            )
            targets[disk.tier] = target
            devices.append(
                (disk, target.apply(lambda t: iscsi_device(t["address"], t["port"], t["iqn"])))
            )
        self.instances[node] = instance
        self.node_facts.append(node_fact(args, node, devices, iscsi=targets))
