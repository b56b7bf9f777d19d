"""terraform.tfvars -> a Pulumi.<stack>.yaml draft: the fixtures of the staging-like and the
prod-like site give exactly the repo's stack files (validated by the code `validate` runs), what
cannot be mapped is listed, secrets are never written, and bad tfvars end in clear errors at the
tfvars key and line, with no file written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from migrate_support import FIXTURES, ROOT

from ecoma_infra.errors import UsageError
from ecoma_infra.migrate.draft import draft_from_tfvars, write_draft
from ecoma_infra.migrate.tfvars import TfvarsError, read_tfvars, render_path
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import StackConfig


def draft_to(tmp_path: Path, tfvars: str, stack: str, *, force: bool = False) -> Path:
    target = tmp_path / f"Pulumi.{stack}.yaml"
    write_draft(
        draft_from_tfvars(read_tfvars(FIXTURES / tfvars)), target, force=force, tfvars_name=tfvars
    )
    return target


def comparable(config: StackConfig) -> dict:
    """What a tfvars file can say: everything but the autoscaler (not a Terraform setting); the
    template node as the program reads it (default: the first hypervisor)."""
    dumped = config.model_dump(mode="json")
    dumped["burst"]["autoscale"] = None
    proxmox = dumped["proxmox"]
    proxmox["template_node"] = proxmox["template_node"] or proxmox["hypervisors"][0]
    return dumped


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_the_draft_validates_and_is_the_sites_stack_file(tmp_path: Path, stack: str):
    path = draft_to(tmp_path, f"{stack}.tfvars", stack)
    drafted = load_stack_file(path).config  # the very checks of `ecoma-infra validate`
    repo = load_stack_file(ROOT / f"Pulumi.{stack}.yaml").config
    assert comparable(drafted) == comparable(repo)
    assert [n.name for n in drafted.nodes] == [n.name for n in repo.nodes]


def test_secrets_are_listed_with_their_command_and_never_written(tmp_path: Path):
    draft = draft_from_tfvars(read_tfvars(FIXTURES / "prod.tfvars"))
    path = tmp_path / "Pulumi.prod.yaml"
    write_draft(draft, path, force=False, tfvars_name="prod.tfvars")
    text = path.read_text()
    assert "REDACTED" not in text
    assert "api_token" not in text
    assert "private_key" not in text
    assert "oauth_secret" not in text
    found = {(s.key, render_path(s.path)) for s in draft.secrets}
    assert found == {
        ("proxmox_api_token", "proxmox.api_token"),
        ("proxmox_ssh_private_key", "proxmox.ssh_private_key"),
        ("gcp_credentials", "burst.gcp.credentials"),
        ("oci_private_key", "burst.oci.private_key"),
        ("tailscale_oauth_client_secret", "tailscale.oauth_secret"),
    }
    api_token = next(s for s in draft.secrets if s.key == "proxmox_api_token")
    lines = (FIXTURES / "prod.tfvars").read_text().splitlines()
    assert "api_token" in lines[api_token.line - 1]
    assert api_token.command() == "pulumi config set --secret ecoma:proxmox_api_token"


def test_what_cannot_be_mapped_is_listed_with_where_and_what_to_do():
    draft = draft_from_tfvars(read_tfvars(FIXTURES / "prod.tfvars"))
    notes = {render_path(n.path): n for n in draft.notes}
    assert set(notes) == {"environment", "proxmox.cpu_type", "ansible_inventory_file"}
    lines = (FIXTURES / "prod.tfvars").read_text().splitlines()
    for key, note in notes.items():
        assert key.split(".")[-1] in lines[note.line - 1]
        assert note.why
        assert note.todo
    assert "x86-64-v2-AES" in notes["proxmox.cpu_type"].why


def test_cloud_workers_and_running_pools_are_not_carried_over(tmp_path: Path):
    text = (FIXTURES / "staging.tfvars").read_text()
    text = text.replace("aws = {\n    count            = 0", "aws = {\n    count            = 2")
    text = text.replace(
        '"wkr-1" = {',
        '"wkr-aws-1" = {\n    role = "wkr"\n    provider = "aws"\n    hypervisor = "none"\n'
        '    vm_id = 9999\n    ip = "10.41.1.99"\n    cores = 2\n    memory = 4096\n'
        '    disks = [{ tier = "hot", size = 30 }]\n  }\n  "wkr-1" = {',
    )
    source = tmp_path / "terraform.tfvars"
    source.write_text(text)
    draft = draft_from_tfvars(read_tfvars(source))
    notes = {render_path(n.path): n for n in draft.notes}
    assert "cloud workers are burst nodes" in notes['nodes["wkr-aws-1"]'].why
    assert "scale them to 0 with Terraform first" in notes["burst.aws.count"].todo
    target = tmp_path / "out" / "Pulumi.staging.yaml"
    target.parent.mkdir()
    write_draft(draft, target, force=False, tfvars_name="terraform.tfvars")
    config = load_stack_file(target).config
    assert "wkr-aws-1" not in {n.name for n in config.nodes}
    assert config.burst.aws is not None
    assert config.burst.aws.count == 0


def test_a_tfvars_file_of_the_wrong_shape_lists_every_problem_and_writes_nothing(tmp_path: Path):
    target = tmp_path / "Pulumi.bad.yaml"
    with pytest.raises(TfvarsError) as caught:
        draft_to(tmp_path, "bad-values.tfvars", "bad")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # not even a temporary file is left
    found = {(render_path(p.path), p.stack_where, p.line) for p in caught.value.problems}
    assert found == {
        ('nodes["cpl-1"].memory', "", 39),  # 4 * 2048
        ('nodes["wkr-1"].hypervsor', "", 44),  # misspelt
        ('nodes["cpl-1"].role', "ecoma:nodes[cpl-1].role", 34),  # "controller"
        ('nodes["wkr-1"]', "ecoma:nodes[wkr-1].hypervisor", 42),
        ('nodes["wkr-1"]', "ecoma:nodes[wkr-1].ip", 42),
        ('nodes["wkr-1"].disks', "ecoma:nodes[wkr-1].disks", 48),  # disks = []
    }
    message = str(caught.value)
    assert message.startswith(
        f"{FIXTURES / 'bad-values.tfvars'}: 6 problems; no stack file written"
    )
    assert "known: cores, disks, hypervisor, ip, memory, provider, role, vm_id" in message


def test_a_tfvars_file_that_breaks_the_design_rules_is_reported_at_its_keys(tmp_path: Path):
    with pytest.raises(TfvarsError) as caught:
        draft_to(tmp_path, "bad-rules.tfvars", "bad")
    assert list(tmp_path.iterdir()) == []
    by_key = {render_path(p.path): p for p in caught.value.problems}
    messages = " | ".join(p.message for p in caught.value.problems)
    assert "VM id 5101 used by cpl-1, sts-1" in messages
    assert "IP 10.41.1.11 used by cpl-1, wkr-1" in messages
    assert (
        "10.41.2.31 is outside the SDN subnet 10.41.1.0/24" in by_key['nodes["sts-1"].ip'].message
    )
    assert "2 disks have tier 'hot'" in by_key['nodes["sts-1"].disks'].message
    assert "tier hot is on ssd-ceph here but on nvme-local on node cpl-1" in (
        by_key['nodes["sts-1"].disks[1].datastore'].message
    )
    assert "role sts runs only on proxmox" in by_key['nodes["sts-2"].provider'].message
    assert "the OS disk cannot be the swap tier" in by_key['nodes["wkr-1"].disks[0].tier'].message


def test_a_setting_the_tfvars_lacks_is_named_with_the_block_to_add_it_to(tmp_path: Path):
    source = tmp_path / "terraform.tfvars"
    source.write_text(
        (FIXTURES / "staging.tfvars")
        .read_text()
        .replace('  template_boot_interface = "virtio0" # the disk template 9000 boots from\n', "")
    )
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(TfvarsError) as caught:
        write_draft(
            draft_from_tfvars(read_tfvars(source)),
            out / "Pulumi.staging.yaml",
            force=False,
            tfvars_name="terraform.tfvars",
        )
    [problem] = caught.value.problems
    assert problem.stack_where == "ecoma:proxmox.template_boot_interface"
    assert "(tfvars: `proxmox`)" in problem.fix
    rendered = problem.render("terraform.tfvars")
    assert rendered.startswith("terraform.tfvars: ecoma:proxmox.template_boot_interface (not in")


def test_two_stacks_on_one_tailnet_are_refused_as_validate_would(tmp_path: Path):
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    source = tmp_path / "terraform.tfvars"
    source.write_text(
        (FIXTURES / "staging.tfvars")
        .read_text()
        .replace('"ecoma-staging.github"', '"ecoma.io"')
        .replace('"tail7b3a9.ts.net"', '"tail4e2c1.ts.net"')
    )
    with pytest.raises(TfvarsError) as caught:
        write_draft(
            draft_from_tfvars(read_tfvars(source)),
            tmp_path / "Pulumi.staging.yaml",
            force=False,
            tfvars_name="terraform.tfvars",
        )
    keys = {render_path(p.path) for p in caught.value.problems}
    assert keys == {"tailscale.tailnet", "tailscale.magic_dns_suffix"}
    assert not (tmp_path / "Pulumi.staging.yaml").exists()


def test_an_existing_stack_file_is_replaced_only_with_force(tmp_path: Path):
    target = tmp_path / "Pulumi.prod.yaml"
    target.write_text("config: {}\n# hand-written\n")
    with pytest.raises(UsageError, match=r"exists already.*--force"):
        draft_to(tmp_path, "prod.tfvars", "prod")
    assert target.read_text() == "config: {}\n# hand-written\n"
    draft_to(tmp_path, "prod.tfvars", "prod", force=True)
    assert yaml.safe_load(target.read_text())["config"]["ecoma:nodes"][0]["name"] == "cpl-1"
