"""The shapes a real platform refuses, caught by `validate` before `up`: each rule has a config
it rejects (naming the file, the field and the fix) and a close one it accepts.

The facts behind the rules are the providers' own: a Proxmox Simple zone is local to each
hypervisor, a vnet tag belongs to VLAN/VXLAN zones, VXLAN needs every hypervisor as a peer and
costs 50 bytes of MTU, nothing in the SDN serves DNS, the template's boot disk decides where the
OS disk goes, a shared tailnet is one policy, one subnet route and one hostname space.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from stacks import ROOT, stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file, parse_stack_config
from ecoma_infra.stack.model import split_namespace

Change = Callable[[dict[str, Any]], None]


def values_of(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    values, _ = split_namespace(document["config"])
    return values


def sdn(**fields: Any) -> Change:
    def change(values: dict[str, Any]) -> None:
        values["proxmox"]["sdn"] = {"zone": "ecoma", "vnet": "ecomanet", **fields}

    return change


def setting(section: str, **fields: Any) -> Change:
    def change(values: dict[str, Any]) -> None:
        values.setdefault(section, {}).update(fields)

    return change


def drop(section: str, field: str) -> Change:
    def change(values: dict[str, Any]) -> None:
        values[section].pop(field)

    return change


def aws_image(image: Any) -> Change:
    def change(values: dict[str, Any]) -> None:
        values["burst"]["aws"]["image"] = image

    return change


PROD_PEERS = {"pve1": "192.168.10.11", "pve2": "192.168.10.12", "pve3": "192.168.10.13"}

# (id, stack, wrong shape, where, words in the message, a close shape that is right)
CASES: list[tuple[str, str, Change, str, str, Change]] = [
    (
        "simple-zone-over-three-hypervisors",
        "prod",
        sdn(kind="simple"),
        "ecoma:proxmox.sdn.kind",
        "a simple zone is local to each hypervisor",
        sdn(kind="vlan", bridge="vmbr0", tag=41),
    ),
    (
        "vlan-zone-without-bridge",
        "prod",
        sdn(kind="vlan", tag=41),
        "ecoma:proxmox.sdn.bridge",
        "needs the bridge",
        sdn(kind="vlan", tag=41, bridge="vmbr1"),
    ),
    (
        "vlan-zone-without-tag",
        "prod",
        sdn(kind="vlan", bridge="vmbr0"),
        "ecoma:proxmox.sdn.tag",
        "needs the VLAN id",
        sdn(kind="vlan", bridge="vmbr0", tag=4094),
    ),
    (
        "vlan-id-above-4094",
        "prod",
        sdn(kind="vlan", bridge="vmbr0", tag=5000),
        "ecoma:proxmox.sdn.tag",
        "5000 is above 4094",
        sdn(kind="vxlan", tag=5000, peers=PROD_PEERS),
    ),
    (
        "vxlan-zone-missing-a-peer",
        "prod",
        sdn(kind="vxlan", tag=4100, peers={"pve1": "192.168.10.11", "pve2": "192.168.10.12"}),
        "ecoma:proxmox.sdn.peers",
        "no underlay address for pve3",
        sdn(kind="vxlan", tag=4100, peers=PROD_PEERS),
    ),
    (
        "vxlan-zone-without-vni",
        "prod",
        sdn(kind="vxlan", peers=PROD_PEERS),
        "ecoma:proxmox.sdn.tag",
        "needs its VXLAN id",
        sdn(kind="vxlan", peers=PROD_PEERS, tag=1),
    ),
    (
        "vxlan-peer-twice",
        "prod",
        sdn(kind="vxlan", tag=7, peers={**PROD_PEERS, "pve3": "192.168.10.12"}),
        "ecoma:proxmox.sdn.peers",
        "192.168.10.12 is given for more than one hypervisor",
        sdn(kind="vxlan", tag=7, peers=PROD_PEERS),
    ),
    (
        "vxlan-mtu-below-tailscale-needs",
        "prod",
        sdn(kind="vxlan", tag=7, peers=PROD_PEERS, mtu=1300),
        "ecoma:proxmox.sdn.mtu",
        "greater than or equal to 1360",
        sdn(kind="vxlan", tag=7, peers=PROD_PEERS, mtu=1360),
    ),
    (
        "bridge-on-a-simple-zone",
        "staging",
        sdn(kind="simple", bridge="vmbr0"),
        "ecoma:proxmox.sdn.bridge",
        "is for a vlan zone, this one is simple",
        sdn(kind="simple"),
    ),
    (
        "resolver-at-a-simple-zones-gateway",
        "staging",
        setting("network", dns_servers=["10.41.1.1"]),
        "ecoma:network.dns_servers",
        "Proxmox runs no DNS there",
        setting("network", dns_servers=["10.41.0.53"]),
    ),
    (
        "resolver-is-coredns",
        "prod",
        setting("network", dns_servers=["10.43.0.10"]),
        "ecoma:network.dns_servers",
        "does not exist yet when cloud-init runs",
        setting("network", dns_servers=["10.41.1.1"]),  # the site router of a vlan zone
    ),
    (
        "no-resolvers",
        "staging",
        drop("network", "dns_servers"),
        "ecoma:network.dns_servers",
        "required field is missing",
        setting("network", dns_servers=["9.9.9.9"]),
    ),
    (
        "no-template-boot-interface",
        "prod",
        drop("proxmox", "template_boot_interface"),
        "ecoma:proxmox.template_boot_interface",
        "required field is missing",
        setting("proxmox", template_boot_interface="virtio0"),
    ),
    (
        "template-boot-interface-ide",
        "prod",
        setting("proxmox", template_boot_interface="ide0"),
        "ecoma:proxmox.template_boot_interface",
        "Input should be 'virtio0' or 'scsi0'",
        setting("proxmox", template_boot_interface="scsi0"),
    ),
    (
        "aws-ami-id-instead-of-lookup",
        "prod",
        aws_image("ami-0f6e9a4c1b2d3e4f5"),
        "ecoma:burst.aws.image",
        "Input should be a valid dictionary",
        aws_image({"name": "debian-12-amd64-20250610-2137"}),
    ),
    (
        "aws-ami-name-unpinned",
        "prod",
        aws_image({"name": "debian-12-amd64-*"}),
        "ecoma:burst.aws.image.name",
        "is not valid",
        aws_image({"name": "debian-12-amd64-20250610-2137", "owner": "136693071363"}),
    ),
]


@pytest.mark.parametrize(
    ("stack", "wrong", "where", "words", "right"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_a_shape_the_platform_refuses_is_rejected_and_its_fix_accepted(
    stack: str, wrong: Change, where: str, words: str, right: Change
) -> None:
    rejected = values_of(stack)
    wrong(rejected)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(rejected, f"Pulumi.{stack}.yaml")
    matching = [i for i in caught.value.issues if i.where == where and words in i.message]
    assert matching, f"no issue at {where} containing {words!r}: {caught.value}"
    assert all(issue.fix for issue in matching)
    assert f"Pulumi.{stack}.yaml: {where}: " in str(caught.value)

    accepted = values_of(stack)
    right(accepted)
    parse_stack_config(accepted, f"Pulumi.{stack}.yaml")


def test_the_committed_stacks_use_a_zone_that_reaches_their_hypervisors() -> None:
    prod = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    staging = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    assert len(set(prod.proxmox.hypervisors)) == 3
    assert prod.proxmox.sdn.kind == "vlan"
    assert len(set(staging.proxmox.hypervisors)) == 1
    assert staging.proxmox.sdn.kind == "simple"


def _two_stacks(tmp_path: Path, **tailscale: str) -> Path:
    """Both committed stacks in one folder, staging's tailscale block changed."""
    stack_variant(tmp_path, "prod")

    def change(config: dict[str, Any]) -> None:
        config["ecoma:tailscale"].update(tailscale)

    return stack_variant(tmp_path, "staging", change)


def test_the_committed_stacks_each_have_their_own_tailnet() -> None:
    prod = load_stack_file(ROOT / "Pulumi.prod.yaml").config.tailscale
    staging = load_stack_file(ROOT / "Pulumi.staging.yaml").config.tailscale
    assert prod.tailnet != staging.tailnet
    assert prod.magic_dns_suffix != staging.magic_dns_suffix


@pytest.mark.parametrize(
    ("field", "value"), [("tailnet", "ECOMA.io"), ("magic_dns_suffix", "tail4e2c1.ts.net")]
)
def test_validate_refuses_two_stack_files_on_one_tailnet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: str
) -> None:
    path = _two_stacks(tmp_path, **{field: value})

    code = cli.main(["validate", "--file", str(path)])

    err = capsys.readouterr().err
    assert code == 1
    assert f"Pulumi.staging.yaml: ecoma:tailscale.{field}: " in err
    assert "is also the" in err
    assert "Pulumi.prod.yaml" in err
    assert "Fix: give each stack its own tailnet" in err


def test_validate_accepts_stack_files_on_their_own_tailnets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _two_stacks(tmp_path, tailnet="ecoma-dev.github", magic_dns_suffix="tail0d3v0.ts.net")

    assert cli.main(["validate", "--file", str(path)]) == 0, capsys.readouterr().err


def test_an_unreadable_neighbour_does_not_hide_the_stack_being_validated(tmp_path: Path) -> None:
    path = stack_variant(tmp_path, "staging")
    (tmp_path / "Pulumi.broken.yaml").write_text("config: [unclosed\n")
    (tmp_path / "Pulumi.list.yaml").write_text("- just a list\n")

    assert (
        load_stack_file(path).config.tailscale.tailnet
        == values_of("staging")["tailscale"]["tailnet"]
    )


def test_sdn_settings_survive_a_round_trip_unchanged() -> None:
    values = values_of("prod")
    before = copy.deepcopy(values["proxmox"]["sdn"])
    config = parse_stack_config(values, "Pulumi.prod.yaml")
    assert config.proxmox.sdn.model_dump(exclude_defaults=True) == before


@pytest.mark.parametrize(
    ("change", "fix"),
    [
        (drop("proxmox", "template_boot_interface"), "The disk interface template 9000 boots"),
        (aws_image("ami-0f6e9a4c1b2d3e4f5"), "give a mapping with owner, name"),
        (aws_image({"name": "debian-12-*"}), "the exact AMI name"),
    ],
)
def test_shape_errors_say_what_the_field_wants(change: Change, fix: str) -> None:
    values = values_of("prod")
    change(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, "Pulumi.prod.yaml")
    assert any(fix in issue.fix for issue in caught.value.issues), str(caught.value)
