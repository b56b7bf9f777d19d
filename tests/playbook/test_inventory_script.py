"""`ansible/inventory/ecoma_stack.py`: plain `ansible-inventory` and `ansible-playbook` read a
stack's hosts through it. The Pulumi CLI is simulated by a stand-in on PATH that prints the
stack's real `ansible_inventory` (the offline program's) and records how it was called; Ansible
is the real one."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stacks import ROOT

from ecoma_infra.program.offline import run_offline

SCRIPT = ROOT / "ansible" / "inventory" / "ecoma_stack.py"
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def staging_inventory() -> dict[str, Any]:
    return run_offline(ROOT / "Pulumi.staging.yaml").outputs["ansible_inventory"]


def simulated_pulumi(tmp_path: Path, inventory: dict[str, Any], *, fails: bool = False) -> Path:
    """A `pulumi` on PATH: prints the inventory for `stack output ansible_inventory --json`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "inventory.json").write_text(json.dumps(inventory))
    log = tmp_path / "pulumi-calls.log"
    body = (
        "echo 'error: no stack named staging found' >&2; exit 255"
        if fails
        else f"cat {shlex.quote(str(tmp_path / 'inventory.json'))}"
    )
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(f'#!/bin/sh\necho "$PWD|$*" >> {shlex.quote(str(log))}\n{body}\n')
    pulumi.chmod(0o755)
    return bin_dir


def ansible(tmp_path: Path, bin_dir: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("ECOMA_STACK", "PULUMI_STACK")},
        "PATH": f"{bin_dir}:{BIN}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(ROOT / "ansible" / "ansible.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        **env,
    }
    return subprocess.run(
        [str(BIN / argv[0]), *argv[1:]],
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_simulated_pulumi_ansible_reads_the_stack_through_the_script_as_it_reads_the_output(
    tmp_path: Path, staging_inventory: dict[str, Any]
) -> None:
    bin_dir = simulated_pulumi(tmp_path, staging_inventory)
    through_script = ansible(
        tmp_path, bin_dir, "ansible-inventory", "-i", str(SCRIPT), "--list", ECOMA_STACK="staging"
    )
    # The same structure read by Ansible's own YAML/JSON inventory plugin, from a file.
    as_file = ansible(
        tmp_path, bin_dir, "ansible-inventory", "-i", str(tmp_path / "inventory.json"), "--list"
    )

    assert through_script.returncode == 0, through_script.stderr
    assert as_file.returncode == 0, as_file.stderr
    assert json.loads(through_script.stdout) == json.loads(as_file.stdout)
    listed = json.loads(through_script.stdout)
    assert listed["ecoma_cpl"]["hosts"] == ["cpl-1"]
    assert listed["_meta"]["hostvars"]["sts-1"]["ansible_host"] == "10.41.1.31"
    calls = (tmp_path / "pulumi-calls.log").read_text().splitlines()
    assert calls == [
        f"{ROOT}|stack output ansible_inventory --json --non-interactive --stack staging"
    ]


def test_simulated_pulumi_ansible_playbook_lists_the_hosts_of_every_play(
    tmp_path: Path, staging_inventory: dict[str, Any]
) -> None:
    bin_dir = simulated_pulumi(tmp_path, staging_inventory)

    result = ansible(
        tmp_path, bin_dir, "ansible-playbook", "-i", str(SCRIPT), "--list-hosts",
        str(ROOT / "ansible" / "playbook.yaml"), PULUMI_STACK="staging",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    listed = {line.strip() for line in result.stdout.splitlines()}
    assert {"cpl-1", "ops-1", "sts-1", "wkr-1"} <= listed
    assert "--stack staging" in (tmp_path / "pulumi-calls.log").read_text()


def test_simulated_pulumi_without_a_stack_uses_the_selected_one(
    tmp_path: Path, staging_inventory: dict[str, Any]
) -> None:
    bin_dir = simulated_pulumi(tmp_path, staging_inventory)

    result = ansible(tmp_path, bin_dir, "ansible-inventory", "-i", str(SCRIPT), "--graph")

    assert result.returncode == 0, result.stderr
    assert "@ecoma_sts:" in result.stdout
    assert "--stack" not in (tmp_path / "pulumi-calls.log").read_text()


def test_simulated_pulumi_failure_is_a_message_ansible_shows(
    tmp_path: Path, staging_inventory: dict[str, Any]
) -> None:
    bin_dir = simulated_pulumi(tmp_path, staging_inventory, fails=True)

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ECOMA_STACK": "staging"},
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 1
    assert "`pulumi stack output ansible_inventory` of stack staging failed" in result.stderr
    assert "no stack named staging found" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_script_runs_with_the_standard_library_only() -> None:
    source = SCRIPT.read_text()
    imports = {
        line.split()[1].split(".")[0]
        for line in source.splitlines()
        if line.startswith(("import ", "from "))
    }
    assert imports <= set(sys.stdlib_module_names) | {"__future__"}
    assert os.access(SCRIPT, os.X_OK)
    assert source.startswith("#!/usr/bin/env python3\n")
