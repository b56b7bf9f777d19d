"""Matching a Terraform state to what the program declares (the offline preview, simulated: mock
engine): the import ids of exactly the declared resources, what is left alone and why, what
the first `up` still changes, and the state that contradicts the stack, never imported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from migrate_support import FIXTURES, ROOT, resources, varied, vm_entry

from ecoma_infra.migrate.plan import (
    Change,
    MigrationPlan,
    MigrationRefusedError,
    plan_adoption,
)
from ecoma_infra.migrate.tfstate import read_state
from ecoma_infra.program.offline import PreviewResult, run_offline
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import StackConfig

ADOPTABLE = (
    "proxmoxve:index/vmLegacy:VmLegacy",
    "proxmoxve:sdn/zone/",
    "proxmoxve:sdn/vnet:Vnet",
    "proxmoxve:sdn/subnet:Subnet",
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/internetGateway:InternetGateway",
)


@pytest.fixture(scope="module")
def prod() -> tuple[StackConfig, PreviewResult]:
    path = ROOT / "Pulumi.prod.yaml"
    return load_stack_file(path).config, run_offline(path)


@pytest.fixture(scope="module")
def staging() -> tuple[StackConfig, PreviewResult]:
    path = ROOT / "Pulumi.staging.yaml"
    return load_stack_file(path).config, run_offline(path)


def plan_for(site: tuple[StackConfig, PreviewResult], state: Path) -> MigrationPlan:
    config, preview = site
    return plan_adoption(config, preview, read_state(state))


def plan_varied(
    site: tuple[StackConfig, PreviewResult],
    tmp_path: Path,
    change: Callable[[dict[str, Any]], None],
) -> MigrationPlan:
    return plan_for(site, varied(tmp_path, change))


def changes_of(plan: MigrationPlan, resource: str) -> dict[str, Change]:
    return {c.field: c for c in plan.changes if c.resource == resource}


def test_prod_adopts_exactly_the_declared_resources_with_their_import_ids(prod):
    config, preview = prod
    plan = plan_for(prod, FIXTURES / "prod-show.json")
    assert plan.blockers == []
    declared = {r.name: r.type for r in preview.records}
    # Every import names a resource of the preview, with the type that preview gives it.
    for adopted in plan.adopted:
        assert declared[adopted.name] == adopted.type
    expected = {f"{n.name}-vm": f"{n.hypervisor}/{n.vm_id}" for n in config.nodes}
    expected |= {
        "sdn-zone": "ecoma",
        "sdn-vnet": "ecomanet",
        "sdn-subnet": "ecomanet/ecoma-10.41.1.0-24",
        "burst-aws-vpc": "vpc-0a1b2c3d4e5f60718",
        "burst-aws-subnet": "subnet-0f1e2d3c4b5a69788",
    }
    assert plan.import_ids == expected
    assert declared["sdn-zone"] == "proxmoxve:sdn/zone/vlan:Vlan"
    # Nothing adoptable that the state holds is left to be created beside it.
    created = {c.resource for c in plan.changes if c.effect == "create"}
    adoptable = {name for name, kind in declared.items() if kind.startswith(ADOPTABLE)}
    assert adoptable - created == set(expected)
    assert created & adoptable == {"burst-aws-igw"}  # prod's Terraform had no gateway


def test_staging_raw_state_adopts_the_short_sdn_names_and_the_internet_gateway(staging):
    plan = plan_for(staging, FIXTURES / "staging.tfstate")
    assert plan.blockers == []
    assert plan.import_ids == {
        "cpl-1-vm": "pve-stg1/4101",
        "ops-1-vm": "pve-stg1/4201",
        "sts-1-vm": "pve-stg1/4301",
        "wkr-1-vm": "pve-stg1/4401",
        "sdn-zone": "ecoma",
        "sdn-vnet": "ecomanet",
        "sdn-subnet": "ecomanet/ecoma-10.41.1.0-24",
        "burst-aws-vpc": "vpc-06f5e4d3c2b1a0f9e",
        "burst-aws-subnet": "subnet-0a9b8c7d6e5f4a3b2",
        "burst-aws-igw": "igw-0b1c2d3e4f5a6b7c8",
    }
    by_name = {a.name: a for a in plan.adopted}
    assert by_name["sdn-zone"].address == "module.proxmox_compute.proxmox_sdn_zone_simple.ecoma"


def test_what_is_left_alone_says_why(prod):
    plan = plan_for(prod, FIXTURES / "prod-show.json")
    reasons = {x.address: x.reason for x in plan.left_alone}
    assert "single-use auth key" in reasons['tailscale_tailnet_key.node["sts-1"]']
    assert (
        "cannot be imported"
        in reasons["module.proxmox_compute.proxmox_virtual_environment_sdn_applier.ecoma"]
    )
    assert (
        "keep the file on the hypervisor"
        in reasons['module.proxmox_compute.proxmox_virtual_environment_file.user_data["sts-1"]']
    )
    assert (
        "data source"
        in reasons["module.proxmox_compute.data.proxmox_virtual_environment_vm.template"]
    )
    adopted = {a.address for a in plan.adopted}
    every = {r.address for r in read_state(FIXTURES / "prod-show.json").resources}
    assert adopted | set(reasons) == every  # every resource of the state is accounted for
    assert adopted.isdisjoint(reasons)


def test_the_first_up_changes_are_predicted_and_marked(prod, staging):
    plan = plan_for(prod, FIXTURES / "prod-show.json")
    cpl = changes_of(plan, "cpl-1-vm")
    assert (cpl["cpu.type"].before, cpl["cpu.type"].after) == ("host", "x86-64-v2-AES")
    assert (cpl["cpu.type"].effect, cpl["cpu.type"].safe) == ("reboot", False)
    assert (cpl["protection"].effect, cpl["protection"].safe) == ("update", True)
    # The user data stays Terraform's: not applied, so not a replacement.
    user_data = cpl["initialization.userDataFileId"]
    assert (user_data.effect, user_data.before) == ("kept", "local:snippets/cloud-init-cpl-1.yaml")
    # Disk serials: locked on stateful nodes (never set: not safe), set on the others.
    assert (cpl["disks[scsi0].serial"].effect, cpl["disks[scsi0].serial"].safe) == ("kept", False)
    ops = changes_of(plan, "ops-1-vm")
    assert (ops["disks[virtio3].serial"].before, ops["disks[virtio3].serial"].after) == ("", "warm")
    assert ops["disks[virtio3].serial"].effect == "update"
    assert "protection" not in ops
    assert {c.effect for c in plan.changes} <= {"update", "reboot", "kept", "create"}
    acl = changes_of(plan, "tailnet-policy-acl")["(new)"]
    assert (acl.effect, acl.safe) == ("create", False)
    # Staging's Terraform already matched the program: no restart, no serial, no CPU change.
    quiet = plan_for(staging, FIXTURES / "staging.tfstate")
    assert [c for c in quiet.changes if c.effect == "reboot"] == []
    assert [c for c in quiet.changes if "serial" in c.field] == []


def test_a_vm_id_the_stack_does_not_declare_and_a_vm_on_another_hypervisor_are_not_imported(prod):
    plan = plan_for(prod, FIXTURES / "prod-show-mismatch.json")
    assert "wkr-5-vm" not in plan.import_ids
    assert "wkr-3-vm" not in plan.import_ids
    reasons = {x.address: x.reason for x in plan.left_alone}
    stray = reasons['module.proxmox_compute.proxmox_virtual_environment_vm.node["wkr-5"]']
    assert stray.startswith("VM 5405 (wkr-5) on pve1 is not in ecoma:nodes")
    [blocker] = plan.blockers
    assert (blocker.subject, blocker.stateful) == ("wkr-3", False)
    assert "VM 5403 is on pve2 in Terraform, the stack puts wkr-3 on pve3" in blocker.problem
    assert "hypervisor to pve2" in blocker.fix
    assert plan.refusal() is None
    # Not imported, and not created beside the existing VM either.
    assert "wkr-3-vm" not in {c.resource for c in plan.changes}


def test_a_stateful_vm_on_another_hypervisor_stops_the_migration_naming_it(prod, tmp_path: Path):
    def move(document: dict[str, Any]) -> None:
        vm_entry(document, "sts-2")["values"]["node_name"] = "pve3"

    plan = plan_varied(prod, tmp_path, move)
    refusal = plan.refusal()
    assert isinstance(refusal, MigrationRefusedError)
    assert "stateful node(s) sts-2" in str(refusal)
    assert "VM 5302 is on pve3 in Terraform" in str(refusal)


@pytest.mark.parametrize(
    ("node", "change", "expected"),
    [
        # A PCI passthrough the program does not declare: hostpci is ForceNew.
        ("sts-1", lambda v: v.update(hostpci=[{"device": "hostpci0", "id": "0000:01:00.0"}]),
         "would replace it: hostpci"),
        # The OS disk on another interface than the template's: up would boot from nothing.
        ("cpl-2", lambda v: [d.update(interface="virtio0") for d in v["disk"]
                             if d["interface"] == "scsi0"],
         "the VM has no disk on scsi0"),
        # Terraform's VM 5101 is named differently: another machine, the create would collide.
        ("cpl-1", lambda v: v.update(vm_id=5199, id="5199"), "a VM named cpl-1 is VM 5199"),
        # Tainted in Terraform: a create that failed half-way.
        ("sts-3", lambda v: None, "is tainted in Terraform"),
    ],
)  # fmt: skip
def test_a_stateful_node_the_adoption_would_replace_or_break_is_refused(
    prod, tmp_path: Path, node: str, change: Callable[[dict[str, Any]], Any], expected: str
):
    def vary(document: dict[str, Any]) -> None:
        entry = vm_entry(document, node)
        change(entry["values"])
        if node == "sts-3":
            entry["tainted"] = True

    plan = plan_varied(prod, tmp_path, vary)
    refusal = plan.refusal()
    assert refusal is not None
    assert f"stateful node(s) {node}" in str(refusal)
    assert expected in str(refusal)
    assert f"{node}-vm" not in plan.import_ids


def test_a_worker_disk_the_stack_does_not_declare_blocks_but_is_not_a_refusal(prod, tmp_path):
    def extra_disk(document: dict[str, Any]) -> None:
        disks = vm_entry(document, "wkr-2")["values"]["disk"]
        disks.append({**disks[-1], "interface": "virtio4", "serial": "", "size": 300})

    plan = plan_varied(prod, tmp_path, extra_disk)
    [blocker] = plan.blockers
    assert blocker.subject == "wkr-2"
    assert "would harm it: disks[virtio4]" in blocker.problem
    assert "detach" in blocker.problem
    assert plan.refusal() is None


def test_a_stateful_disk_the_stack_does_not_declare_is_kept_and_marked_not_safe(prod, tmp_path):
    def extra_disk(document: dict[str, Any]) -> None:
        disks = vm_entry(document, "sts-1")["values"]["disk"]
        disks.append({**disks[-1], "interface": "virtio5", "size": 300})

    plan = plan_varied(prod, tmp_path, extra_disk)
    assert plan.blockers == []  # disks of a protected node are locked: nothing is detached
    kept = changes_of(plan, "sts-1-vm")["disks[virtio5]"]
    assert (kept.effect, kept.safe) == ("kept", False)
    assert "never mounted" in kept.why


def test_another_zone_type_blocks_instead_of_recreating_the_zone(prod, tmp_path: Path):
    def simple(document: dict[str, Any]) -> None:
        for entry in resources(document):
            if entry["type"] == "proxmox_virtual_environment_sdn_zone_vlan":
                entry["type"] = "proxmox_virtual_environment_sdn_zone_simple"

    plan = plan_varied(prod, tmp_path, simple)
    [blocker] = plan.blockers
    assert blocker.subject == "sdn-zone"
    assert "a simple zone in Terraform, the stack declares a vlan zone" in blocker.problem
    assert "sdn-zone" not in plan.import_ids


def test_a_running_burst_worker_blocks_until_terraform_scaled_it_to_zero(prod, tmp_path):
    def worker(document: dict[str, Any]) -> None:
        document["values"]["root_module"]["child_modules"][1]["resources"].append(
            {"address": "module.aws_compute.aws_instance.worker[0]", "mode": "managed",
             "type": "aws_instance", "name": "worker", "index": 0, "values": {"id": "i-1"}}
        )  # fmt: skip

    plan = plan_varied(prod, tmp_path, worker)
    [blocker] = plan.blockers
    assert blocker.subject == "module.aws_compute.aws_instance.worker[0]"
    assert "scale the pool to 0 with Terraform" in blocker.fix


def test_resolvers_that_differ_are_a_restart_that_reruns_first_boot(prod, tmp_path: Path):
    def old_dns(document: dict[str, Any]) -> None:
        values = vm_entry(document, "wkr-1")["values"]
        values["initialization"][0]["dns"][0]["servers"] = ["10.41.1.1"]

    change = changes_of(plan_varied(prod, tmp_path, old_dns), "wkr-1-vm")[
        "initialization.dns.servers"
    ]
    assert (change.before, change.after) == (["10.41.1.1"], ["1.1.1.1", "9.9.9.9"])
    assert (change.effect, change.safe) == ("reboot", False)
    assert "instance-id" in change.why


@pytest.mark.parametrize(("hotplug", "effect"), [("network,disk,usb,memory", "update"),
                                                 ("network,disk,usb", "reboot")])  # fmt: skip
def test_more_memory_is_hot_plugged_only_where_memory_hotplug_is_on(
    prod, tmp_path: Path, hotplug: str, effect: str
):
    def smaller(document: dict[str, Any]) -> None:
        values = vm_entry(document, "wkr-4")["values"]
        values["memory"][0]["dedicated"] = 8192
        values["hotplug"] = hotplug

    change = changes_of(plan_varied(prod, tmp_path, smaller), "wkr-4-vm")["memory.dedicated"]
    assert (change.before, change.after, change.effect) == (8192, 16384, effect)


def test_an_aws_subnet_in_another_zone_blocks(staging, tmp_path: Path):
    document = json.loads((FIXTURES / "staging.tfstate").read_text())
    for resource in document["resources"]:
        if resource["type"] == "aws_subnet":
            resource["instances"][0]["attributes"]["availability_zone"] = "eu-central-1b"
    path = tmp_path / "terraform.tfstate"
    path.write_text(json.dumps(document))
    plan = plan_for(staging, path)
    [blocker] = plan.blockers
    assert blocker.subject == "burst-aws-subnet"
    assert "set ecoma:burst.aws.zone to eu-central-1b" in blocker.fix
    assert "burst-aws-vpc" in plan.import_ids
