"""The program's side of day-2 operations, under the offline engine's mocks (simulated): a node in
`ecoma:proxmox.replacing` loses its protection (and an sts node its data disks) for the rebuild,
every VM is deleted before its replacement is created, and the etcd snapshot settings and their
secrets reach the inventory and the secret outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stacks import stack_variant

from ecoma_infra.program.inventory import inventory_hosts
from ecoma_infra.program.offline import PreviewResult, Recorded, run_offline

VM = "proxmoxve:index/vmLegacy:VmLegacy"


def without_pools(config: dict[str, Any]) -> None:
    config["ecoma:burst"] = {"budget_usd_per_hour": 1}


def vms(result: PreviewResult) -> dict[str, Recorded]:
    return {r.name: r for r in result.records if r.type == VM}


@pytest.fixture(scope="module")
def replacing_sts_1(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    def change(config: dict[str, Any]) -> None:
        without_pools(config)
        config["ecoma:proxmox"]["replacing"] = ["sts-1"]

    return run_offline(stack_variant(tmp_path_factory.mktemp("replacing"), "prod", change))


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("plain"), "prod", without_pools))


def test_simulated_a_node_being_replaced_loses_its_protection_and_only_it(
    replacing_sts_1: PreviewResult, plain: PreviewResult
) -> None:
    before, after = vms(plain), vms(replacing_sts_1)
    sts_1 = after["sts-1-vm"]
    assert (sts_1.protect, sts_1.retain_on_delete, sts_1.inputs["protection"]) == (
        False,
        False,
        False,
    )
    # Its old VM's disk list is never rewritten while it is being replaced.
    assert "disks" in sts_1.ignore_changes
    for name, record in after.items():
        if name != "sts-1-vm":
            assert record.protect == before[name].protect, name
            assert record.inputs == before[name].inputs, name


def test_simulated_an_sts_node_being_replaced_comes_without_its_data_disks(
    replacing_sts_1: PreviewResult, plain: PreviewResult
) -> None:
    old = {d["serial"]: d["interface"] for d in vms(plain)["sts-1-vm"].inputs["disks"]}
    new = {d["serial"]: d["interface"] for d in vms(replacing_sts_1)["sts-1-vm"].inputs["disks"]}
    assert old == {"hot": "scsi0", "swap": "virtio1", "warm": "virtio3", "cold": "virtio4"}
    assert new == {"hot": "scsi0", "swap": "virtio1"}  # replace moves warm and cold back


def test_simulated_every_vm_is_deleted_before_its_replacement_is_created(
    plain: PreviewResult,
) -> None:
    assert all(record.delete_before_replace for record in vms(plain).values())


def test_simulated_etcd_snapshot_settings_reach_the_inventory_and_the_s3_keys_stay_secret(
    tmp_path: Path,
) -> None:
    def change(config: dict[str, Any]) -> None:
        without_pools(config)
        config["ecoma:k3s"]["etcd_snapshots"] = {
            "schedule_cron": "0 */6 * * *",
            "retention": 28,
            "s3": {"endpoint": "minio.ecoma.internal:9000", "bucket": "ecoma-etcd"},
        }

    result = run_offline(stack_variant(tmp_path, "prod", change))
    cluster = result.outputs["ansible_inventory"]["all"]["vars"]["ecoma_cluster"]
    assert cluster["etcd_snapshots"] == {
        "schedule_cron": "0 */6 * * *",
        "retention": 28,
        "compress": False,
        "s3": {
            "endpoint": "minio.ecoma.internal:9000",
            "bucket": "ecoma-etcd",
            "folder": "",
            "region": "us-east-1",
            "insecure": False,
            "skip_ssl_verify": False,
        },
    }
    assert {"etcd_s3_access_key_id", "etcd_s3_secret_access_key"} <= set(result.secret_outputs)
    assert result.outputs["etcd_s3_secret_access_key"] == "[secret]"
    inventory_text = str(result.outputs["ansible_inventory"])
    assert "offline-placeholder-for-etcd_s3" not in inventory_text
    assert inventory_hosts(result.outputs["ansible_inventory"])


def test_simulated_without_an_s3_target_there_are_no_s3_outputs(plain: PreviewResult) -> None:
    assert "etcd_s3_access_key_id" not in plain.outputs
    cluster = plain.outputs["ansible_inventory"]["all"]["vars"]["ecoma_cluster"]
    assert cluster["etcd_snapshots"]["s3"] is None
