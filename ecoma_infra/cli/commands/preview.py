"""`ecoma-infra preview --offline`: every resource of a stack, without credentials or a CLI."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ecoma_infra.cli import stack_options
from ecoma_infra.errors import UsageError
from ecoma_infra.program.offline import PreviewResult, Recorded, redact, run_offline

# The inputs worth a glance per resource type (dotted paths into the engine's inputs).
KEY_INPUTS: dict[str, tuple[str, ...]] = {
    "proxmoxve:index/vmLegacy:VmLegacy": (
        "nodeName",
        "vmId",
        "clone.vmId",
        "cpu.cores",
        "memory.dedicated",
        "disks",
        "initialization.ipConfigs",
        "protection",
    ),
    "proxmoxve:index/fileLegacy:FileLegacy": ("nodeName", "datastoreId", "sourceRaw.fileName"),
    "tailscale:index/tailnetKey:TailnetKey": (
        "tags",
        "ephemeral",
        "preauthorized",
        "reusable",
        "expiry",
    ),
    "aws:ec2/instance:Instance": (
        "instanceType",
        "ami",
        "metadataOptions.httpTokens",
        "rootBlockDevice.encrypted",
        "associatePublicIpAddress",
    ),
    "aws:ebs/volume:Volume": ("size", "type", "encrypted"),
    "gcp:compute/instance:Instance": ("machineType", "zone", "attachedDisks"),
    "oci:Core/instance:Instance": ("shape", "availabilityDomain"),
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="show every resource and output of a stack (offline: no credentials needed)",
        description=(
            "Run the real Pulumi program under the real SDK with a mock engine and print a tree "
            "of every resource (type, name, key inputs, protection) and the stack outputs, the "
            "Ansible inventory included. Secrets are shown as [secret]. Deterministic. What "
            "`validate` says of the stack file goes to stderr."
        ),
    )
    stack_options.add_stack_options(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="use the mock engine (required: a live preview is `pulumi preview`)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.set_defaults(handler=run)


def require_offline(args: argparse.Namespace) -> None:
    if not args.offline:
        raise UsageError(
            "only the offline preview runs here: add --offline, or run `pulumi preview "
            f"--stack {args.stack or 'NAME'}` with the Pulumi CLI and credentials"
        )


def run(args: argparse.Namespace) -> int:
    require_offline(args)
    # The file is validated once, for the summary `validate` prints (on stderr: stdout is the
    # preview) and for the program's run.
    loaded = stack_options.load(args)
    for line in stack_options.summary(loaded):
        print(line, file=sys.stderr)
    result = run_offline(stack_options.stack_path(args), loaded=loaded)
    if args.json:
        print(json.dumps(result.document(), indent=2, sort_keys=True))
    else:
        print(render_tree(result))
    return 0


def _pick(inputs: dict[str, Any], path: str) -> Any:
    value: Any = inputs
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _disk(disk: Any) -> str:
    if not isinstance(disk, dict):
        return str(disk)
    slot, tier = disk.get("interface"), disk.get("serial")
    return f"{slot}:{tier}@{disk.get('datastoreId')}:{disk.get('size')}G"


def _summary(record: Recorded) -> str:
    inputs = redact(record.inputs)
    if isinstance(inputs.get("disks"), list):
        inputs["disks"] = " ".join(_disk(d) for d in inputs["disks"])
    paths = KEY_INPUTS.get(record.type)
    if paths is None:
        paths = tuple(k for k, v in sorted(inputs.items()) if isinstance(v, str | int | bool))[:4]
    parts = []
    for path in paths:
        value = _pick(inputs, path)
        if value is not None:
            parts.append(f"{path}={json.dumps(value, sort_keys=True, separators=(',', ':'))}")
    flags = [
        flag
        for flag, on in (
            ("protected", record.protect),
            ("retained-on-delete", record.retain_on_delete),
            (f"ignores:{','.join(record.ignore_changes)}", bool(record.ignore_changes)),
            (f"import:{record.import_id}", bool(record.import_id)),
        )
        if on
    ]
    return " ".join(parts + [f"[{f}]" for f in flags])


def render_tree(result: PreviewResult) -> str:
    children: dict[str, list[Recorded]] = {}
    for record in result.records:
        children.setdefault(record.parent, []).append(record)
    urns = {record.urn for record in result.records}
    roots = [r for r in result.records if r.parent not in urns]
    lines = [f"Stack {result.stack}: {len(result.records)} resources (offline preview)"]

    def walk(record: Recorded, prefix: str, last: bool) -> None:
        branch = "└─ " if last else "├─ "
        summary = _summary(record)
        lines.append(
            f"{prefix}{branch}{record.type}  {record.name}" + (f"  {summary}" if summary else "")
        )
        kids = sorted(children.get(record.urn, []), key=lambda r: (r.type, r.name))
        for index, kid in enumerate(kids):
            walk(kid, prefix + ("   " if last else "│  "), index == len(kids) - 1)

    ordered = sorted(roots, key=lambda r: (r.custom, r.type, r.name))
    for index, record in enumerate(ordered):
        walk(record, "", index == len(ordered) - 1)
    lines.append("")
    lines.append("Outputs:")
    for key, value in result.outputs.items():
        if key == "ansible_inventory":
            continue
        lines.append(f"  {key}: {json.dumps(value, sort_keys=True)}")
    lines.append("  ansible_inventory:")
    text = json.dumps(result.outputs.get("ansible_inventory"), indent=2, sort_keys=True)
    lines.extend(f"    {line}" for line in text.splitlines())
    return "\n".join(lines)
