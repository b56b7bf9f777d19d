"""`ecoma-infra migrate terraform config|state` as scripts see it: exit codes 0/1/2, reports on
stdout, errors on stderr naming the file and field, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from migrate_support import FIXTURES, ROOT, varied, vm_entry

from ecoma_infra.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["migrate", "terraform", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_config_writes_a_valid_draft_and_prints_what_it_left_out(tmp_path: Path, capsys):
    target = tmp_path / "Pulumi.prod.yaml"
    code, out, err = run(
        capsys, "config", "--tfvars", str(FIXTURES / "prod.tfvars"), "--out", str(target)
    )
    assert (code, err) == (0, "")
    assert target.is_file()
    assert f"-> {target}: a valid draft (12 on-prem nodes" in out
    assert "proxmox.cpu_type" in out
    assert "pulumi config set --secret ecoma:proxmox_api_token" in out
    assert "REDACTED" not in out


def test_config_json_is_one_document(tmp_path: Path, capsys):
    code, out, _ = run(
        capsys,
        "config",
        "--tfvars",
        str(FIXTURES / "staging.tfvars"),
        "--out",
        str(tmp_path / "Pulumi.staging.yaml"),
        "--json",
    )
    document = json.loads(out)
    assert code == 0
    assert {s["key"] for s in document["secrets"]} >= {"ecoma:proxmox_api_token"}
    assert [n["key"] for n in document["not_carried_over"]] == ["environment"]


@pytest.mark.parametrize(
    ("tfvars", "expected"),
    [
        ("bad-syntax.tfvars", "bad-syntax.tfvars: (file): HCL syntax error"),
        ("bad-values.tfvars", 'bad-values.tfvars:44: nodes["wkr-1"].hypervsor: unknown field'),
        ("bad-rules.tfvars", "VM id 5101 used by cpl-1, sts-1"),
    ],
)
def test_config_of_a_bad_tfvars_fails_with_the_problems_and_writes_nothing(
    tmp_path: Path, capsys, tfvars: str, expected: str
):
    code, out, err = run(
        capsys,
        "config",
        "--tfvars",
        str(FIXTURES / tfvars),
        "--out",
        str(tmp_path / "Pulumi.x.yaml"),
    )
    assert (code, out) == (1, "")
    assert expected in err
    assert "no stack file written" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "--tfvars", "/nonexistent/terraform.tfvars", "--out", "{tmp}/Pulumi.x.yaml"],
        ["config", "--tfvars", str(FIXTURES / "prod.tfvars"), "--out", "/nonexistent/dir/x.yaml"],
        ["config", "--tfvars", str(FIXTURES / "prod.tfvars"), "--stack", "Prod!"],
        ["state", "--state", "/nonexistent/state.json", "--file", "{tmp}/Pulumi.prod.yaml"],
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, capsys, argv: list[str]):
    shutil.copy(ROOT / "Pulumi.prod.yaml", tmp_path / "Pulumi.prod.yaml")
    code, _, err = run(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    assert err.startswith("ecoma-infra: error: ")


def test_a_missing_part_is_argparse_usage(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["migrate", "terraform"])
    assert caught.value.code == 2


def test_state_adopts_and_reports(tmp_path: Path, capsys):
    stack = tmp_path / "Pulumi.staging.yaml"
    shutil.copy(ROOT / "Pulumi.staging.yaml", stack)
    code, out, err = run(
        capsys, "state", "--state", str(FIXTURES / "staging.tfstate"), "--file", str(stack)
    )
    assert (code, err) == (0, "")
    assert "Adopted (10; ecoma:adopt written to the stack file)" in out
    assert "sts-1-vm" in out
    assert "pve-stg1/4301" in out
    assert "Left alone (" in out
    assert "What the first `up` still changes:" in out
    assert "pulumi preview --stack staging" in out
    assert "ecoma:adopt:" in stack.read_text()


def test_state_json_is_one_document_without_writing_on_dry_run(tmp_path: Path, capsys):
    stack = tmp_path / "Pulumi.prod.yaml"
    shutil.copy(ROOT / "Pulumi.prod.yaml", stack)
    code, out, _ = run(
        capsys,
        "state",
        "--state",
        str(FIXTURES / "prod-show.json"),
        "--file",
        str(stack),
        "--dry-run",
        "--json",
    )
    document = json.loads(out)
    assert code == 0
    assert document["written"] is False
    assert document["import_ids"]["sts-2-vm"] == "pve2/5302"
    assert {c["effect"] for c in document["changes"]} <= {"update", "reboot", "kept", "create"}
    assert stack.read_text() == (ROOT / "Pulumi.prod.yaml").read_text()


def test_state_that_does_not_match_exits_1_with_the_report(tmp_path: Path, capsys):
    stack = tmp_path / "Pulumi.prod.yaml"
    shutil.copy(ROOT / "Pulumi.prod.yaml", stack)
    code, out, err = run(
        capsys, "state", "--state", str(FIXTURES / "prod-show-mismatch.json"), "--file", str(stack)
    )
    assert code == 1
    assert "BLOCKING (1)" in out
    assert "wkr-3: VM 5403 is on pve2 in Terraform" in out
    assert "VM 5405 (wkr-5) on pve1 is not in ecoma:nodes" in out
    assert "1 blocking mismatch(es)" in err
    assert stack.read_text() == (ROOT / "Pulumi.prod.yaml").read_text()


def test_state_refuses_to_replace_a_stateful_node_naming_it(tmp_path: Path, capsys):
    stack = tmp_path / "Pulumi.prod.yaml"
    shutil.copy(ROOT / "Pulumi.prod.yaml", stack)

    def move(document: dict[str, Any]) -> None:
        vm_entry(document, "sts-2")["values"]["node_name"] = "pve3"

    state = varied(tmp_path, move)
    code, out, err = run(capsys, "state", "--state", str(state), "--file", str(stack))
    assert (code, out) == (1, "")
    assert "stateful node(s) sts-2" in err
    assert stack.read_text() == (ROOT / "Pulumi.prod.yaml").read_text()


def test_state_that_is_not_json_exits_1_naming_the_file(tmp_path: Path, capsys):
    stack = tmp_path / "Pulumi.prod.yaml"
    shutil.copy(ROOT / "Pulumi.prod.yaml", stack)
    state = tmp_path / "terraform.tfstate"
    state.write_text("No state.\n")
    code, out, err = run(capsys, "state", "--state", str(state), "--file", str(stack))
    assert (code, out) == (1, "")
    assert f"{state}: not JSON (line 1, column 1" in err
