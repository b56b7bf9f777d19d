"""The AWS burst pool: an egress-only VPC and disposable workers that join over Tailscale.

Nothing can connect in: the security group has no ingress rule but, by default, UDP 41641 (the
port of Tailscale's direct connections; without it Tailscale falls back to its DERP relays).
Egress goes through an internet gateway when the pool gives nodes a public IP, or through a NAT
gateway in a small public subnet (the VPC's last /28) when it does not.

The nodes get no instance profile (no AWS credentials on the machine), require IMDSv2, and
every volume is encrypted gp3. The image must be a cloud-init image (Debian's official AMIs are).
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network

import pulumi
import pulumi_aws as aws

from ecoma_infra.errors import EcomaError
from ecoma_infra.program.components.pool import (
    TAILSCALE_UDP_PORT,
    BurstPoolArgs,
    BurstPoolComponent,
    node_fact,
    user_data,
)
from ecoma_infra.program.components.tailscale import node_auth_key
from ecoma_infra.program.disks import aws_device, extra_disks, ordered
from ecoma_infra.program.tags import cost_tags
from ecoma_infra.stack.model import AwsPool, Disk, Tier
from ecoma_infra.stack.pulumi_config import Secrets, as_secret
from ecoma_infra.stack.rules import NAT_SUBNET_PREFIX, nat_subnet

ANYWHERE = "0.0.0.0/0"
# A fixed attachment slot per tier, so that adding or removing one disk never moves another.
# The guest finds a disk by its NVMe serial (the volume id), never by this name.
TIER_DEVICE_NAMES: dict[Tier, str] = {
    "swap": "/dev/sdf",
    "hot": "/dev/sdg",
    "warm": "/dev/sdh",
    "cold": "/dev/sdi",
}
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::(?P<account>[0-9]{12}):role/.+$")
# The role session of the web-identity provider. pulumi_aws's
# `ProviderAssumeRoleWithWebIdentityArgs.duration` is a Go duration string ("units ns, us, ms,
# s, h or m"), between 15 minutes and 12 hours. STS grants no more than the role's maximum
# session duration (AssumeRoleWithWebIdentity's DurationSeconds), which is 1 h unless the role
# raises it: 1 h works with every role.
WEB_IDENTITY_SESSION = "1h"


def role_account(role_arn: str) -> str:
    """`arn:aws:iam::123456789012:role/x` -> `123456789012`."""
    match = _ROLE_ARN.match(role_arn)
    if match is None:
        raise EcomaError(
            f"ecoma:burst.aws.role_arn: {role_arn!r} is not an IAM role ARN. "
            "Fix: use arn:aws:iam::<12-digit account>:role/<name>"
        )
    return match.group("account")


def make_provider(
    name: str,
    pool: AwsPool,
    secrets: Secrets,
    *,
    stack: str,
    opts: pulumi.ResourceOptions | None = None,
) -> aws.Provider:
    """An AWS provider that never falls back to ambient credentials.

    With `role_arn` it assumes the role with the CI's OIDC token (secret key
    `aws_web_identity_token`) and only accepts the role's account; without, it uses the static
    keys `aws_access_key_id`/`aws_secret_access_key`. The instance metadata service is never
    asked for credentials, and every resource gets the pool's cost tags by default.
    """
    web_identity = None
    allowed_account_ids = None
    access_key = secret_key = None
    if pool.role_arn:
        web_identity = aws.ProviderAssumeRoleWithWebIdentityArgs(
            role_arn=pool.role_arn,
            session_name=f"ecoma-{stack}-burst",
            # The session must outlive one `up`: the provider assumes the role with the token
            # that `ecoma-infra` set right before that `up` (platforms.pulumi_automation), which
            # lives only minutes, so a session renewed within the `up` would find it expired.
            duration=WEB_IDENTITY_SESSION,
            # The SDK does not mark this field secret by itself.
            web_identity_token=as_secret(secrets.require("aws_web_identity_token")),
        )
        allowed_account_ids = [role_account(pool.role_arn)]
    else:
        access_key = secrets.require("aws_access_key_id")
        secret_key = secrets.require("aws_secret_access_key")
    return aws.Provider(
        name,
        region=pool.region,
        assume_role_with_web_identity=web_identity,
        allowed_account_ids=allowed_account_ids,
        access_key=access_key,
        secret_key=secret_key,
        skip_metadata_api_check=True,
        default_tags=aws.ProviderDefaultTagsArgs(tags=cost_tags(stack, "wkr", burst=True)),
        opts=opts,
    )


def nat_subnet_cidr(vpc: IPv4Network, subnet: IPv4Network) -> IPv4Network:
    """The small public subnet that holds the NAT gateway: the VPC's last /28, else its first
    (`validate` checks there is one: stack.rules.nat_subnet)."""
    found = nat_subnet(vpc, subnet)
    if found is None:
        raise EcomaError(
            f"ecoma:burst.aws.subnet_cidr: {subnet} leaves no room in vpc_cidr {vpc} for the NAT "
            f"gateway's /{NAT_SUBNET_PREFIX}. Fix: shrink subnet_cidr, widen vpc_cidr or set "
            "public_ip: true"
        )
    return found


def _root_device(node: str, root: aws.ec2.outputs.InstanceRootBlockDevice) -> str:
    if not root.volume_id:
        raise EcomaError(f"AWS reported no root volume id for burst node {node}")
    return aws_device(root.volume_id)


def _named(tags: dict[str, str], name: str) -> dict[str, str]:
    return {**tags, "Name": name}


class AwsBurstPool(BurstPoolComponent):
    """VPC, subnet(s), egress path and security group, then per node: a Tailscale key, the
    instance and one encrypted EBS volume (plus attachment) per extra disk."""

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
        super().__init__("ecoma:aws:BurstPool", name, opts)
        pool = args.pool
        if not isinstance(pool, AwsPool):
            raise TypeError(f"{name}: AwsBurstPool needs an AwsPool, got {type(pool).__name__}")
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        shared = self._shared_tags = args.pool_tags()

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(pool.vpc_cidr),
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=_named(shared, f"{name}-vpc"),
            opts=child,
        )
        self.subnet = aws.ec2.Subnet(
            f"{name}-subnet",
            vpc_id=self.vpc.id,
            cidr_block=str(pool.subnet_cidr),
            availability_zone=pool.zone,
            map_public_ip_on_launch=False,
            tags=_named(shared, f"{name}-subnet"),
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=self.vpc.id, tags=_named(shared, f"{name}-igw"), opts=child
        )
        nodes = args.node_names()
        egress: pulumi.Resource | None = None
        if pool.public_ip:
            egress = self._route_table(name, "public", self.subnet, {"gateway_id": igw.id}, child)
        elif nodes:
            # A NAT gateway and its address bill by the hour whether or not anything uses them:
            # they exist only while the pool has nodes (and `hourly_cost` counts them then).
            nat_subnet = aws.ec2.Subnet(
                f"{name}-nat-subnet",
                vpc_id=self.vpc.id,
                cidr_block=str(nat_subnet_cidr(pool.vpc_cidr, pool.subnet_cidr)),
                availability_zone=pool.zone,
                map_public_ip_on_launch=False,
                tags=_named(shared, f"{name}-nat-subnet"),
                opts=child,
            )
            self._route_table(name, "nat-public", nat_subnet, {"gateway_id": igw.id}, child)
            eip = aws.ec2.Eip(
                f"{name}-nat-eip",
                domain="vpc",
                tags=_named(shared, f"{name}-nat-eip"),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[igw])),
            )
            nat = aws.ec2.NatGateway(
                f"{name}-nat",
                allocation_id=eip.id,
                subnet_id=nat_subnet.id,
                connectivity_type="public",
                tags=_named(shared, f"{name}-nat"),
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[igw])),
            )
            egress = self._route_table(
                name, "private", self.subnet, {"nat_gateway_id": nat.id}, child
            )

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=self.vpc.id,
            description="ecoma burst workers: no inbound but Tailscale",
            revoke_rules_on_delete=True,
            tags=_named(shared, f"{name}-sg"),
            opts=child,
        )
        # The provider removes AWS's default allow-all egress rule: state it explicitly.
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress-all",
            security_group_id=self.security_group.id,
            ip_protocol="-1",
            cidr_ipv4=ANYWHERE,
            description="all egress (package mirrors, Tailscale, k3s over the overlay)",
            tags=shared,
            opts=child,
        )
        if tailscale_direct:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-tailscale-udp",
                security_group_id=self.security_group.id,
                ip_protocol="udp",
                from_port=TAILSCALE_UDP_PORT,
                to_port=TAILSCALE_UDP_PORT,
                cidr_ipv4=ANYWHERE,
                description="Tailscale direct connections",
                tags=shared,
                opts=child,
            )

        if nodes:
            # Debian's AMI by owner and exact name, in the pool's region, through the pool's own
            # provider ("If more or less than a single match is returned by the search, this
            # call will fail", ec2.get_ami): a pinned name finds exactly one.
            ami = aws.ec2.get_ami_output(
                owners=[pool.image.owner],
                filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[pool.image.name])],
                most_recent=True,
                opts=pulumi.InvokeOutputOptions(parent=self, provider=provider),
            )
            for node in nodes:
                self._node(
                    name,
                    node,
                    args=args,
                    ami=ami.id,
                    egress=egress,
                    child=child,
                    tailscale=tailscale_provider,
                )

        self.register_outputs(
            {
                "vpc_id": self.vpc.id,
                "subnet_id": self.subnet.id,
                "security_group_id": self.security_group.id,
                "instance_ids": {node: inst.id for node, inst in self.instances.items()},
            }
        )

    def _route_table(
        self,
        name: str,
        purpose: str,
        subnet: aws.ec2.Subnet,
        target: dict[str, pulumi.Input[str]],
        child: pulumi.ResourceOptions,
    ) -> aws.ec2.RouteTableAssociation:
        table = aws.ec2.RouteTable(
            f"{name}-{purpose}-rt",
            vpc_id=self.vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=ANYWHERE, **target)],
            tags=_named(self._shared_tags, f"{name}-{purpose}-rt"),
            opts=child,
        )
        return aws.ec2.RouteTableAssociation(
            f"{name}-{purpose}-rta", subnet_id=subnet.id, route_table_id=table.id, opts=child
        )

    def _node(
        self,
        name: str,
        node: str,
        *,
        args: BurstPoolArgs,
        ami: pulumi.Input[str],
        egress: pulumi.Resource | None,
        child: pulumi.ResourceOptions,
        tailscale: pulumi.ProviderResource,
    ) -> None:
        pool = args.pool
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
        instance = aws.ec2.Instance(
            f"{name}-{node}",
            ami=ami,
            instance_type=pool.instance_type,
            subnet_id=self.subnet.id,
            vpc_security_group_ids=[self.security_group.id],
            associate_public_ip_address=pool.public_ip,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled",
                http_tokens="required",
                http_put_response_hop_limit=1,
                instance_metadata_tags="disabled",
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                encrypted=True,
                volume_type="gp3",
                volume_size=os_disk.size_gb,
                delete_on_termination=True,
                tags=_named(tags, f"{node}-{os_disk.tier}"),
            ),
            user_data=user_data(args.boot(node), key),
            user_data_replace_on_change=True,
            tags=_named(tags, node),
            # The node installs Tailscale at first boot: its way out must exist by then.
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[egress] if egress else [])
            ),
        )
        devices: list[tuple[Disk, pulumi.Input[str]]] = [
            (os_disk, instance.root_block_device.apply(lambda root: _root_device(node, root)))
        ]
        for disk in extra_disks(pool.disks):
            volume = aws.ebs.Volume(
                f"{name}-{node}-{disk.tier}",
                availability_zone=pool.zone,
                size=disk.size_gb,
                type="gp3",
                encrypted=True,
                tags=_named(tags, f"{node}-{disk.tier}"),
                opts=child,
            )
            aws.ec2.VolumeAttachment(
                f"{name}-{node}-{disk.tier}-attachment",
                device_name=TIER_DEVICE_NAMES[disk.tier],
                instance_id=instance.id,
                volume_id=volume.id,
                # Scale-down destroys a drained node: detaching a volume that is still mounted
                # can hang "busy". Stopping the instance first ("Stops the instance, if it is
                # not already stopped", ec2.VolumeAttachment) unmounts it in a clean shutdown,
                # then the detach and the termination follow. Never `force_detach` (data loss).
                stop_instance_before_detaching=True,
                opts=child,
            )
            devices.append((disk, volume.id.apply(aws_device)))
        self.instances[node] = instance
        self.node_facts.append(node_fact(args, node, devices))
