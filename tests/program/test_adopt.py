"""`ecoma:adopt` under the real program with the mock engine (simulated: no Pulumi CLI): each
named resource gets the `import` option with its id, nothing else does, and an adopted VM keeps
the user data it booted with."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from stacks import stack_variant

from ecoma_infra.cli.commands.preview import render_tree
from ecoma_infra.errors import EcomaError
from ecoma_infra.program.components.proxmox import USER_DATA_FIELD
from ecoma_infra.program.offline import PreviewResult, run_offline
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file

ADOPT = {
    "sts-1-vm": "pve-stg1/4301",
    "sdn-zone": "ecoma",
    "sdn-subnet": "ecomanet/ecoma-10.41.1.0-24",
    "burst-aws-vpc": "vpc-06f5e4d3c2b1a0f9e",
}


def with_adopt(ids: dict[str, str]) -> Any:
    def change(config: dict[str, Any]) -> None:
        config["ecoma:adopt"] = dict(ids)

    return change


@pytest.fixture(scope="module")
def adopted(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(
        stack_variant(tmp_path_factory.mktemp("adopt"), "staging", with_adopt(ADOPT))
    )


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("plain"), "staging"))


def test_simulated_adopted_resources_carry_exactly_their_import_ids(adopted: PreviewResult):
    imports = {r.name: r.import_id for r in adopted.records if r.import_id}
    assert imports == ADOPT
    types = {r.name: r.type for r in adopted.records}
    assert types["sdn-zone"] == "proxmoxve:sdn/zone/simple:Simple"
    assert types["sts-1-vm"] == "proxmoxve:index/vmLegacy:VmLegacy"


def test_simulated_an_adopted_vm_keeps_its_user_data_as_every_vm_does(
    adopted: PreviewResult, plain: PreviewResult
):
    """An adopted VM booted from the old codebase's snippet: attached, the program's user data
    would run first boot again. Every VM keeps the user data it was created with (a new snippet
    reaches new and rebuilt VMs only), so adopting one changes nothing of it."""
    vms = {r.name: r for r in adopted.records if r.type == "proxmoxve:index/vmLegacy:VmLegacy"}
    assert vms
    for record in [*vms.values(), *(r for r in plain.records if r.name in vms)]:
        assert USER_DATA_FIELD in record.ignore_changes, record.name
    # Nothing else about the adopted VM changes: same inputs, options, protection, URN.
    before = {r.name: r for r in plain.records}
    assert vms["sts-1-vm"].ignore_changes == before["sts-1-vm"].ignore_changes
    assert vms["sts-1-vm"].inputs == before["sts-1-vm"].inputs
    assert vms["sts-1-vm"].urn == before["sts-1-vm"].urn
    assert vms["sts-1-vm"].protect is True


def test_simulated_without_adopt_nothing_is_imported_and_the_preview_reads_as_before(
    plain: PreviewResult, adopted: PreviewResult
):
    assert not [r.name for r in plain.records if r.import_id]
    assert "[import:" not in render_tree(plain)
    assert all("import" not in resource for resource in plain.document()["resources"])
    tree = render_tree(adopted)
    assert "[import:pve-stg1/4301]" in tree
    adopted_doc = {r["name"]: r for r in adopted.document()["resources"]}
    assert adopted_doc["sdn-zone"]["import"] == "ecoma"


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_resource_names_are_unique_so_a_name_names_one_resource(tmp_path: Path, stack: str):
    def grown(config: dict[str, Any]) -> None:
        for pool in ("aws", "gcp", "oci"):
            config["ecoma:burst"][pool]["count"] = 1
        config["ecoma:burst"]["budget_usd_per_hour"] = 100

    result = run_offline(stack_variant(tmp_path, stack, grown))
    names = Counter(r.name for r in result.records if not r.type.startswith("pulumi:providers:"))
    assert names, "the preview declared nothing"
    assert [name for name, count in names.items() if count > 1] == []


def test_a_name_that_no_resource_takes_is_an_error(tmp_path: Path):
    path = stack_variant(tmp_path, "staging", with_adopt({"sts-9-vm": "pve-stg1/4309"}))
    with pytest.raises(EcomaError, match=r"ecoma:adopt names no resource of this stack: sts-9-vm"):
        run_offline(path)


def test_a_component_cannot_be_adopted(tmp_path: Path):
    path = stack_variant(tmp_path, "staging", with_adopt({"sts-1": "pve-stg1/4301"}))
    with pytest.raises(EcomaError, match=r"ecoma:adopt\.sts-1: ecoma:proxmox:Node is a component"):
        run_offline(path)


@pytest.mark.parametrize(
    ("ids", "where"),
    [
        ({"Sts-1-VM": "pve-stg1/4301"}, "ecoma:adopt"),
        ({"sts-1-vm": "pve stg1/4301"}, "ecoma:adopt.sts-1-vm"),
        ({"sts-1-vm": ""}, "ecoma:adopt.sts-1-vm"),
    ],
)
def test_the_stack_model_rejects_malformed_adopt_entries(
    tmp_path: Path, ids: dict[str, str], where: str
):
    with pytest.raises(ConfigError) as caught:
        load_stack_file(stack_variant(tmp_path, "staging", with_adopt(ids)))
    assert any(issue.where.startswith(where) for issue in caught.value.issues), caught.value
