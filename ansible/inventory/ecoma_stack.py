#!/usr/bin/env python3
"""Ansible inventory script: the hosts and groups of a stack, read from its `ansible_inventory`
output, so plain `ansible-playbook` (or AWX, as a script source) runs against a stack without
`ecoma-infra configure`:

    ECOMA_STACK=prod ansible-playbook -i ansible/inventory/ecoma_stack.py ansible/playbook.yaml

The stack: $ECOMA_STACK, else $PULUMI_STACK, else the stack selected with `pulumi stack select`.
It runs `pulumi stack output ansible_inventory --json` in the project (the Pulumi CLI, logged in
to the stack's backend). The output holds no secret; the k3s tokens and Tailscale auth keys are
not in it either: give them to the play in ECOMA_K3S_TOKEN, ECOMA_K3S_AGENT_TOKEN and
ECOMA_TAILSCALE_AUTH_KEYS, as `ecoma-infra configure` does (docs/contracts.md).

Only the Python standard library: Ansible runs this with whatever python3 is on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

PROJECT = Path(__file__).resolve().parents[2]
OUTPUT = "ansible_inventory"


def stack_output() -> dict[str, Any]:
    """The stack's `ansible_inventory` output (Ansible's YAML/JSON inventory structure)."""
    stack = os.environ.get("ECOMA_STACK") or os.environ.get("PULUMI_STACK") or ""
    command = ["pulumi", "stack", "output", OUTPUT, "--json", "--non-interactive"]
    if stack:
        command += ["--stack", stack]
    environment = {**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}
    try:
        result = subprocess.run(
            command, cwd=PROJECT, env=environment, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        fail("the Pulumi CLI is not on PATH: install it (https://www.pulumi.com/docs/install/)")
    which = f"stack {stack}" if stack else "the selected stack"
    if result.returncode != 0:
        detail = " ".join(result.stderr.split())[-500:]
        fail(
            f"`pulumi stack output {OUTPUT}` of {which} failed: {detail} (set ECOMA_STACK to "
            "the stack, and log in to its backend)"
        )
    try:
        document = json.loads(result.stdout)
    except ValueError:
        fail(f"`pulumi stack output {OUTPUT}` of {which} is not JSON: run `ecoma-infra deploy`")
    if not isinstance(document, dict) or not isinstance(document.get("all"), dict):
        fail(f"{which} has no {OUTPUT} output with an `all` group: run `ecoma-infra deploy`")
    return document


def script_inventory(document: dict[str, Any]) -> dict[str, Any]:
    """Ansible's YAML-style structure (groups nested under `children`, hosts as mappings) in the
    form inventory scripts print: every group at the top with lists of hosts and children, and
    every host's variables under `_meta.hostvars` (merged over the groups that list it)."""
    groups: dict[str, dict[str, Any]] = {}
    hostvars: dict[str, dict[str, Any]] = {}

    def walk(name: str, group: dict[str, Any]) -> None:
        entry = groups.setdefault(name, {"hosts": [], "vars": {}, "children": []})
        entry["vars"].update(group.get("vars") or {})
        for host, variables in (group.get("hosts") or {}).items():
            if host not in entry["hosts"]:
                entry["hosts"].append(host)
            hostvars.setdefault(host, {}).update(variables or {})
        for child, subgroup in (group.get("children") or {}).items():
            if child not in entry["children"]:
                entry["children"].append(child)
            walk(child, subgroup or {})

    walk("all", document["all"])
    return {**groups, "_meta": {"hostvars": hostvars}}


def fail(message: str) -> NoReturn:
    print(f"ecoma_stack.py: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--list"]:
        print(json.dumps(script_inventory(stack_output()), indent=2, sort_keys=True))
        return 0
    if argv[:1] == ["--host"] and len(argv) == 2:
        print(json.dumps({}))  # every host's variables are in --list's _meta already
        return 0
    print("usage: ecoma_stack.py --list | --host HOST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
