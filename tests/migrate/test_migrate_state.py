"""`migrate terraform state` end to end on copies of the stack files (simulated: the offline
engine stands in for `pulumi preview`): the stack file gains exactly `ecoma:adopt`, and a
preview of the program with those imports replaces no cpl or sts machine."""

from __future__ import annotations

import difflib
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from migrate_support import FIXTURES, ROOT, varied, vm_entry

from ecoma_infra.errors import EcomaError
from ecoma_infra.migrate.plan import BLOCKING, MigrationRefusedError, plan_adoption, vm_changes
from ecoma_infra.migrate.stackfile import with_adopt
from ecoma_infra.migrate.state import migrate_state
from ecoma_infra.migrate.tfstate import read_state
from ecoma_infra.program.components.proxmox import STATEFUL_ROLES, USER_DATA_FIELD
from ecoma_infra.program.offline import run_offline
from ecoma_infra.stack.load import load_stack_file


def stack_copy(tmp_path: Path, stack: str) -> Path:
    target = tmp_path / f"Pulumi.{stack}.yaml"
    shutil.copy(ROOT / f"Pulumi.{stack}.yaml", target)
    return target


@pytest.fixture(scope="module")
def migrated_prod(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    stack = stack_copy(tmp_path_factory.mktemp("prod"), "prod")
    return stack, migrate_state(stack, FIXTURES / "prod-show.json")


def test_simulated_preview_with_the_imports_replaces_no_stateful_node(migrated_prod):
    stack, migration = migrated_prod
    config = load_stack_file(stack).config
    applied = run_offline(stack)
    imports = {r.name: r.import_id for r in applied.records if r.import_id}
    assert imports == migration.plan.import_ids
    state = {
        (r.values["node_name"], r.values["vm_id"]): r.values
        for r in read_state(FIXTURES / "prod-show.json").resources
        if r.type == "proxmox_virtual_environment_vm" and r.managed
    }
    stateful = [n for n in config.nodes if n.role in STATEFUL_ROLES]
    assert len(stateful) == 6
    vms = {r.name: r for r in applied.records}
    for node in stateful:
        record = vms[f"{node.name}-vm"]
        assert record.import_id == f"{node.hypervisor}/{node.vm_id}"
        assert record.protect is True
        # Judged by the options this preview really registered, nothing assumed.
        changes = vm_changes(
            record, state[(node.hypervisor, node.vm_id)], set(record.ignore_changes)
        )
        assert [c for c in changes if c.effect in BLOCKING] == [], node.name
    replan = plan_adoption(
        config, applied, read_state(FIXTURES / "prod-show.json"), as_adopted=False
    )
    assert replan.blockers == []


def test_simulated_the_check_finds_the_replacement_a_program_following_user_data_would_do():
    # Control for the test above: the same VMs, registered by a program that let a VM follow its
    # user data (no `ignore_changes` on it, as this program did before every VM kept its own),
    # would be replaced over the snippet name: the check sees it.
    path = ROOT / "Pulumi.prod.yaml"
    preview = run_offline(path)
    following = [
        replace(record, ignore_changes=[f for f in record.ignore_changes if f != USER_DATA_FIELD])
        for record in preview.records
    ]
    plan = plan_adoption(
        load_stack_file(path).config,
        replace(preview, records=following),
        read_state(FIXTURES / "prod-show.json"),
        as_adopted=False,
    )
    replaced = {b.subject for b in plan.blockers if "userDataFileId" in b.problem}
    assert {"cpl-1", "sts-1", "wkr-4"} <= replaced
    assert plan.refusal() is not None


def test_the_stack_file_gains_the_adopt_block_and_nothing_else(migrated_prod):
    stack, migration = migrated_prod
    before = (ROOT / "Pulumi.prod.yaml").read_text().splitlines(keepends=True)
    after = stack.read_text().splitlines(keepends=True)
    added = [
        line[1:]
        for line in difflib.unified_diff(before, after, n=0)
        if line.startswith("+") and not line.startswith("+++")
    ]
    removed = [
        line
        for line in difflib.unified_diff(before, after, n=0)
        if line.startswith("-") and not line.startswith("---")
    ]
    assert removed == []
    assert added[0].startswith("  # ecoma:adopt: written by `ecoma-infra migrate terraform state`")
    assert "  ecoma:adopt:\n" in added
    assert "    sts-1-vm: pve1/5301\n" in added
    config = yaml.safe_load(stack.read_text())["config"]
    assert config["ecoma:adopt"] == migration.plan.import_ids
    assert migration.written is True


def test_running_it_again_changes_nothing(migrated_prod):
    stack, _ = migrated_prod
    text = stack.read_text()
    again = migrate_state(stack, FIXTURES / "prod-show.json")
    assert stack.read_text() == text
    assert again.plan.import_ids == yaml.safe_load(text)["config"]["ecoma:adopt"]


def test_dry_run_reports_and_writes_nothing(tmp_path: Path):
    stack = stack_copy(tmp_path, "staging")
    text = stack.read_text()
    migration = migrate_state(stack, FIXTURES / "staging.tfstate", write=False)
    assert migration.written is False
    assert len(migration.plan.import_ids) == 10
    assert stack.read_text() == text


def test_a_state_that_does_not_match_is_reported_and_the_stack_left_as_it_was(tmp_path: Path):
    stack = stack_copy(tmp_path, "prod")
    text = stack.read_text()
    migration = migrate_state(stack, FIXTURES / "prod-show-mismatch.json")
    assert migration.written is False
    assert [b.subject for b in migration.plan.blockers] == ["wkr-3"]
    assert stack.read_text() == text


def test_a_stateful_node_that_would_be_replaced_stops_everything(tmp_path: Path):
    stack = stack_copy(tmp_path, "prod")
    text = stack.read_text()

    def move(document: dict[str, Any]) -> None:
        vm_entry(document, "cpl-3")["values"]["node_name"] = "pve1"

    with pytest.raises(
        MigrationRefusedError, match=r"stateful node\(s\) cpl-3; nothing was written"
    ):
        migrate_state(stack, varied(tmp_path, move))
    assert stack.read_text() == text


def test_the_adopt_block_keeps_comments_and_replaces_an_old_block():
    text = (
        "# a stack\nencryptionsalt: abc\nconfig:\n  # the nodes\n  ecoma:nodes: []  # none\n"
        "  # ecoma:adopt written before\n  ecoma:adopt:\n    old-vm: pve1/1\n\n"
        "  ecoma:k3s: {version: v1}\n"
    )
    result = with_adopt(text, {"b-vm": "pve1/2", "a-vm": "pve1/3"}, "again", source="x")
    assert result.startswith("# a stack\nencryptionsalt: abc\nconfig:\n  # the nodes\n")
    assert "old-vm" not in result
    assert "written before" not in result
    assert result.endswith(
        "  ecoma:k3s: {version: v1}\n  # ecoma:adopt: again\n  ecoma:adopt:\n"
        "    a-vm: pve1/3\n    b-vm: pve1/2\n"
    )


def test_a_file_the_block_cannot_be_placed_in_safely_is_refused():
    flow = 'config: {"ecoma:nodes": []}\n'
    with pytest.raises(EcomaError, match=r"no block-style `config:` mapping"):
        with_adopt(flow, {"a-vm": "pve1/3"}, "x", source="Pulumi.x.yaml")
