"""Every node's rendered user data passes cloud-init's own schema check.

`cloud-init schema` comes from Debian's `cloud-init` package (the version Debian 12 images
boot with; scripts/test installs it): missing, these tests skip, or fail under
ECOMA_LAB_REQUIRED=1 (tests/tools.py). cloud-init 22.4 does not flag unknown top-level keys,
so the keys are also checked against its schema's own list. The documents are the program's,
taken from the offline preview's registrations (simulated engine, real program and SDK).
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from stacks import stack_variant
from tools import required_tool

from ecoma_infra.program.offline import PreviewResult, run_offline

SYSTEM_PYTHON = "/usr/bin/python3"  # the interpreter Debian's cloud-init package installs for


def cloud_init() -> str:
    return required_tool(
        "cloud-init", "apt-get install cloud-init (Debian's package)", "the user data check"
    )


def schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [cloud_init(), "schema", "--config-file", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def _all_pools_running(config: dict[str, Any]) -> None:
    for provider in ("aws", "gcp", "oci"):
        config["ecoma:burst"][provider]["count"] = 1
    config["ecoma:burst"]["budget_usd_per_hour"] = 100


def unwrap(value: Any) -> Any:
    return value["value"] if isinstance(value, dict) and "value" in value else value


def cloud_configs(result: PreviewResult) -> dict[str, str]:
    """Every #cloud-config the program hands a machine, by resource name."""
    found: dict[str, str] = {}
    for record in result.records:
        if record.type == "proxmoxve:index/fileLegacy:FileLegacy":
            found[record.name] = unwrap(record.inputs["sourceRaw"])["data"]
        elif record.type == "aws:ec2/instance:Instance":
            found[record.name] = unwrap(record.inputs["userData"])
        elif record.type == "oci:Core/instance:Instance":
            encoded = unwrap(unwrap(record.inputs["metadata"])["user_data"])
            found[record.name] = base64.b64decode(encoded).decode()
    return found


@pytest.fixture(scope="module")
def documents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    found: dict[str, str] = {}
    for stack in ("staging", "prod"):
        path = stack_variant(tmp_path_factory.mktemp(stack), stack, _all_pools_running)
        found |= {
            f"{stack}/{name}": text for name, text in cloud_configs(run_offline(path)).items()
        }
    return found


@pytest.fixture(scope="module")
def known_keys() -> set[str]:
    cloud_init()
    script = (
        "import json\n"
        "from cloudinit.config.schema import get_schema\n"
        "schema = get_schema()\n"
        "keys = set()\n"
        "for part in schema['allOf']:\n"
        "    name = part['$ref'].rsplit('/', 1)[-1]\n"
        "    keys |= set(schema['$defs'][name].get('properties', {}))\n"
        "print(json.dumps(sorted(keys)))\n"
    )
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    keys = set(json.loads(done.stdout))
    assert {"runcmd", "packages", "write_files", "users"} <= keys
    return keys


def test_every_machine_of_both_stacks_gets_a_cloud_config(documents: dict[str, str]) -> None:
    # 4 + 12 on-prem snippets, one AWS and one OCI worker per stack (GCP runs a startup script).
    assert len(documents) == 4 + 12 + 2 * 2
    for name, text in documents.items():
        assert text.startswith("#cloud-config\n"), name


def test_every_cloud_config_passes_cloud_init_schema(
    documents: dict[str, str], tmp_path: Path
) -> None:
    for name, text in documents.items():
        path = tmp_path / (name.replace("/", "-") + ".yaml")
        path.write_text(text)
        done = schema_check(path)
        assert done.returncode == 0, f"{name}:\n{done.stdout}{done.stderr}"
        assert "Valid cloud-config" in done.stdout, name


def test_every_top_level_key_is_one_cloud_init_knows(
    documents: dict[str, str], known_keys: set[str]
) -> None:
    for name, text in documents.items():
        unknown = set(yaml.safe_load(text)) - known_keys
        assert not unknown, f"{name}: cloud-init ignores {sorted(unknown)}"


def test_the_schema_check_itself_rejects_a_wrong_document(tmp_path: Path) -> None:
    path = tmp_path / "wrong.yaml"
    path.write_text("#cloud-config\npackages: qemu-guest-agent\nruncmd: {start: agent}\n")
    done = schema_check(path)
    assert done.returncode != 0
    assert "is not of type 'array'" in done.stdout + done.stderr


def test_oci_workers_install_what_their_iscsi_disks_need(documents: dict[str, str]) -> None:
    for name, text in documents.items():
        if "burst-oci" in name:
            assert "open-iscsi" in yaml.safe_load(text)["packages"], name
