"""The ecoma-security policy pack: every rule on a passing and a failing resource, then every
rule over every resource of the example stacks' offline previews (simulated: the engine's
analyzer is replaced by building `ResourceValidationArgs` from the recorded registrations).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy
from stacks import stack_variant

from ecoma_infra.program.offline import PreviewResult, Recorded, run_offline
from ecoma_infra.program.tags import COST_TAG_KEYS, cost_tags
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import CLOUD_PROVIDERS, ON_PREM_ONLY_ROLES, TailscaleSettings

ROOT = Path(__file__).resolve().parents[2]
POLICY_DIR = ROOT / "policy"


def _load_policies() -> ModuleType:
    """The rules module as CrossGuard loads it: from the pack's directory, not as a package."""
    spec = importlib.util.spec_from_file_location(
        "ecoma_policies", POLICY_DIR / "ecoma_policies.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ecoma_policies"] = module
    spec.loader.exec_module(module)
    return module


rules = _load_policies()
POLICIES: dict[str, ResourceValidationPolicy] = {p.name: p for p in rules.POLICIES}

TAGS = cost_tags("prod", "wkr", burst=True)
URN = "urn:pulumi:prod::ecoma::pulumi:pulumi:Stack$ecoma:aws:BurstPool${type}::{name}"


def options(*, protect: bool = False) -> PolicyResourceOptions:
    return PolicyResourceOptions(
        protect=protect,
        ignore_changes=[],
        delete_before_replace=None,
        aliases=[],
        custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
        additional_secret_outputs=[],
        parent=None,
    )


def violations(
    policy: str,
    resource_type: str,
    props: Mapping[str, Any],
    *,
    protect: bool = False,
    config: Mapping[str, Any] | None = None,
    provider: PolicyProviderResource | None = None,
    urn: str | None = None,
) -> list[str]:
    """Run one policy the way the analyzer does: props behind the engine's proxy."""
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource_type,
        props=unknown_checking_proxy(json.loads(json.dumps(props))),
        urn=urn or URN.format(type=resource_type, name="r"),
        name="r",
        opts=options(protect=protect),
        provider=provider,
        config=config,
    )
    assert POLICIES[policy].validate(args, lambda message, urn=None: found.append(message)) is None
    return found


# ---------------------------------------------------------------------------------------------
# The pack itself.


def test_copied_constants_equal_the_programs():
    from ecoma_infra.program.components.pool import TAILSCALE_UDP_PORT
    from ecoma_infra.program.components.proxmox import STATEFUL_ROLES

    assert rules.COST_TAG_KEYS == COST_TAG_KEYS
    assert rules.TAILSCALE_UDP_PORT == TAILSCALE_UDP_PORT
    assert rules.STATEFUL_ROLES == STATEFUL_ROLES
    assert rules.CLOUD_PROVIDERS == CLOUD_PROVIDERS
    assert rules.CLOUD_ROLE not in ON_PREM_ONLY_ROLES
    default_tags = TailscaleSettings(
        tailnet="-", magic_dns_suffix="x.ts.net", subnet_routers=["cpl-1"]
    ).tags
    assert (default_tags["wkr"],) == rules.DEFAULT_WORKER_TAILSCALE_TAGS


def test_the_pack_depends_on_pulumi_policy_only():
    """CrossGuard installs only requirements.txt into the pack's venv: no ecoma_infra import."""
    imported: set[str] = set()
    for name in ("ecoma_policies.py", "__main__.py"):
        for node in ast.walk(ast.parse((POLICY_DIR / name).read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "ecoma_policies"}
    assert third_party == {"pulumi_policy"}
    requirement = [
        line
        for line in (POLICY_DIR / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = (ROOT / "pyproject.toml").read_text()
    pinned = re.search(r'"(pulumi-policy[^"]*)"', pyproject)
    assert pinned is not None
    assert requirement == [pinned.group(1)]
    manifest = yaml.safe_load((POLICY_DIR / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"


def test_main_only_constructs_the_mandatory_pack():
    """Read, never imported: constructing the pack blocks forever."""
    tree = ast.parse((POLICY_DIR / "__main__.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "PolicyPack"
    ]
    assert len(calls) == 1
    keywords = {k.arg: ast.unparse(k.value) for k in calls[0].keywords}
    assert keywords == {
        "name": "'ecoma-security'",
        "enforcement_level": "EnforcementLevel.MANDATORY",
        "policies": "POLICIES",
    }
    assert rules.ENFORCEMENT_LEVEL == EnforcementLevel.MANDATORY
    assert len(POLICIES) == len(rules.POLICIES)  # unique names


# ---------------------------------------------------------------------------------------------
# Rule: no ingress from the internet but Tailscale's UDP port.

SG_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LEGACY_SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG = "aws:ec2/securityGroup:SecurityGroup"
FIREWALL = "gcp:compute/firewall:Firewall"
SECURITY_LIST = "oci:Core/securityList:SecurityList"
NSG_RULE = "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule"


def _sg_rule(protocol: str, first: int, last: int, cidr: str = "0.0.0.0/0") -> dict[str, Any]:
    key = "cidrIpv6" if ":" in cidr else "cidrIpv4"
    return {"ipProtocol": protocol, "fromPort": first, "toPort": last, key: cidr, "tags": TAGS}


INGRESS_CASES = [
    # (id, type, props, expected finding or None)
    ("aws-tailscale", SG_RULE, _sg_rule("udp", 41641, 41641), None),
    ("aws-ssh-world", SG_RULE, _sg_rule("tcp", 22, 22), "tcp port 22 (SSH)"),
    ("aws-ssh-world-v6", SG_RULE, _sg_rule("tcp", 22, 22, "::/0"), "(SSH)"),
    ("aws-all-world", SG_RULE, _sg_rule("-1", 0, 0), "all protocols"),
    ("aws-ssh-private", SG_RULE, _sg_rule("tcp", 22, 22, "10.0.0.0/8"), None),
    ("aws-udp-range", SG_RULE, _sg_rule("udp", 41000, 42000), "udp ports 41000-42000"),
    (
        "aws-legacy-egress",
        LEGACY_SG_RULE,
        {
            "type": "egress",
            "protocol": "-1",
            "fromPort": 0,
            "toPort": 0,
            "cidrBlocks": ["0.0.0.0/0"],
        },
        None,
    ),
    (
        "aws-legacy-ssh",
        LEGACY_SG_RULE,
        {
            "type": "ingress",
            "protocol": "tcp",
            "fromPort": 22,
            "toPort": 22,
            "cidrBlocks": ["0.0.0.0/0"],
        },
        "(SSH)",
    ),
    (
        "aws-inline-tailscale",
        SG,
        {
            "ingress": [
                {"protocol": "udp", "fromPort": 41641, "toPort": 41641, "cidrBlocks": ["0.0.0.0/0"]}
            ],
            "tags": TAGS,
        },
        None,
    ),
    (
        "aws-inline-https",
        SG,
        {
            "ingress": [
                {"protocol": "tcp", "fromPort": 443, "toPort": 443, "ipv6CidrBlocks": ["::/0"]}
            ],
            "tags": TAGS,
        },
        "tcp port 443",
    ),
    (
        "gcp-tailscale",
        FIREWALL,
        {
            "direction": "INGRESS",
            "sourceRanges": ["0.0.0.0/0"],
            "allows": [{"protocol": "udp", "ports": ["41641"]}],
        },
        None,
    ),
    (
        "gcp-ssh",
        FIREWALL,
        {"sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "tcp", "ports": ["22"]}]},
        "(SSH)",
    ),
    (
        "gcp-all-ports",
        FIREWALL,
        {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/0"], "allows": [{"protocol": "all"}]},
        "all protocols",
    ),
    (
        "gcp-deny-all",
        FIREWALL,
        {"direction": "INGRESS", "sourceRanges": ["0.0.0.0/0"], "denies": [{"protocol": "all"}]},
        None,
    ),
    (
        "gcp-egress",
        FIREWALL,
        {
            "direction": "EGRESS",
            "destinationRanges": ["0.0.0.0/0"],
            "allows": [{"protocol": "all"}],
        },
        None,
    ),
    (
        "oci-tailscale",
        SECURITY_LIST,
        {
            "ingressSecurityRules": [
                {
                    "protocol": "17",
                    "source": "0.0.0.0/0",
                    "udpOptions": {"min": 41641, "max": 41641},
                }
            ]
        },
        None,
    ),
    (
        "oci-ssh",
        SECURITY_LIST,
        {
            "ingressSecurityRules": [
                {"protocol": "6", "source": "0.0.0.0/0", "tcpOptions": {"min": 22, "max": 22}}
            ]
        },
        "(SSH)",
    ),
    (
        "oci-udp-every-port",
        SECURITY_LIST,
        {"ingressSecurityRules": [{"protocol": "17", "source": "0.0.0.0/0"}]},
        "udp every port",
    ),
    (
        "oci-nsg-tailscale",
        NSG_RULE,
        {
            "direction": "INGRESS",
            "protocol": "17",
            "source": "0.0.0.0/0",
            "udpOptions": {"destinationPortRange": {"min": 41641, "max": 41641}},
        },
        None,
    ),
    (
        "oci-nsg-ssh",
        NSG_RULE,
        {
            "direction": "INGRESS",
            "protocol": "6",
            "source": "::/0",
            "tcpOptions": {"destinationPortRange": {"min": 22, "max": 22}},
        },
        "(SSH)",
    ),
]


@pytest.mark.parametrize(
    ("resource_type", "props", "expected"),
    [case[1:] for case in INGRESS_CASES],
    ids=[case[0] for case in INGRESS_CASES],
)
def test_nothing_but_tailscale_is_open_to_the_internet(
    resource_type: str, props: dict[str, Any], expected: str | None
):
    found = violations("no-world-ingress", resource_type, props)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1
        assert expected in found[0]
        assert "0.0.0.0/0" in found[0]


# ---------------------------------------------------------------------------------------------
# Rule: IMDSv2.

AWS_INSTANCE = "aws:ec2/instance:Instance"
OCI_INSTANCE = "oci:Core/instance:Instance"


def test_aws_instances_require_imdsv2():
    good = {"metadataOptions": {"httpTokens": "required"}}
    assert violations("imds-v2-required", AWS_INSTANCE, good) == []
    assert violations("imds-v2-required", "aws:ec2/launchTemplate:LaunchTemplate", good) == []
    for bad in ({"metadataOptions": {"httpTokens": "optional"}}, {}):
        [found] = violations("imds-v2-required", AWS_INSTANCE, bad)
        assert 'httpTokens must be "required"' in found


def test_oci_instances_disable_legacy_imds():
    good = {"instanceOptions": {"areLegacyImdsEndpointsDisabled": True}}
    assert violations("imds-v2-required", OCI_INSTANCE, good) == []
    [found] = violations("imds-v2-required", OCI_INSTANCE, {})
    assert "areLegacyImdsEndpointsDisabled" in found


# ---------------------------------------------------------------------------------------------
# Rule: encrypted volumes.

ENCRYPTION_CASES = [
    ("ebs", "aws:ebs/volume:Volume", {"encrypted": True}, {"encrypted": False}, "encrypted=True"),
    (
        "aws-root",
        AWS_INSTANCE,
        {"rootBlockDevice": {"encrypted": True}},
        {"rootBlockDevice": {"volumeSize": 30}},
        "rootBlockDevice.encrypted",
    ),
    (
        "aws-ebs-block",
        AWS_INSTANCE,
        {"rootBlockDevice": {"encrypted": True}, "ebsBlockDevices": [{"encrypted": True}]},
        {"rootBlockDevice": {"encrypted": True}, "ebsBlockDevices": [{"encrypted": False}]},
        "ebsBlockDevices[0].encrypted",
    ),
    (
        "oci-attachment",
        "oci:Core/volumeAttachment:VolumeAttachment",
        {"attachmentType": "paravirtualized", "isPvEncryptionInTransitEnabled": True},
        {"attachmentType": "paravirtualized"},
        "isPvEncryptionInTransitEnabled",
    ),
    (
        "oci-instance",
        OCI_INSTANCE,
        {"isPvEncryptionInTransitEnabled": True},
        {"launchOptions": {"isPvEncryptionInTransitEnabled": False}},
        "isPvEncryptionInTransitEnabled",
    ),
]


@pytest.mark.parametrize(
    ("resource_type", "good", "bad", "expected"),
    [case[1:] for case in ENCRYPTION_CASES],
    ids=[case[0] for case in ENCRYPTION_CASES],
)
def test_volumes_are_encrypted(
    resource_type: str, good: dict[str, Any], bad: dict[str, Any], expected: str
):
    assert violations("volumes-encrypted", resource_type, good) == []
    [found] = violations("volumes-encrypted", resource_type, bad)
    assert expected in found


def test_gcp_disks_need_no_flag_and_the_description_says_why():
    assert violations("volumes-encrypted", "gcp:compute/disk:Disk", {"size": 10}) == []
    assert "always encrypted at rest" in POLICIES["volumes-encrypted"].description


# ---------------------------------------------------------------------------------------------
# Rule: no public IP unless the stack's policy config allows the cloud.

PUBLIC_IP_CASES = [
    (
        "aws-instance",
        "aws",
        AWS_INSTANCE,
        {"associatePublicIpAddress": False},
        {"associatePublicIpAddress": True},
    ),
    (
        "aws-subnet",
        "aws",
        "aws:ec2/subnet:Subnet",
        {"mapPublicIpOnLaunch": False},
        {"mapPublicIpOnLaunch": True},
    ),
    (
        "gcp-instance",
        "gcp",
        "gcp:compute/instance:Instance",
        {"networkInterfaces": [{"subnetwork": "s"}]},
        {"networkInterfaces": [{"subnetwork": "s", "accessConfigs": [{}]}]},
    ),
    (
        "oci-instance",
        "oci",
        OCI_INSTANCE,
        {"createVnicDetails": {"assignPublicIp": "false"}},
        {"createVnicDetails": {"assignPublicIp": "true"}},
    ),
    (
        "oci-instance-unset",
        "oci",
        OCI_INSTANCE,
        {"createVnicDetails": {"assignPublicIp": "false"}},
        {"createVnicDetails": {}},
    ),
    (
        "oci-subnet",
        "oci",
        "oci:Core/subnet:Subnet",
        {"prohibitPublicIpOnVnic": True},
        {"prohibitPublicIpOnVnic": False},
    ),
]


@pytest.mark.parametrize(
    ("cloud", "resource_type", "good", "bad"),
    [case[1:] for case in PUBLIC_IP_CASES],
    ids=[case[0] for case in PUBLIC_IP_CASES],
)
def test_no_public_ip_unless_the_pool_allows_it(
    cloud: str, resource_type: str, good: dict[str, Any], bad: dict[str, Any]
):
    assert violations("no-public-ip", resource_type, good) == []
    [found] = violations("no-public-ip", resource_type, bad)
    assert "allow_public_ip_providers" in found
    allowed = {"allow_public_ip_providers": [cloud]}
    assert violations("no-public-ip", resource_type, bad, config=allowed) == []
    other = {"allow_public_ip_providers": [c for c in CLOUD_PROVIDERS if c != cloud]}
    assert len(violations("no-public-ip", resource_type, bad, config=other)) == 1


def test_the_public_ip_allowance_is_part_of_the_policy_config_schema():
    schema = POLICIES["no-public-ip"].config_schema
    assert schema is not None
    assert schema.properties["allow_public_ip_providers"]["default"] == []


# ---------------------------------------------------------------------------------------------
# Rule: GCP OS Login.

GCP_INSTANCE = "gcp:compute/instance:Instance"
OS_LOGIN = {
    "enable-oslogin": "TRUE",
    "block-project-ssh-keys": "TRUE",
    "serial-port-enable": "FALSE",
}


def test_gcp_instances_use_os_login_only():
    assert violations("gcp-os-login", GCP_INSTANCE, {"metadata": OS_LOGIN}) == []
    assert (
        violations("gcp-os-login", GCP_INSTANCE, {"metadata": {**OS_LOGIN, "user-data": "x"}}) == []
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("enable-oslogin", "FALSE"),
        ("enable-oslogin", None),
        ("block-project-ssh-keys", None),
        ("serial-port-enable", "TRUE"),
        ("serial-port-enable", None),
    ],
)
def test_gcp_instance_without_os_login_or_with_serial_port_fails(key: str, value: str | None):
    metadata = {k: v for k, v in {**OS_LOGIN, key: value}.items() if v is not None}
    [found] = violations("gcp-os-login", GCP_INSTANCE, {"metadata": metadata})
    assert key in found


# ---------------------------------------------------------------------------------------------
# Rule: cost tags.


def _aws_provider(tags: dict[str, str]) -> PolicyProviderResource:
    props = {"region": "eu-central-1", "defaultTags": json.dumps({"tags": tags})}
    return PolicyProviderResource("pulumi:providers:aws", props, "urn:p", "aws")


def test_cloud_resources_carry_every_cost_tag():
    assert violations("cost-tags", "aws:ec2/vpc:Vpc", {"tags": TAGS}) == []
    assert violations("cost-tags", "gcp:compute/disk:Disk", {"labels": TAGS}) == []
    assert violations("cost-tags", "oci:Core/vcn:Vcn", {"freeformTags": TAGS}) == []
    [found] = violations("cost-tags", "aws:ec2/vpc:Vpc", {"tags": {"Name": "vpc"}})
    assert all(key in found for key in COST_TAG_KEYS)
    [found] = violations("cost-tags", "oci:Core/volume:Volume", {})
    assert "freeformTags" in found
    partial = {k: v for k, v in TAGS.items() if k != "ecoma-expires-at"}
    [found] = violations("cost-tags", "gcp:compute/disk:Disk", {"labels": partial})
    assert "ecoma-expires-at" in found


def test_untaggable_resources_are_not_asked_for_tags():
    assert violations("cost-tags", "aws:ec2/volumeAttachment:VolumeAttachment", {}) == []
    assert violations("cost-tags", FIREWALL, {"allows": []}) == []
    assert violations("cost-tags", "proxmoxve:index/vmLegacy:VmLegacy", {"tags": ["cpl"]}) == []


def test_instance_root_and_boot_disks_carry_cost_tags():
    root_ok = {"tags": TAGS, "rootBlockDevice": {"tags": TAGS}}
    assert violations("cost-tags", AWS_INSTANCE, root_ok) == []
    [found] = violations("cost-tags", AWS_INSTANCE, {"tags": TAGS, "rootBlockDevice": {}})
    assert "rootBlockDevice.tags" in found
    boot_ok = {"labels": TAGS, "bootDisk": {"initializeParams": {"labels": TAGS}}}
    assert violations("cost-tags", GCP_INSTANCE, boot_ok) == []
    [found] = violations("cost-tags", GCP_INSTANCE, {"labels": TAGS, "bootDisk": {}})
    assert "bootDisk.initializeParams.labels" in found


def test_a_providers_default_tags_count():
    provider = _aws_provider(TAGS)
    assert violations("cost-tags", "aws:ec2/vpc:Vpc", {}, provider=provider) == []
    gcp = PolicyProviderResource(
        "pulumi:providers:gcp", {"defaultLabels": json.dumps(TAGS)}, "urn:g", "gcp"
    )
    assert violations("cost-tags", "gcp:compute/disk:Disk", {}, provider=gcp) == []


# ---------------------------------------------------------------------------------------------
# Rule: only wkr on cloud providers.


def test_cloud_resources_are_wkr_only():
    assert violations("cloud-role-is-wkr", "aws:ec2/vpc:Vpc", {"tags": TAGS}) == []
    sts = cost_tags("prod", "sts", burst=False)
    [found] = violations("cloud-role-is-wkr", "aws:ec2/vpc:Vpc", {"tags": sts})
    assert "ecoma-role]='sts'" in found
    [found] = violations("cloud-role-is-wkr", "oci:Core/instance:Instance", {"freeformTags": sts})
    assert "only wkr" in found
    cpl_provider = _aws_provider(cost_tags("prod", "cpl", burst=False))
    assert len(violations("cloud-role-is-wkr", "aws:ec2/vpc:Vpc", {}, provider=cpl_provider)) == 1


def test_cloud_providers_default_tags_are_wkr_only():
    wkr = {"defaultLabels": json.dumps(TAGS)}
    assert violations("cloud-role-is-wkr", "pulumi:providers:gcp", wkr) == []
    ops = {"defaultLabels": json.dumps(cost_tags("prod", "ops", burst=False))}
    assert len(violations("cloud-role-is-wkr", "pulumi:providers:gcp", ops)) == 1


def test_cloud_burst_node_keys_carry_only_the_worker_tag():
    key = "tailscale:index/tailnetKey:TailnetKey"
    cloud_urn = URN.format(type=key, name="k")
    onprem_urn = "urn:pulumi:prod::ecoma::pulumi:pulumi:Stack$ecoma:proxmox:Node$" + key + "::k"
    assert violations("cloud-role-is-wkr", key, {"tags": ["tag:ecoma-wkr"]}, urn=cloud_urn) == []
    [found] = violations("cloud-role-is-wkr", key, {"tags": ["tag:ecoma-cpl"]}, urn=cloud_urn)
    assert "tag:ecoma-cpl" in found
    assert violations("cloud-role-is-wkr", key, {"tags": ["tag:ecoma-cpl"]}, urn=onprem_urn) == []
    custom = {"worker_tailscale_tags": ["tag:burst"]}
    assert (
        violations("cloud-role-is-wkr", key, {"tags": ["tag:burst"]}, urn=cloud_urn, config=custom)
        == []
    )


# ---------------------------------------------------------------------------------------------
# Rule: stateful Proxmox VMs are protected.

VM = "proxmoxve:index/vmLegacy:VmLegacy"


@pytest.mark.parametrize("role", ["cpl", "sts"])
def test_stateful_vms_must_be_protected(role: str):
    props = {"tags": sorted(["ecoma", "prod", role])}
    assert violations("stateful-vms-protected", VM, props, protect=True) == []
    [found] = violations("stateful-vms-protected", VM, props, protect=False)
    assert f"is a {role} machine" in found


@pytest.mark.parametrize("role", ["cpl", "sts"])
def test_a_stateful_vm_being_replaced_may_be_unprotected_only_with_the_replacing_tag(role: str):
    props = {"tags": sorted(["ecoma", "prod", role, "ecoma-replacing"])}
    assert violations("stateful-vms-protected", VM, props, protect=False) == []
    # The same VM without the tag is protection lost by mistake.
    props = {"tags": sorted(["ecoma", "prod", role])}
    assert violations("stateful-vms-protected", VM, props, protect=False) != []


def test_the_replace_flows_unprotecting_update_passes_the_pack(tmp_path: Path):
    """What `ecoma-infra replace` applies first (ecoma:proxmox.replacing names the node) passes
    every rule, so a policy pack enforced on every update does not stop a replacement; the
    node's VM is the one that carries the tag."""

    def replacing(config: dict[str, Any]) -> None:
        config["ecoma:proxmox"]["replacing"] = ["sts-1"]

    result = run_offline(stack_variant(tmp_path, "prod", replacing))
    vms = {r.name: r for r in result.records if r.type == VM}
    assert not vms["sts-1-vm"].protect
    assert "ecoma-replacing" in vms["sts-1-vm"].inputs["tags"]
    assert all("ecoma-replacing" not in r.inputs["tags"] for n, r in vms.items() if n != "sts-1-vm")
    assert run_pack(result, "prod") == []


@pytest.mark.parametrize("role", ["ops", "wkr"])
def test_stateless_vms_need_no_protection(role: str):
    assert violations("stateful-vms-protected", VM, {"tags": ["ecoma", "prod", role]}) == []


# ---------------------------------------------------------------------------------------------
# Every rule over every resource of the example stacks.


def two_nodes_per_pool(config: dict[str, Any]) -> None:
    burst = config["ecoma:burst"]
    burst["budget_usd_per_hour"] = 100
    for provider in ("aws", "gcp", "oci"):
        if provider in burst:
            burst[provider]["count"] = 2


def policy_config(stack: str) -> dict[str, Any]:
    """What `pulumi preview --policy-pack policy --policy-pack-config policy/config/<stack>.json`
    hands each policy: the file's values over the schema defaults."""
    given = json.loads((POLICY_DIR / "config" / f"{stack}.json").read_text())
    config: dict[str, Any] = {}
    for policy in rules.POLICIES:
        values = {
            key: schema.get("default")
            for key, schema in (
                policy.config_schema.properties if policy.config_schema else {}
            ).items()
        }
        extra = given.get(policy.name, {})
        values.update({k: v for k, v in extra.items() if k != "enforcementLevel"})
        config[policy.name] = values
    return config


def engine_props(inputs: dict[str, Any]) -> Any:
    """The props as the analyzer hands them to a policy: secrets unwrapped to their values (the
    SDK marks all of GCP's `metadata` secret because `user-data` is: `redact` would hide the
    OS Login keys from the rule), numbers as floats, behind the unknown-checking proxy. The
    values are the offline preview's placeholders, never real secrets."""
    return unknown_checking_proxy(deserialize_properties(inputs))


def validation_args(
    record: Recorded, by_urn: dict[str, Recorded], config: Mapping[str, Any]
) -> ResourceValidationArgs:
    provider = None
    provider_urn = record.provider.split("::")[:-1]
    provider_record = by_urn.get("::".join(provider_urn)) if provider_urn else None
    if provider_record is not None:
        provider = PolicyProviderResource(
            provider_record.type,
            engine_props(provider_record.inputs),
            provider_record.urn,
            provider_record.name,
        )
    return ResourceValidationArgs(
        resource_type=record.type,
        props=engine_props(record.inputs),
        urn=record.urn,
        name=record.name,
        opts=PolicyResourceOptions(
            protect=record.protect,
            ignore_changes=list(record.ignore_changes),
            delete_before_replace=None,
            aliases=[],
            custom_timeouts=PolicyCustomTimeouts(0, 0, 0),
            additional_secret_outputs=list(record.secret_outputs),
            parent=record.parent or None,
        ),
        provider=provider,
        config=config,
    )


def run_pack(result: PreviewResult, stack: str) -> list[str]:
    by_urn = {r.urn: r for r in result.records}
    config = policy_config(stack)
    found: list[str] = []
    for record in result.records:
        for policy in rules.POLICIES:
            args = validation_args(record, by_urn, config[policy.name])
            policy.validate(
                args, lambda message, urn=None, p=policy.name: found.append(f"[{p}] {message}")
            )
    return found


VARIANTS: dict[str, tuple[str, Callable[[dict[str, Any]], None] | None]] = {
    "staging": ("staging", None),
    "prod": ("prod", None),
    "staging-burst": ("staging", two_nodes_per_pool),
    "prod-burst": ("prod", two_nodes_per_pool),
}


@pytest.fixture(scope="module")
def previews(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], PreviewResult]:
    """Each variant's offline preview, run once and only when a test asks for it."""
    done: dict[str, PreviewResult] = {}

    def preview(label: str) -> PreviewResult:
        if label not in done:
            stack, change = VARIANTS[label]
            path = stack_variant(tmp_path_factory.mktemp(label), stack, change)
            done[label] = run_offline(path)
        return done[label]

    return preview


@pytest.mark.parametrize("label", list(VARIANTS))
def test_the_example_stacks_pass_every_policy(previews: Callable[[str], PreviewResult], label: str):
    assert run_pack(previews(label), VARIANTS[label][0]) == []


@pytest.mark.parametrize("label", ["staging-burst", "prod-burst"])
def test_the_burst_previews_really_hold_cloud_nodes(
    previews: Callable[[str], PreviewResult], label: str
):
    """Zero violations must not come from an empty stack."""
    instances = [
        r for r in previews(label).records if r.type in (AWS_INSTANCE, GCP_INSTANCE, OCI_INSTANCE)
    ]
    assert sorted(r.type for r in instances) == sorted(
        [AWS_INSTANCE, GCP_INSTANCE, OCI_INSTANCE] * 2
    )


def test_the_pack_catches_a_broken_record_of_a_real_preview(
    previews: Callable[[str], PreviewResult],
):
    """The record-to-args mapping really feeds the rules: unprotect cpl-1, open SSH."""
    result = previews("prod-burst")
    records = []
    for record in result.records:
        changed = record
        if record.name == "cpl-1-vm":
            changed = Recorded(**{**record.__dict__, "protect": False})
        if record.type == SG_RULE:
            inputs = {**record.inputs, "ipProtocol": "tcp", "fromPort": 22.0, "toPort": 22.0}
            changed = Recorded(**{**record.__dict__, "inputs": inputs})
        records.append(changed)
    broken = PreviewResult(result.stack, records, result.outputs, result.secret_outputs)
    found = run_pack(broken, "prod")
    assert any(f.startswith("[stateful-vms-protected]") and "cpl-1-vm" in f for f in found)
    assert any(f.startswith("[no-world-ingress]") and "(SSH)" in f for f in found)
    assert len(found) == 2


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_policy_config_allows_public_ips_exactly_where_the_stack_has_them(stack: str):
    config = load_stack_file(ROOT / f"Pulumi.{stack}.yaml").config
    public = sorted(name for name, pool in config.burst.pools().items() if pool.public_ip)
    assert sorted(policy_config(stack)["no-public-ip"]["allow_public_ip_providers"]) == public


def test_every_taggable_cloud_type_of_the_previews_is_known(
    previews: Callable[[str], PreviewResult],
):
    """A resource type whose SDK class takes tags must be in TAGGABLE_TYPES: otherwise an
    untagged one would slip through (a tagged one is checked anyway)."""
    import pulumi_aws
    import pulumi_gcp
    import pulumi_oci

    packages = {"aws": pulumi_aws, "gcp": pulumi_gcp, "oci": pulumi_oci}
    types = {r.type for label in ("staging-burst", "prod-burst") for r in previews(label).records}
    for resource_type in sorted(types):
        package, _, rest = resource_type.partition(":")
        if package not in packages:
            continue
        module_path, _, class_name = rest.partition(":")
        module_name = module_path.split("/")[0].lower()
        cls = getattr(getattr(packages[package], module_name), class_name)
        parameters = inspect.signature(cls._internal_init).parameters
        field = {"aws": "tags", "gcp": "labels", "oci": "freeform_tags"}[package]
        assert (field in parameters) is (resource_type in rules.TAGGABLE_TYPES), resource_type


# ---------------------------------------------------------------------------------------------
# Rule: the SDN zone reaches every hypervisor it is deployed on.

SIMPLE = "proxmoxve:sdn/zone/simple:Simple"
VXLAN = "proxmoxve:sdn/zone/vxlan:Vxlan"


def test_a_simple_zone_may_hold_one_hypervisor_only():
    assert violations("sdn-zone-spans-its-nodes", SIMPLE, {"nodes": ["pve1"]}) == []
    [found] = violations("sdn-zone-spans-its-nodes", SIMPLE, {"nodes": ["pve1", "pve2"]})
    assert "local to each hypervisor" in found


def test_a_vxlan_zone_peers_every_hypervisor_within_its_mtu():
    nodes = ["pve1", "pve2", "pve3"]
    peers = ["192.168.10.11", "192.168.10.12", "192.168.10.13"]
    ok = {"nodes": nodes, "peers": peers, "mtu": 1450}
    assert violations("sdn-zone-spans-its-nodes", VXLAN, ok) == []
    [short] = violations("sdn-zone-spans-its-nodes", VXLAN, {**ok, "peers": peers[:2]})
    assert "2 VXLAN peers for 3 hypervisors" in short
    [mtu] = violations("sdn-zone-spans-its-nodes", VXLAN, {**ok, "mtu": 1500})
    assert "MTU 1500 over VXLAN's 1450" in mtu


# ---------------------------------------------------------------------------------------------
# Rule: auth keys are single-use, pre-authorized, short-lived; burst nodes' are ephemeral.

KEY = "tailscale:index/tailnetKey:TailnetKey"
GOOD_KEY = {"reusable": False, "preauthorized": True, "expiry": 3600, "ephemeral": True}


def test_burst_node_keys_are_ephemeral_and_short_lived():
    cloud = URN.format(type=KEY, name="k")
    assert violations("auth-keys-short-lived", KEY, GOOD_KEY, urn=cloud) == []
    [ephemeral] = violations(
        "auth-keys-short-lived", KEY, {**GOOD_KEY, "ephemeral": False}, urn=cloud
    )
    assert "not ephemeral" in ephemeral
    [long] = violations("auth-keys-short-lived", KEY, {**GOOD_KEY, "expiry": 7_776_000}, urn=cloud)
    assert "over 86400 s" in long
    [default] = violations("auth-keys-short-lived", KEY, {**GOOD_KEY, "expiry": None}, urn=cloud)
    assert "90 days" in default
    [reusable] = violations("auth-keys-short-lived", KEY, {**GOOD_KEY, "reusable": True}, urn=cloud)
    assert "reusable" in reusable


def test_onprem_keys_need_not_be_ephemeral_but_short_lived():
    onprem = "urn:pulumi:prod::ecoma::pulumi:pulumi:Stack$ecoma:proxmox:Node$" + KEY + "::k"
    key = {**GOOD_KEY, "ephemeral": False}
    assert violations("auth-keys-short-lived", KEY, key, urn=onprem) == []
    tight = {MAX_KEY_CONFIG: 1800}
    [found] = violations("auth-keys-short-lived", KEY, key, urn=onprem, config=tight)
    assert "over 1800 s" in found


MAX_KEY_CONFIG = "max_key_expiry_seconds"


# ---------------------------------------------------------------------------------------------
# Rule: a VM boots from a disk it declares.


def test_a_vm_boots_from_its_os_disk_interface():
    disks = [{"interface": "scsi0"}, {"interface": "virtio2"}]
    assert (
        violations("vm-boots-a-declared-disk", VM, {"disks": disks, "bootOrders": ["scsi0"]}) == []
    )
    [blank] = violations(
        "vm-boots-a-declared-disk", VM, {"disks": disks, "bootOrders": ["virtio0"]}
    )
    assert "boots from virtio0" in blank
    [unset] = violations("vm-boots-a-declared-disk", VM, {"disks": disks})
    assert "the template default" in unset
