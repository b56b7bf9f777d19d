"""Template 9000 as code (`ecoma:proxmox.template_image`) under the offline preview's mocks
(simulated: the real program under the real SDK with a mock engine): the image download, the VM
with `template=True` on the stack's boot interface with a cloud-init drive, its protection, and
the clones waiting for it. Off by default."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from stacks import ROOT, stack_variant

from ecoma_infra.program.offline import PreviewResult, Recorded, run_offline
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file

VM = "proxmoxve:index/vmLegacy:VmLegacy"
FILE = "proxmoxve:download/file:File"
COMPONENT = "ecoma:proxmox:Template"
BUILD = "20250210-2019"
IMAGE_URL = (
    f"https://cloud.debian.org/images/cloud/bookworm/{BUILD}/"
    f"debian-12-genericcloud-amd64-{BUILD}.qcow2"
)
SHA512 = hashlib.sha512(b"a stand-in for the image's published checksum").hexdigest()


def with_template(**extra: Any) -> Any:
    def change(config: dict[str, Any]) -> None:
        config["ecoma:burst"] = {"budget_usd_per_hour": 1}
        config["ecoma:proxmox"]["template_image"] = {
            "url": IMAGE_URL,
            "sha512": SHA512,
            "datastore": "local-lvm",
            **extra,
        }

    return change


@pytest.fixture(scope="module")
def staging(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("stg"), "staging", with_template()))


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    path = stack_variant(
        tmp_path_factory.mktemp("prod"), "prod", with_template(import_datastore="images-dir")
    )
    return run_offline(path)


def of_type(result: PreviewResult, type_: str) -> list[Recorded]:
    return [r for r in result.records if r.type == type_]


def template_vm(result: PreviewResult) -> Recorded:
    (vm,) = [r for r in of_type(result, VM) if r.name == "template-vm"]
    return vm


def test_simulated_image_is_downloaded_by_pve_as_import_content_with_its_checksum(
    staging: PreviewResult,
) -> None:
    (image,) = of_type(staging, FILE)
    assert image.name == "template-image"
    assert image.inputs == {
        "nodeName": "pve-stg1",  # the template node: staging's first hypervisor
        "datastoreId": "local",
        "contentType": "import",
        "url": IMAGE_URL,
        "fileName": f"debian-12-genericcloud-amd64-{BUILD}.qcow2",
        "checksum": SHA512,
        "checksumAlgorithm": "sha512",
        "overwrite": False,
        "uploadTimeout": 1800,
    }


def test_simulated_template_vm_imports_the_image_onto_the_boot_interface(
    staging: PreviewResult,
) -> None:
    config = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    vm = template_vm(staging).inputs
    assert (vm["nodeName"], vm["vmId"]) == ("pve-stg1", config.proxmox.template_vm_id)
    assert (vm["template"], vm["started"], vm["onBoot"]) == (True, False, False)
    (disk,) = vm["disks"]
    assert disk["interface"] == config.proxmox.template_boot_interface == "virtio0"
    assert disk["importFrom"] == f"local:import/debian-12-genericcloud-amd64-{BUILD}.qcow2"
    assert (disk["datastoreId"], disk["size"]) == ("local-lvm", 8)
    assert "fileId" not in disk  # file_id would need SSH; import_from goes through the API
    assert vm["bootOrders"] == ["virtio0"]
    assert "scsiHardware" not in vm
    assert vm["initialization"] == {"datastoreId": "local-lvm", "interface": "ide2"}
    assert vm["serialDevices"] == [{"device": "socket"}]
    assert vm["vga"] == {"type": "serial0"}
    assert vm["tags"] == ["ecoma", "staging", "template"]


def test_simulated_template_is_protected_like_the_stateful_vms(staging: PreviewResult) -> None:
    vm = template_vm(staging)
    assert vm.inputs["protection"] is True  # PVE refuses to remove it
    assert vm.protect is True  # Pulumi refuses to delete or replace it
    assert vm.retain_on_delete is True  # `destroy` leaves it in place
    assert vm.ignore_changes == ["disks"]  # a new image never rewrites its disk


def test_simulated_template_is_one_component_and_every_clone_waits_for_it(
    staging: PreviewResult,
) -> None:
    (component,) = of_type(staging, COMPONENT)
    vm = template_vm(staging)
    (image,) = of_type(staging, FILE)
    assert vm.parent == image.parent == component.urn
    assert image.urn in vm.depends_on  # import_from reads the file's id
    clones = [r for r in of_type(staging, VM) if r.name != "template-vm"]
    assert len(clones) == 4
    for clone in clones:
        assert vm.urn in clone.depends_on, clone.name
        assert clone.inputs["clone"]["vmId"] == vm.inputs["vmId"]


def test_simulated_scsi0_template_gets_one_controller_per_disk(prod: PreviewResult) -> None:
    vm = template_vm(prod).inputs
    assert vm["disks"][0]["interface"] == "scsi0"
    assert vm["bootOrders"] == ["scsi0"]
    assert vm["scsiHardware"] == "virtio-scsi-single"
    assert vm["nodeName"] == "pve1"
    (image,) = of_type(prod, FILE)
    assert image.inputs["datastoreId"] == "images-dir"
    assert vm["disks"][0]["importFrom"].startswith("images-dir:import/")


def test_simulated_template_is_off_by_default() -> None:
    result = run_offline(ROOT / "Pulumi.staging.yaml")
    assert of_type(result, FILE) == []
    assert of_type(result, COMPONENT) == []
    assert all(r.inputs.get("template") is not True for r in of_type(result, VM))


def test_a_latest_url_is_refused_with_the_dated_build_as_fix(tmp_path: Path) -> None:
    latest = (
        "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"
    )
    path = stack_variant(tmp_path, "staging", with_template(url=latest))

    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)

    text = str(caught.value)
    assert "ecoma:proxmox.template_image.url" in text
    assert "use the dated build directory" in text


def test_an_os_disk_smaller_than_the_template_disk_is_refused(tmp_path: Path) -> None:
    path = stack_variant(tmp_path, "staging", with_template(disk_size_gb=40))

    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)

    text = str(caught.value)
    assert "ecoma:nodes[cpl-1].disks" in text
    assert "Proxmox cannot shrink a cloned disk" in text
    assert "give the OS disk at least 40 GB" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("sha512", "not-a-checksum"), ("url", "http://example.org/image.qcow2")],
)
def test_a_malformed_image_field_names_the_field(tmp_path: Path, field: str, value: str) -> None:
    path = stack_variant(tmp_path, "staging", with_template(**{field: value}))

    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)

    assert f"ecoma:proxmox.template_image.{field}" in str(caught.value)
