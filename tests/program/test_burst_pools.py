"""The AWS, GCP and OCI burst pools under Pulumi mocks, built from the real prod stack file.

Every test gets a fresh Pulumi runtime (`settings.reset_options()` + `set_mocks`) with a monitor
that records each RegisterResourceRequest: the resource options (provider, parent) are only
visible there. Registrations are drained with `wait_for_rpcs()` before any assertion, and
outputs are awaited explicitly, so every assertion really runs.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pulumi_oci as oci
import pulumi_tailscale as tailscale
import pytest
import yaml
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from ecoma_infra.errors import EcomaError
from ecoma_infra.program import offline as preview
from ecoma_infra.program.components import aws as aws_pool
from ecoma_infra.program.components import gcp as gcp_pool
from ecoma_infra.program.components import oci as oci_pool
from ecoma_infra.program.components.pool import BurstPoolArgs, BurstPoolComponent
from ecoma_infra.program.disks import extra_disks
from ecoma_infra.program.inventory import NodeFact
from ecoma_infra.program.offline import Recorded
from ecoma_infra.program.tags import COST_TAG_KEYS
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import AwsPool, BurstPool, CloudProvider, StackConfig
from ecoma_infra.stack.pulumi_config import Secrets

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "ecoma-infra"
STACK = "prod"
PROVIDERS: tuple[CloudProvider, ...] = ("aws", "gcp", "oci")
TAILSCALE_KEY = "tailscale:index/tailnetKey:TailnetKey"
OCI_ADS = "oci:Identity/getAvailabilityDomains:getAvailabilityDomains"


# --------------------------------------------------------------------------- mocks


def fake_id(prefix: str, name: str) -> str:
    """A deterministic, AWS-shaped id (17 hex digits) per resource name."""
    return f"{prefix}-{hashlib.sha256(name.encode()).hexdigest()[:17]}"


def root_volume_id(instance_name: str) -> str:
    return fake_id("vol", f"{instance_name}-root")


def ad_name(index: int) -> str:
    return f"Uocm:EU-FRANKFURT-1-AD-{index}"


@dataclass
class Call:
    token: str
    args: dict[str, Any]
    provider: str
    result: dict[str, Any]


AMI_ID = "ami-0a1b2c3d4e5f60718"


def iscsi_address(attachment: str) -> str:
    return f"169.254.2.{int(hashlib.sha256(attachment.encode()).hexdigest(), 16) % 200 + 2}"


def iscsi_iqn(attachment: str) -> str:
    return f"iqn.2015-12.com.oracleiaas:{hashlib.sha256(attachment.encode()).hexdigest()[:12]}"


class CloudMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ == "aws:ebs/volume:Volume":
            resource_id = fake_id("vol", args.name)
        elif args.typ == "aws:ec2/instance:Instance":
            resource_id = fake_id("i", args.name)
            outputs["rootBlockDevice"] = {
                **outputs.get("rootBlockDevice", {}),
                "volumeId": root_volume_id(args.name),
            }
        elif args.typ == TAILSCALE_KEY:
            outputs["key"] = f"tskey-auth-{args.name}"
        elif args.typ == "oci:Core/volumeAttachment:VolumeAttachment":
            # What OCI computes for an iSCSI attachment: the target of this one volume.
            outputs.update(ipv4=iscsi_address(args.name), port=3260, iqn=iscsi_iqn(args.name))
        elif args.typ in ("gcp:compute/network:Network", "gcp:compute/router:Router"):
            outputs["name"] = args.name
            outputs["selfLink"] = f"https://compute.googleapis.com/{args.name}"
        return resource_id, outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        if args.token == OCI_ADS:
            # Deliberately out of order: the component must pick AD-1 by name.
            domains = [
                {"name": ad_name(i), "id": f"ad{i}", "compartmentId": args.args["compartmentId"]}
                for i in (3, 1, 2)
            ]
            return {
                "availabilityDomains": domains,
                "compartmentId": args.args["compartmentId"],
                "id": "ads",
            }, []
        if args.token == "aws:ec2/getAmi:getAmi":
            result = {"id": AMI_ID, "name": args.args["filters"][0]["values"][0]}
            self.calls.append(Call(args.token, dict(args.args), args.provider, result))
            return result, []
        return {}, []


Record = Recorded


class RecordingMonitor(preview.RecordingMonitor):
    """The offline preview's recording monitor, with lookups for these tests."""

    def of_type(self, typ: str) -> list[Record]:
        return sorted((r for r in self.records if r.type == typ), key=lambda r: r.name)

    def one(self, typ: str) -> Record:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, got {[r.name for r in found]}"
        return found[0]

    def children(self) -> list[Record]:
        """Everything but the stack, the components and the providers."""
        return [
            r
            for r in self.records
            if r.custom and not r.type.startswith("pulumi:providers:") and r.parent
        ]


@pytest.fixture
def monitor() -> Iterator[RecordingMonitor]:
    settings.reset_options()
    recorder = RecordingMonitor(CloudMocks())
    pulumi.runtime.set_mocks(
        recorder.mocks, project=PROJECT, stack=STACK, preview=False, monitor=recorder
    )
    yield recorder
    settings.reset_options()


def settle() -> None:
    """Wait until every registration and apply has run (exceptions in applies surface here)."""
    _sync_await(wait_for_rpcs())


def resolve(value: pulumi.Input[Any]) -> Any:
    return _sync_await(pulumi.Output.from_input(value).future())


def is_secret(value: Any) -> bool:
    return bool(rpc.is_rpc_secret(value))


def plain(value: Any) -> Any:
    """The value with every secret signature dict unwrapped, recursively."""
    if rpc.is_rpc_secret(value):
        return plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- building pools


@pytest.fixture(scope="module")
def prod() -> StackConfig:
    return load_stack_file(ROOT / "Pulumi.prod.yaml").config


def prod_pool(config: StackConfig, provider: CloudProvider, **update: Any) -> BurstPool:
    pool = getattr(config.burst, provider)
    assert pool is not None, f"Pulumi.prod.yaml has no {provider} pool"
    # Validated again, so that dicts given for nested fields (disks) become models.
    return type(pool).model_validate({**pool.model_dump(), **update})


SECRETS = {
    "aws_web_identity_token": "eyJ-oidc-token",
    "aws_access_key_id": "AKIAEXAMPLE",
    "aws_secret_access_key": "aws-secret",
    "gcp_credentials": '{"type": "service_account"}',
    "oci_private_key": "-----BEGIN PRIVATE KEY-----",
}
MODULES = {"aws": aws_pool, "gcp": gcp_pool, "oci": oci_pool}
COMPONENTS: dict[CloudProvider, Callable[..., BurstPoolComponent]] = {
    "aws": aws_pool.AwsBurstPool,
    "gcp": gcp_pool.GcpBurstPool,
    "oci": oci_pool.OciBurstPool,
}


@dataclass
class Built:
    component: BurstPoolComponent
    args: BurstPoolArgs
    provider: pulumi.ProviderResource
    tailscale_provider: pulumi.ProviderResource


def build(
    config: StackConfig, provider: CloudProvider, pool: BurstPool, **component_args: Any
) -> Built:
    secrets = Secrets({key: pulumi.Output.secret(value) for key, value in SECRETS.items()})
    cloud = MODULES[provider].make_provider(f"{provider}-burst", pool, secrets, stack=STACK)
    ts = tailscale.Provider("tailscale", api_key=pulumi.Output.secret("tskey-api-x"))
    args = BurstPoolArgs(
        stack=STACK,
        provider=provider,
        pool=pool,
        ssh=config.ssh,
        storage=config.storage,
        tailscale=config.tailscale,
        network=config.network,
    )
    component = COMPONENTS[provider](
        f"burst-{provider}", args, provider=cloud, tailscale_provider=ts, **component_args
    )
    settle()
    return Built(component, args, cloud, ts)


# What the tests know about each cloud's resources.
INSTANCE = {
    "aws": "aws:ec2/instance:Instance",
    "gcp": "gcp:compute/instance:Instance",
    "oci": "oci:Core/instance:Instance",
}
VOLUME = {
    "aws": "aws:ebs/volume:Volume",
    "gcp": "gcp:compute/disk:Disk",
    "oci": "oci:Core/volume:Volume",
}
ATTACHMENT = {
    "aws": "aws:ec2/volumeAttachment:VolumeAttachment",
    "oci": "oci:Core/volumeAttachment:VolumeAttachment",
}
NETWORK = {
    "aws": [
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/securityGroup:SecurityGroup",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/routeTableAssociation:RouteTableAssociation",
    ],
    "gcp": [
        "gcp:compute/network:Network",
        "gcp:compute/subnetwork:Subnetwork",
        "gcp:compute/firewall:Firewall",
    ],
    "oci": [
        "oci:Core/vcn:Vcn",
        "oci:Core/subnet:Subnet",
        "oci:Core/routeTable:RouteTable",
        "oci:Core/securityList:SecurityList",
    ],
}
# Every resource type a pool may create, with its class: a new type must be added here, so the
# tag check below cannot miss it.
CLASSES: dict[str, type[pulumi.CustomResource]] = {
    "aws:ec2/vpc:Vpc": aws.ec2.Vpc,
    "aws:ec2/subnet:Subnet": aws.ec2.Subnet,
    "aws:ec2/securityGroup:SecurityGroup": aws.ec2.SecurityGroup,
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": aws.vpc.SecurityGroupEgressRule,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": aws.vpc.SecurityGroupIngressRule,
    "aws:ec2/internetGateway:InternetGateway": aws.ec2.InternetGateway,
    "aws:ec2/routeTable:RouteTable": aws.ec2.RouteTable,
    "aws:ec2/routeTableAssociation:RouteTableAssociation": aws.ec2.RouteTableAssociation,
    "aws:ec2/eip:Eip": aws.ec2.Eip,
    "aws:ec2/natGateway:NatGateway": aws.ec2.NatGateway,
    "aws:ec2/instance:Instance": aws.ec2.Instance,
    "aws:ebs/volume:Volume": aws.ebs.Volume,
    "aws:ec2/volumeAttachment:VolumeAttachment": aws.ec2.VolumeAttachment,
    "gcp:compute/network:Network": gcp.compute.Network,
    "gcp:compute/subnetwork:Subnetwork": gcp.compute.Subnetwork,
    "gcp:compute/firewall:Firewall": gcp.compute.Firewall,
    "gcp:compute/router:Router": gcp.compute.Router,
    "gcp:compute/routerNat:RouterNat": gcp.compute.RouterNat,
    "gcp:compute/instance:Instance": gcp.compute.Instance,
    "gcp:compute/disk:Disk": gcp.compute.Disk,
    "oci:Core/vcn:Vcn": oci.core.Vcn,
    "oci:Core/subnet:Subnet": oci.core.Subnet,
    "oci:Core/natGateway:NatGateway": oci.core.NatGateway,
    "oci:Core/internetGateway:InternetGateway": oci.core.InternetGateway,
    "oci:Core/routeTable:RouteTable": oci.core.RouteTable,
    "oci:Core/securityList:SecurityList": oci.core.SecurityList,
    "oci:Core/instance:Instance": oci.core.Instance,
    "oci:Core/volume:Volume": oci.core.Volume,
    "oci:Core/volumeAttachment:VolumeAttachment": oci.core.VolumeAttachment,
    TAILSCALE_KEY: tailscale.TailnetKey,
}
# The tag map of each cloud: (Python argument, engine property).
TAG_FIELD = {
    "aws": ("tags", "tags"),
    "gcp": ("labels", "labels"),
    "oci": ("freeform_tags", "freeformTags"),
}


def tag_property(cls: type[pulumi.CustomResource], provider: str) -> str | None:
    """The engine name of the resource's tag map, or None if the type takes no tags."""
    python_name, engine_name = TAG_FIELD[provider]
    parameters = inspect.signature(cls._internal_init).parameters  # type: ignore[attr-defined]
    return engine_name if python_name in parameters else None


# --------------------------------------------------------------------------- counts


@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_n_gives_n_instances_and_one_volume_per_extra_disk(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    pool = prod_pool(prod, provider, count=3)
    built = build(prod, provider, pool)
    extra = len(extra_disks(pool.disks))
    assert extra >= 1, "the prod pools are meant to have extra disks"

    instances = monitor.of_type(INSTANCE[provider])
    assert [r.name for r in instances] == [
        f"burst-{provider}-wkr-{provider}-{i}" for i in (1, 2, 3)
    ]
    assert len(monitor.of_type(VOLUME[provider])) == 3 * extra
    if provider == "gcp":
        # GCP attaches disks inline on the instance.
        assert all(len(r.inputs["attachedDisks"]) == extra for r in instances)
    else:
        assert len(monitor.of_type(ATTACHMENT[provider])) == 3 * extra
    assert len(monitor.of_type(TAILSCALE_KEY)) == 3
    assert sorted(built.component.instances) == [f"wkr-{provider}-{i}" for i in (1, 2, 3)]
    assert len(built.component.node_facts) == 3


# What an AWS pool without public IPs has only while it has nodes: the NAT gateway and its
# address bill by the hour, used or not.
AWS_NAT_PATH = [
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/eip:Eip",
    "aws:ec2/routeTable:RouteTable",
    "aws:ec2/routeTableAssociation:RouteTableAssociation",
]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_count_zero_creates_no_node_but_keeps_the_network(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    built = build(prod, provider, prod_pool(prod, provider, count=0))

    for typ in (INSTANCE[provider], VOLUME[provider], TAILSCALE_KEY, *ATTACHMENT.values()):
        assert monitor.of_type(typ) == [], typ
    for typ in NETWORK[provider]:
        if provider == "aws" and typ in AWS_NAT_PATH:
            continue  # prod's AWS pool has no public IPs: its egress path is the NAT's
        assert monitor.of_type(typ), f"{typ} missing from an empty pool"
    assert built.component.instances == {}
    assert built.component.node_facts == []


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_resource_uses_the_explicit_provider_and_hangs_off_the_component(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    build(prod, provider, prod_pool(prod, provider, count=2))
    (component,) = [r for r in monitor.records if r.type == f"ecoma:{provider}:BurstPool"]
    cloud = monitor.one(f"pulumi:providers:{provider}")
    ts = monitor.one("pulumi:providers:tailscale")

    children = monitor.children()
    assert len(children) > 10
    for record in children:
        assert record.provider, f"{record.type} {record.name} uses a default provider"
        expected = ts if record.type == TAILSCALE_KEY else cloud
        assert record.provider.startswith(expected.urn + "::"), (record.name, record.provider)
        assert record.parent == component.urn, f"{record.name} is not parented to the pool"
        assert record.name.startswith(f"burst-{provider}-"), record.name
        assert record.type in CLASSES, f"add {record.type} to CLASSES"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_taggable_resource_carries_the_cost_tags(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    for public_ip in (False, True):
        build(prod, provider, prod_pool(prod, provider, count=2, public_ip=public_ip))

    checked = 0
    for record in monitor.children():
        if record.type == TAILSCALE_KEY:
            continue
        prop = tag_property(CLASSES[record.type], provider)
        if prop is None:
            continue
        tags = record.inputs.get(prop) or {}
        missing = [key for key in COST_TAG_KEYS if key not in tags]
        assert not missing, f"{record.type} {record.name} lacks {missing}"
        checked += 1
    assert checked >= 8
    node_tagged = monitor.of_type(INSTANCE[provider]) + monitor.of_type(VOLUME[provider])
    assert node_tagged
    assert all(r.inputs[TAG_FIELD[provider][1]]["ecoma-burst"] == "true" for r in node_tagged)


def test_aws_root_volume_and_node_resources_are_named_and_tagged(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "aws", prod_pool(prod, "aws", count=1))
    instance = monitor.one(INSTANCE["aws"])
    root_tags = instance.inputs["rootBlockDevice"]["tags"]
    assert set(COST_TAG_KEYS) <= set(root_tags)
    assert root_tags["Name"] == "wkr-aws-1-hot"
    assert instance.inputs["tags"]["Name"] == "wkr-aws-1"
    assert {r.inputs["tags"]["Name"] for r in monitor.of_type(VOLUME["aws"])} == {
        "wkr-aws-1-warm",
        "wkr-aws-1-swap",
    }


# --------------------------------------------------------------------------- security


def test_aws_instances_require_imdsv2_and_encrypt_every_volume(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "aws", prod_pool(prod, "aws", count=2))
    instances = monitor.of_type(INSTANCE["aws"])
    assert len(instances) == 2
    for instance in instances:
        assert instance.inputs["metadataOptions"]["httpTokens"] == "required"
        root = instance.inputs["rootBlockDevice"]
        assert root["encrypted"] is True
        assert root["volumeType"] == "gp3"
        assert root["volumeSize"] == 50
        assert "iamInstanceProfile" not in instance.inputs
        assert instance.inputs["userDataReplaceOnChange"] is True
    volumes = monitor.of_type(VOLUME["aws"])
    assert len(volumes) == 4
    assert all(v.inputs["encrypted"] is True and v.inputs["type"] == "gp3" for v in volumes)
    assert sorted(a.inputs["deviceName"] for a in monitor.of_type(ATTACHMENT["aws"])) == [
        "/dev/sdf",
        "/dev/sdf",
        "/dev/sdh",
        "/dev/sdh",
    ]


def inbound_rules(monitor: RecordingMonitor, provider: CloudProvider) -> list[tuple[str, int, int]]:
    """Every inbound permission as (protocol, first port, last port); fails on unknown shapes."""
    rules: list[tuple[str, int, int]] = []
    if provider == "aws":
        for sg in monitor.of_type("aws:ec2/securityGroup:SecurityGroup"):
            assert not sg.inputs.get("ingress"), "inline SG ingress rules"
        for rule in monitor.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"):
            rules.append(
                (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"])
            )
    elif provider == "gcp":
        for fw in monitor.of_type("gcp:compute/firewall:Firewall"):
            assert fw.inputs.get("direction", "INGRESS") == "INGRESS"
            assert fw.inputs["targetTags"] == [gcp_pool.NODE_NETWORK_TAG]
            for allow in fw.inputs["allows"]:
                ports = allow.get("ports")
                assert ports, "a firewall rule without ports opens every port"
                for port in ports:
                    first, _, last = port.partition("-")
                    rules.append((allow["protocol"], int(first), int(last or first)))
    else:
        for sl in monitor.of_type("oci:Core/securityList:SecurityList"):
            for rule in sl.inputs.get("ingressSecurityRules", []):
                udp = rule.get("udpOptions")
                assert rule["protocol"] == "17", f"non-UDP ingress {rule}"
                assert udp, f"UDP ingress on every port {rule}"
                rules.append(("udp", udp["min"], udp["max"]))
    return rules


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("public_ip", [False, True])
def test_the_only_way_in_is_tailscale_udp(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider, public_ip: bool
) -> None:
    build(prod, provider, prod_pool(prod, provider, count=1, public_ip=public_ip))
    rules = inbound_rules(monitor, provider)
    assert rules == [("udp", 41641, 41641)]
    assert not any(first <= 22 <= last for _, first, last in rules), "SSH is open"
    if provider == "aws":
        egress = monitor.one("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        assert egress.inputs["ipProtocol"] == "-1"
        assert egress.inputs["cidrIpv4"] == "0.0.0.0/0"
    if provider == "oci":
        sl = monitor.one("oci:Core/securityList:SecurityList")
        assert sl.inputs["egressSecurityRules"] == [
            {"destination": "0.0.0.0/0", "destinationType": "CIDR_BLOCK", "protocol": "all"}
        ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_without_tailscale_direct_nothing_is_let_in(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    build(prod, provider, prod_pool(prod, provider, count=1), tailscale_direct=False)
    assert inbound_rules(monitor, provider) == []
    assert monitor.of_type(INSTANCE[provider]), "the pool was still built"


def test_gcp_metadata_locks_down_logins_and_the_serial_port(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "gcp", prod_pool(prod, "gcp", count=2))
    instances = monitor.of_type(INSTANCE["gcp"])
    assert len(instances) == 2
    for instance in instances:
        metadata = plain(instance.inputs["metadata"])
        assert metadata["enable-oslogin"] == "TRUE"
        assert metadata["block-project-ssh-keys"] == "TRUE"
        assert metadata["serial-port-enable"] == "FALSE"
        shielded = instance.inputs["shieldedInstanceConfig"]
        assert shielded == {
            "enableSecureBoot": True,
            "enableVtpm": True,
            "enableIntegrityMonitoring": True,
        }
        assert "serviceAccount" not in instance.inputs
        assert instance.inputs["tags"] == [gcp_pool.NODE_NETWORK_TAG]
        assert instance.inputs["bootDisk"]["initializeParams"]["type"] == "pd-balanced"
    disks = monitor.of_type(VOLUME["gcp"])
    assert len(disks) == 2
    assert all(disk.inputs["type"] == "pd-balanced" for disk in disks)


@pytest.mark.parametrize("public_ip", [False, True])
def test_aws_public_ip_only_when_the_pool_asks(
    monitor: RecordingMonitor, prod: StackConfig, public_ip: bool
) -> None:
    pool = prod_pool(prod, "aws", count=2, public_ip=public_ip)
    build(prod, "aws", pool)
    instances = monitor.of_type(INSTANCE["aws"])
    assert [r.inputs["associatePublicIpAddress"] for r in instances] == [public_ip] * 2
    subnets = {r.name: r.inputs for r in monitor.of_type("aws:ec2/subnet:Subnet")}
    assert all(s["mapPublicIpOnLaunch"] is False for s in subnets.values())
    tables = {r.name: r.inputs["routes"] for r in monitor.of_type("aws:ec2/routeTable:RouteTable")}
    if public_ip:
        assert monitor.of_type("aws:ec2/natGateway:NatGateway") == []
        assert monitor.of_type("aws:ec2/eip:Eip") == []
        assert list(subnets) == ["burst-aws-subnet"]
        (routes,) = tables.values()
        assert routes[0]["gatewayId"] == "burst-aws-igw-id"
    else:
        nat = monitor.one("aws:ec2/natGateway:NatGateway")
        assert nat.inputs["allocationId"] == "burst-aws-nat-eip-id"
        assert nat.inputs["subnetId"] == "burst-aws-nat-subnet-id"
        assert subnets["burst-aws-nat-subnet"]["cidrBlock"] == "10.50.255.240/28"
        assert tables["burst-aws-private-rt"][0]["natGatewayId"] == "burst-aws-nat-id"
        assert tables["burst-aws-nat-public-rt"][0]["gatewayId"] == "burst-aws-igw-id"
        associations = {
            r.inputs["subnetId"]: r.inputs["routeTableId"]
            for r in monitor.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
        }
        assert associations == {
            "burst-aws-subnet-id": "burst-aws-private-rt-id",
            "burst-aws-nat-subnet-id": "burst-aws-nat-public-rt-id",
        }


@pytest.mark.parametrize("public_ip", [False, True])
def test_gcp_public_ip_only_when_the_pool_asks(
    monitor: RecordingMonitor, prod: StackConfig, public_ip: bool
) -> None:
    build(prod, "gcp", prod_pool(prod, "gcp", count=2, public_ip=public_ip))
    for instance in monitor.of_type(INSTANCE["gcp"]):
        (nic,) = instance.inputs["networkInterfaces"]
        assert bool(nic.get("accessConfigs")) is public_ip
    nats = monitor.of_type("gcp:compute/routerNat:RouterNat")
    if public_ip:
        assert nats == []
    else:
        (nat,) = nats
        assert nat.inputs["router"] == "burst-gcp-router"
        assert nat.inputs["subnetworks"][0]["name"] == "burst-gcp-subnet-id"


@pytest.mark.parametrize("public_ip", [False, True])
def test_oci_public_ip_only_when_the_pool_asks(
    monitor: RecordingMonitor, prod: StackConfig, public_ip: bool
) -> None:
    build(prod, "oci", prod_pool(prod, "oci", count=2, public_ip=public_ip))
    for instance in monitor.of_type(INSTANCE["oci"]):
        vnic = instance.inputs["createVnicDetails"]
        assert vnic["assignPublicIp"] == ("true" if public_ip else "false")
        assert vnic["subnetId"] == "burst-oci-subnet-id"
    subnet = monitor.one("oci:Core/subnet:Subnet")
    assert subnet.inputs["prohibitPublicIpOnVnic"] is (not public_ip)
    assert subnet.inputs["prohibitInternetIngress"] is (not public_ip)
    (rule,) = monitor.one("oci:Core/routeTable:RouteTable").inputs["routeRules"]
    gateway = "burst-oci-igw-id" if public_ip else "burst-oci-nat-id"
    assert rule["networkEntityId"] == gateway
    assert bool(monitor.of_type("oci:Core/natGateway:NatGateway")) is (not public_ip)
    assert bool(monitor.of_type("oci:Core/internetGateway:InternetGateway")) is public_ip


# --------------------------------------------------------------------------- Tailscale and boot


@pytest.mark.parametrize("provider", PROVIDERS)
def test_tailscale_keys_are_ephemeral_single_use_preauthorized_wkr_keys(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    build(prod, provider, prod_pool(prod, provider, count=2))
    keys = monitor.of_type(TAILSCALE_KEY)
    assert [k.name for k in keys] == [
        f"burst-{provider}-wkr-{provider}-{i}-tailscale-key" for i in (1, 2)
    ]
    for key in keys:
        assert key.inputs["ephemeral"] is True
        assert key.inputs["preauthorized"] is True
        assert key.inputs["reusable"] is False
        assert key.inputs["tags"] == [prod.tailscale.tags["wkr"]] == ["tag:ecoma-wkr"]
        assert key.inputs["expiry"] == prod.tailscale.key_expiry_seconds == 3600


def user_data_of(provider: CloudProvider, instance: Record) -> tuple[str, bool]:
    """An instance's user data, and whether it reached the engine as a secret.

    A secret value inside a map makes the whole map secret (GCP and OCI metadata).
    """
    if provider == "aws":
        raw = instance.inputs["userData"]
        return plain(raw), is_secret(raw)
    metadata = instance.inputs["metadata"]
    whole_map_secret = is_secret(metadata)
    entries = rpc.unwrap_rpc_secret(metadata) if whole_map_secret else metadata
    value = entries["startup-script" if provider == "gcp" else "user_data"]
    return plain(value), whole_map_secret or is_secret(value)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_user_data_is_secret_and_joins_tailscale_accepting_routes(
    monitor: RecordingMonitor, prod: StackConfig, provider: CloudProvider
) -> None:
    build(prod, provider, prod_pool(prod, provider, count=2))
    instances = monitor.of_type(INSTANCE[provider])
    assert len(instances) == 2
    for index, instance in enumerate(instances, start=1):
        node = f"wkr-{provider}-{index}"
        text, secret = user_data_of(provider, instance)
        assert secret, f"{node}: user data is not secret"
        if provider == "oci":
            text = base64.b64decode(text).decode()
        if provider == "gcp":
            # Google's Debian images run a startup script, not cloud-init: same setup in shell.
            assert text.startswith("#!/bin/bash\n")
            (up,) = [line for line in text.splitlines() if line.startswith("tailscale up")]
            assert "--accept-routes" in up
            assert f"--hostname={node}" in up
            assert "--advertise-routes" not in up
            assert f"tskey-auth-burst-{provider}-{node}-tailscale-key" in text
            assert all(key.split()[1] in text for key in prod.ssh.authorized_keys)
            continue
        assert text.startswith("#cloud-config\n")
        document = yaml.safe_load(text)
        (up,) = [cmd for cmd in document["runcmd"] if cmd[:2] == ["tailscale", "up"]]
        assert "--accept-routes" in up
        assert f"--hostname={node}" in up
        assert not any(arg.startswith("--advertise-routes") for arg in up)
        (key_file,) = [f for f in document["write_files"] if "tailscale" in f["path"]]
        assert key_file["content"] == f"tskey-auth-burst-{provider}-{node}-tailscale-key"
        assert document["users"][0]["ssh_authorized_keys"] == prod.ssh.authorized_keys
    if provider == "oci":
        assert plain(instances[0].inputs["metadata"])["ssh_authorized_keys"] == "\n".join(
            prod.ssh.authorized_keys
        )


# --------------------------------------------------------------------------- node facts


def storage_of(fact: NodeFact) -> dict[str, tuple[str, bool]]:
    return {s.tier: (s.device, s.os_disk) for s in fact.storage}


def test_aws_node_facts_name_disks_by_their_ebs_volume_ids(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    built = build(prod, "aws", prod_pool(prod, "aws", count=2))
    facts = [resolve(f) for f in built.component.node_facts]
    assert [f.name for f in facts] == ["wkr-aws-1", "wkr-aws-2"]
    prefix = "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_"
    for fact in facts:
        base = f"burst-aws-{fact.name}"
        assert storage_of(fact) == {
            "hot": (prefix + root_volume_id(base).replace("-", ""), True),
            "swap": (prefix + fake_id("vol", f"{base}-swap").replace("-", ""), False),
            "warm": (prefix + fake_id("vol", f"{base}-warm").replace("-", ""), False),
        }
        assert fact.provider == "aws"
        assert fact.burst is True
        assert fact.address == f"{fact.name}.tail4e2c1.ts.net"
        assert {s.tier: s.filesystem for s in fact.storage} == {
            "hot": None,
            "swap": "swap",
            "warm": "ext4",
        }


def test_gcp_node_facts_use_the_device_names_given_to_the_disks(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    built = build(prod, "gcp", prod_pool(prod, "gcp", count=1))
    (fact,) = [resolve(f) for f in built.component.node_facts]
    assert storage_of(fact) == {
        "hot": ("/dev/disk/by-id/google-ecoma-hot", True),
        "warm": ("/dev/disk/by-id/google-ecoma-warm", False),
    }
    instance = monitor.one(INSTANCE["gcp"])
    assert instance.inputs["bootDisk"]["deviceName"] == "ecoma-hot"
    assert [d["deviceName"] for d in instance.inputs["attachedDisks"]] == ["ecoma-warm"]
    assert instance.inputs["attachedDisks"][0]["source"] == "burst-gcp-wkr-gcp-1-warm-id"


def test_oci_node_facts_use_the_iscsi_by_path_links(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    pool = prod_pool(
        prod,
        "oci",
        count=1,
        disks=[
            {"tier": "hot", "size_gb": 100, "os": True},
            {"tier": "cold", "size_gb": 500},
            {"tier": "swap", "size_gb": 60},
        ],
    )
    built = build(prod, "oci", pool)
    (fact,) = [resolve(f) for f in built.component.node_facts]
    swap, cold = (f"burst-oci-wkr-oci-1-{tier}-attachment" for tier in ("swap", "cold"))
    # Each data disk at the by-path link of its own iSCSI target: a path no other disk can
    # have, and that does not exist unless the login to that target worked.
    assert storage_of(fact) == {
        "hot": ("", True),
        "swap": (
            f"/dev/disk/by-path/ip-{iscsi_address(swap)}:3260-iscsi-{iscsi_iqn(swap)}-lun-1",
            False,
        ),
        "cold": (
            f"/dev/disk/by-path/ip-{iscsi_address(cold)}:3260-iscsi-{iscsi_iqn(cold)}-lun-1",
            False,
        ),
    }
    targets = {d.tier: d.iscsi for d in fact.storage}
    assert targets == {
        "hot": None,
        "swap": {"address": iscsi_address(swap), "port": 3260, "iqn": iscsi_iqn(swap)},
        "cold": {"address": iscsi_address(cold), "port": 3260, "iqn": iscsi_iqn(cold)},
    }
    attachments = {
        r.name: r.inputs for r in monitor.of_type("oci:Core/volumeAttachment:VolumeAttachment")
    }
    assert set(attachments) == {swap, cold}
    for attachment in attachments.values():
        assert attachment["attachmentType"] == "iscsi"
        assert attachment["isAgentAutoIscsiLoginEnabled"] is False
        assert "device" not in attachment  # no consistent device paths on a Debian image


def test_oci_instance_shape_ad_and_minimum_volume_size(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "oci", prod_pool(prod, "oci", count=1))
    instance = monitor.one(INSTANCE["oci"])
    assert instance.inputs["shape"] == "VM.Standard.E4.Flex"
    assert instance.inputs["shapeConfig"] == {"ocpus": 4.0, "memoryInGbs": 32.0}
    # `AD-1` in the stack file is resolved to the tenancy's first availability domain.
    assert instance.inputs["availabilityDomain"] == ad_name(1)
    assert instance.inputs["sourceDetails"]["bootVolumeSizeInGbs"] == "100"
    assert instance.inputs["isPvEncryptionInTransitEnabled"] is True
    assert instance.inputs["instanceOptions"] == {"areLegacyImdsEndpointsDisabled": True}
    (warm,) = monitor.of_type(VOLUME["oci"])
    assert warm.inputs["sizeInGbs"] == "100"
    assert warm.inputs["availabilityDomain"] == ad_name(1)


# --------------------------------------------------------------------------- providers


def provider_inputs(record: Record) -> dict[str, Any]:
    """Provider inputs arrive JSON-encoded when they are not strings."""
    decoded: dict[str, Any] = {}
    for key, raw in record.inputs.items():
        value = plain(raw)
        if isinstance(value, str) and value[:1] in "[{":
            value = json.loads(value)
        decoded[key] = (value, is_secret(raw))
    return decoded


def test_aws_provider_assumes_the_role_with_the_oidc_token_only(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "aws", prod_pool(prod, "aws", count=0))
    inputs = provider_inputs(monitor.one("pulumi:providers:aws"))
    web_identity, secret = inputs["assumeRoleWithWebIdentity"]
    assert secret, "the OIDC token leaks in the provider's inputs"
    assert web_identity["roleArn"] == "arn:aws:iam::123456789012:role/ecoma-prod-burst"
    assert web_identity["webIdentityToken"] == SECRETS["aws_web_identity_token"]
    # One role session outlives an `up`; every `up` starts one with a token minutes old.
    assert web_identity["duration"] == "1h"
    assert inputs["allowedAccountIds"][0] == ["123456789012"]
    assert inputs["region"][0] == "eu-central-1"
    assert inputs["skipMetadataApiCheck"][0] in (True, "true")
    assert set(inputs["defaultTags"][0]["tags"]) == set(COST_TAG_KEYS)
    assert "accessKey" not in inputs
    assert "secretKey" not in inputs


def test_aws_provider_without_a_role_uses_the_static_keys_as_secrets(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "aws", prod_pool(prod, "aws", count=0, role_arn=None))
    inputs = provider_inputs(monitor.one("pulumi:providers:aws"))
    assert inputs["accessKey"] == (SECRETS["aws_access_key_id"], True)
    assert inputs["secretKey"] == (SECRETS["aws_secret_access_key"], True)
    assert "assumeRoleWithWebIdentity" not in inputs
    assert inputs["skipMetadataApiCheck"][0] in (True, "true")


def test_gcp_provider_has_explicit_secret_credentials_and_default_labels(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "gcp", prod_pool(prod, "gcp", count=0))
    inputs = provider_inputs(monitor.one("pulumi:providers:gcp"))
    # The JSON key file arrives decoded by provider_inputs.
    assert inputs["credentials"] == (json.loads(SECRETS["gcp_credentials"]), True)
    assert inputs["project"][0] == "ecoma-prod"
    assert inputs["region"][0] == "europe-west3"
    assert inputs["zone"][0] == "europe-west3-b"
    assert set(inputs["defaultLabels"][0]) == set(COST_TAG_KEYS)
    assert inputs["addPulumiAttributionLabel"][0] in (False, "false")


def test_oci_provider_signs_with_the_api_key(monitor: RecordingMonitor, prod: StackConfig) -> None:
    build(prod, "oci", prod_pool(prod, "oci", count=0))
    inputs = provider_inputs(monitor.one("pulumi:providers:oci"))
    assert inputs["auth"][0] == "ApiKey"
    assert inputs["privateKey"] == (SECRETS["oci_private_key"], True)
    assert inputs["tenancyOcid"][0] == "ocid1.tenancy.oc1..aaaaaaaaecomatenancy"
    assert inputs["userOcid"][0] == "ocid1.user.oc1..aaaaaaaaecomaci"
    assert inputs["fingerprint"][0] == "3c:1f:9a:0d:44:7e:b2:5a:90:11:ce:6f:2a:73:d8:e1"
    assert inputs["region"][0] == "eu-frankfurt-1"


# --------------------------------------------------------------------------- pure helpers


def test_role_account_is_read_from_the_arn() -> None:
    assert aws_pool.role_account("arn:aws:iam::123456789012:role/x") == "123456789012"
    assert aws_pool.role_account("arn:aws-us-gov:iam::210987654321:role/a/b") == "210987654321"
    with pytest.raises(EcomaError, match="role_arn"):
        aws_pool.role_account("arn:aws:iam::1234:user/x")


@pytest.mark.parametrize(
    ("vpc", "subnet", "nat"),
    [
        ("10.50.0.0/16", "10.50.1.0/24", "10.50.255.240/28"),
        ("10.50.0.0/16", "10.50.255.0/24", "10.50.0.0/28"),
        ("10.60.0.0/24", "10.60.0.0/25", "10.60.0.240/28"),
    ],
)
def test_the_nat_subnet_is_a_free_slash_28_of_the_vpc(vpc: str, subnet: str, nat: str) -> None:
    from ipaddress import IPv4Network

    assert aws_pool.nat_subnet_cidr(IPv4Network(vpc), IPv4Network(subnet)) == IPv4Network(nat)


def test_a_subnet_that_fills_the_vpc_leaves_no_room_for_nat() -> None:
    from ipaddress import IPv4Network

    with pytest.raises(EcomaError, match="public_ip: true"):
        aws_pool.nat_subnet_cidr(IPv4Network("10.50.0.0/16"), IPv4Network("10.50.0.0/16"))


@pytest.mark.parametrize("count", [0, 1])
def test_aws_nat_gateway_exists_only_while_the_pool_has_nodes(
    monitor: RecordingMonitor, prod: StackConfig, count: int
) -> None:
    pool = prod_pool(prod, "aws", count=count)
    assert isinstance(pool, AwsPool)
    assert not pool.public_ip
    build(prod, "aws", pool)

    # With nodes: the NAT, its address, and two routes (NAT subnet -> internet gateway,
    # node subnet -> NAT) with their associations. Without: none of them.
    expected = dict.fromkeys(AWS_NAT_PATH[:2], count) | dict.fromkeys(AWS_NAT_PATH[2:], 2 * count)
    for typ, number in expected.items():
        assert len(monitor.of_type(typ)) == number, typ
    # ... and the budget counts it exactly then.
    assert pool.hourly_cost() == pytest.approx(count * (pool.hourly_price_usd + 0.057))


def test_aws_ami_is_looked_up_by_owner_and_pinned_name_with_the_pools_provider(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    pool = prod_pool(prod, "aws", count=2)
    assert isinstance(pool, AwsPool)
    build(prod, "aws", pool)

    assert isinstance(monitor.mocks, CloudMocks)
    lookups = [c for c in monitor.mocks.calls if c.token == "aws:ec2/getAmi:getAmi"]
    assert len(lookups) == 1
    assert lookups[0].args["owners"] == ["136693071363"]
    assert lookups[0].args["filters"] == [{"name": "name", "values": [pool.image.name]}]
    # Through the pool's explicit provider, never the default one with ambient credentials.
    assert "pulumi:providers:aws::" in lookups[0].provider
    assert "default" not in lookups[0].provider.split("::")[-1]
    assert {r.inputs["ami"] for r in monitor.of_type(INSTANCE["aws"])} == {AMI_ID}


def test_aws_volume_detach_stops_the_drained_instance_first_never_forces(
    monitor: RecordingMonitor, prod: StackConfig
) -> None:
    build(prod, "aws", prod_pool(prod, "aws", count=1))

    attachments = monitor.of_type(ATTACHMENT["aws"])
    assert attachments
    for attachment in attachments:
        assert attachment.inputs["stopInstanceBeforeDetaching"] is True
        assert "forceDetach" not in attachment.inputs
