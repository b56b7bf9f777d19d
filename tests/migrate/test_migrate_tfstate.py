"""Reading Terraform state in both real formats (`terraform show -json`, raw v4), and every bad
state file ending in a message that names the file and the field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from migrate_support import FIXTURES

from ecoma_infra.errors import UsageError
from ecoma_infra.migrate.tfstate import StateError, read_state


def write(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / "state.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


def test_show_json_lists_every_instance_with_its_address_and_provider():
    state = read_state(FIXTURES / "prod-show.json")
    assert (state.format, state.terraform_version) == ("show-json", "1.12.2")
    by_address = {r.address: r for r in state.resources}
    vm = by_address['module.proxmox_compute.proxmox_virtual_environment_vm.node["sts-1"]']
    assert (vm.type, vm.name, vm.index, vm.mode) == (
        "proxmox_virtual_environment_vm",
        "node",
        "sts-1",
        "managed",
    )
    assert vm.provider == "registry.terraform.io/bpg/proxmox"
    assert (vm.values["node_name"], vm.values["vm_id"], vm.values["id"]) == ("pve1", 5301, "5301")
    template = by_address["module.proxmox_compute.data.proxmox_virtual_environment_vm.template"]
    assert template.mode == "data"
    assert len([r for r in state.resources if r.type == "proxmox_virtual_environment_vm"]) == 13


def test_a_raw_v4_state_is_flattened_to_the_addresses_terraform_prints():
    state = read_state(FIXTURES / "staging.tfstate")
    assert state.format == "tfstate-v4"
    addresses = {r.address for r in state.resources}
    assert 'module.proxmox_compute.proxmox_virtual_environment_vm.node["cpl-1"]' in addresses
    assert 'tailscale_tailnet_key.node["wkr-1"]' in addresses
    assert "module.proxmox_compute.proxmox_sdn_zone_simple.ecoma" in addresses
    assert "module.proxmox_compute.data.proxmox_virtual_environment_vm.template" in addresses
    vm = next(r for r in state.resources if r.address.endswith('vm.node["sts-1"]'))
    assert vm.provider == "registry.terraform.io/bpg/proxmox"
    assert vm.values["vm_id"] == 4301


def test_tainted_and_deposed_objects_are_marked_in_both_formats(tmp_path: Path):
    v4 = {
        "version": 4,
        "terraform_version": "1.9.0",
        "resources": [
            {
                "mode": "managed",
                "type": "proxmox_virtual_environment_vm",
                "name": "node",
                "each": "list",
                "provider": 'provider["registry.terraform.io/bpg/proxmox"].site_a',
                "instances": [
                    {"index_key": 0, "status": "tainted", "attributes": {"vm_id": 1}},
                    {"index_key": 0, "deposed": "00000001", "attributes": {"vm_id": 1}},
                ],
            }
        ],
    }
    state = read_state(write(tmp_path, v4))
    assert [(r.address, r.tainted, r.deposed) for r in state.resources] == [
        ("proxmox_virtual_environment_vm.node[0]", True, False),
        ("proxmox_virtual_environment_vm.node[0]", False, True),
    ]
    assert state.resources[0].provider == "registry.terraform.io/bpg/proxmox"
    entry = {"address": "a.b", "mode": "managed", "type": "a", "name": "b"}
    show = {
        "format_version": "1.0",
        "values": {
            "root_module": {
                "resources": [
                    {**entry, "tainted": True},
                    {**entry, "deposed_key": "0001"},
                ]
            }
        },
    }  # fmt: skip
    state = read_state(write(tmp_path, show))
    assert [(r.tainted, r.deposed) for r in state.resources] == [(True, False), (False, True)]


def test_an_empty_state_has_no_resources(tmp_path: Path):
    assert read_state(write(tmp_path, {"format_version": "1.0"})).resources == []


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("Terraform has no state.\n", r"state\.json: not JSON \(line 1, column 1"),
        ('{"version": 4, "resources": [', r"state\.json: not JSON \(line 1, column 30"),
        ([1, 2], r"state\.json: not a Terraform state"),
        ({"serial": 3}, r"state\.json: neither `terraform show -json` output"),
        ({"version": 3, "modules": []}, r"state\.json: state version 3 is not supported"),
        ({"format_version": "2.0"}, r"state\.json: format_version '2\.0' is not supported"),
        (
            {"version": 4, "resources": [{"mode": "managed", "type": "x", "name": "y",
                                          "instances": [{"attributes_flat": {}}]}]},
            r"state\.json: x\.y: attributes_flat",
        ),
        (
            {"version": 4, "resources": [{"mode": "managed", "name": "y", "instances": []}]},
            r"state\.json: resources\[0\]\.type: missing or not a string",
        ),
        (
            {"format_version": "1.0", "values": {"root_module": {"resources": {"a": 1}}}},
            r"state\.json: values\.root_module\.resources: a list was expected, not dict",
        ),
    ],
)  # fmt: skip
def test_a_bad_state_file_is_a_clear_error_naming_file_and_field(
    tmp_path: Path, document: Any, message: str
):
    with pytest.raises(StateError, match=message):
        read_state(write(tmp_path, document))


def test_a_missing_state_file_is_bad_usage(tmp_path: Path):
    with pytest.raises(UsageError, match=r"absent\.json: no such file"):
        read_state(tmp_path / "absent.json")


def test_the_fixtures_are_what_their_generator_writes(tmp_path: Path):
    subprocess.run(
        [sys.executable, str(FIXTURES / "make_fixtures.py"), str(tmp_path)],
        check=True,
        timeout=60,
    )
    for name in ("prod-show.json", "prod-show-mismatch.json", "staging.tfstate"):
        assert (tmp_path / name).read_text() == (FIXTURES / name).read_text(), name
