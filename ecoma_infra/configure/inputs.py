"""The configure run's inputs: inventory files, stack outputs, the caller's environment."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.platforms.pulumi_automation import AutomationStack

#: Secrets the roles read with `lookup('ansible.builtin.env', ...)` (docs/contracts.md).
SECRET_ENV_VARS: tuple[str, ...] = (
    "ECOMA_K3S_TOKEN",
    "ECOMA_K3S_AGENT_TOKEN",
    "ECOMA_TAILSCALE_AUTH_KEYS",
)
#: Secrets only some stacks have: the S3 credentials of the etcd snapshots.
OPTIONAL_SECRET_ENV_VARS: tuple[str, ...] = (
    "ECOMA_ETCD_S3_ACCESS_KEY_ID",
    "ECOMA_ETCD_S3_SECRET_ACCESS_KEY",
)
#: Secret stack outputs and the variable each one becomes.
SECRET_STACK_OUTPUTS: dict[str, str] = {
    "k3s_token": "ECOMA_K3S_TOKEN",
    "k3s_agent_token": "ECOMA_K3S_AGENT_TOKEN",
    "tailscale_auth_keys": "ECOMA_TAILSCALE_AUTH_KEYS",
    "etcd_s3_access_key_id": "ECOMA_ETCD_S3_ACCESS_KEY_ID",
    "etcd_s3_secret_access_key": "ECOMA_ETCD_S3_SECRET_ACCESS_KEY",
}
INVENTORY_OUTPUT = "ansible_inventory"


def inventory_from_document(document: object, source: str) -> dict[str, Any]:
    """The inventory inside a JSON document: a bare inventory (`{"all": ...}`), a preview or
    Automation API document (`{"outputs": {"ansible_inventory": ...}}`), or `pulumi stack output
    --json` (`{"ansible_inventory": ...}`). `source` names the file or stack in errors."""
    inventory: object = document
    if isinstance(document, dict):
        outputs = document.get("outputs")
        if isinstance(outputs, dict) and INVENTORY_OUTPUT in outputs:
            inventory = outputs[INVENTORY_OUTPUT]
        elif INVENTORY_OUTPUT in document:
            inventory = document[INVENTORY_OUTPUT]
    if isinstance(inventory, str):  # an output exported as a JSON string
        try:
            inventory = json.loads(inventory)
        except ValueError as error:
            raise UsageError(f"{source}: `{INVENTORY_OUTPUT}` is not valid JSON: {error}") from None
    if not isinstance(inventory, dict) or not isinstance(inventory.get("all"), dict):
        raise UsageError(
            f"{source}: no inventory found: expected an Ansible inventory object "
            f'{{"all": {{...}}}}, or a document with `outputs.{INVENTORY_OUTPUT}` '
            f"(preview JSON) or `{INVENTORY_OUTPUT}` (pulumi stack output --json)"
        )
    return inventory


def load_inventory_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(
            f"{path}: not UTF-8 text (byte {error.start} cannot be decoded): give the JSON "
            "inventory that `ecoma-infra inventory` or the stack output writes"
        ) from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read the inventory file: {error.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise UsageError(f"{path}: not valid JSON: {error}") from None
    except RecursionError:
        raise UsageError(f"{path}: not valid JSON: nested too deeply") from None
    return inventory_from_document(document, str(path))


def read_stack_outputs(stack_name: str, work_dir: Path) -> dict[str, Any]:
    """The stack's outputs, secrets in plain text, through the Pulumi Automation API
    (`platforms.pulumi_automation.AutomationStack`); it needs the Pulumi CLI and a logged-in
    backend."""
    try:
        return AutomationStack(stack_name, work_dir).outputs()
    except EcomaError as error:
        raise EcomaError(f"{error}; or pass the inventory with --inventory FILE") from None


def secrets_from_outputs(outputs: Mapping[str, Any]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for output, variable in SECRET_STACK_OUTPUTS.items():
        value = outputs.get(output)
        if value is None or value == "":
            continue
        secrets[variable] = value if isinstance(value, str) else json.dumps(value)
    return secrets


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    names = (*SECRET_ENV_VARS, *OPTIONAL_SECRET_ENV_VARS)
    return {name: environ[name] for name in names if environ.get(name)}
