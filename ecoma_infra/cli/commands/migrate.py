"""`ecoma-infra migrate terraform config|state`: take over a Terraform + Ansible site without
recreating a machine (docs/migration.md is the runbook)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ecoma_infra.cli import stack_options
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.migrate.draft import draft_from_tfvars, write_draft
from ecoma_infra.migrate.report import draft_document, render_draft, render_state, state_document
from ecoma_infra.migrate.state import migrate_state
from ecoma_infra.migrate.tfvars import read_tfvars
from ecoma_infra.paths import project_root
from ecoma_infra.stack.load import stack_file
from ecoma_infra.stack.model import DNS_LABEL

EPILOG_CONFIG = """\
The tfvars shape read (literals only; docs/migration.md has every key):
  nodes = { "<name>" = { role, provider, hypervisor, vm_id, ip, cores, memory (MiB),
            disks = [{ tier, size (GB), datastore, filesystem }] } }   # first disk = OS disk
  proxmox = {...}  sdn = {...}  ssh = {...}  burst = { aws/gcp/oci = {...} }  tailscale = {...}
  k3s_version = "..."
Secrets are never copied: the report prints the `pulumi config set --secret` command for each.
Exit codes: 0 draft written, 1 the tfvars cannot be migrated (every problem listed), 2 bad usage.
"""

EPILOG_STATE = """\
Input: `terraform show -json > state.json` (preferred: attributes upgraded by the providers) or
a raw terraform.tfstate (version 4). Writes ecoma:adopt (resource name -> import id) into the
stack file: the next `pulumi preview`/`up` imports those resources instead of creating them.
Exit codes: 0 adopted (or --dry-run), 1 blocked or refused (a stateful node would be replaced),
nothing written; 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="take over a Terraform codebase's site without recreating a machine",
        description="Migrate from another tool. Run `config` first, review the draft, then "
        "`state`, then `pulumi preview` and `up` (docs/migration.md).",
    )
    tools = parser.add_subparsers(dest="migrate_from", metavar="TOOL", required=True)
    terraform = tools.add_parser(
        "terraform",
        help="from the Terraform + Ansible codebase (terraform.tfvars, terraform.tfstate)",
        description="From the Terraform + Ansible codebase: its terraform.tfvars becomes a stack "
        "file draft, its state becomes the import ids of what it built.",
    )
    parts = terraform.add_subparsers(dest="migrate_part", metavar="PART", required=True)

    config = parts.add_parser(
        "config",
        help="terraform.tfvars -> a Pulumi.<stack>.yaml draft, validated like `validate`",
        description="Map terraform.tfvars onto this project's stack schema, validate the draft "
        "with the same rules as `ecoma-infra validate`, and write it. Lists what is not carried "
        "over (with where it was found and what to do) and the secrets to set.",
        epilog=EPILOG_CONFIG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_argument("--tfvars", type=Path, required=True, help="the terraform.tfvars file")
    target = config.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "-s", "--stack", metavar="NAME", help="write Pulumi.NAME.yaml at the project root"
    )
    target.add_argument("--out", metavar="PATH", type=Path, help="write the draft to this file")
    config.add_argument("--force", action="store_true", help="replace an existing stack file")
    config.add_argument("--json", action="store_true", help="print one JSON document")
    config.set_defaults(handler=run_config)

    state = parts.add_parser(
        "state",
        help="the Terraform state -> ecoma:adopt (import ids) in the stack file, and a report",
        description="Match every resource of the Terraform state to the resource the program "
        "declares for it (offline preview): Proxmox VMs by hypervisor and VM id, SDN objects by "
        "id, the AWS pool's network by id. Report what is adopted, what is left alone and why, "
        "and what the first `up` still changes, marked safe or not. A stateful node (cpl, sts) "
        "that the adoption would replace stops the migration.",
        epilog=EPILOG_STATE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    state.add_argument(
        "--state", type=Path, required=True, help="terraform show -json output or terraform.tfstate"
    )
    stack_options.add_stack_options(state)
    state.add_argument(
        "--dry-run", action="store_true", help="report only: leave the stack file as it is"
    )
    state.add_argument("--json", action="store_true", help="print one JSON document")
    state.set_defaults(handler=run_state)


def run_config(args: argparse.Namespace) -> int:
    if args.stack is not None:
        if not _is_stack_name(args.stack):
            raise UsageError(
                f"--stack {args.stack!r}: not a stack name. Fix: use lowercase letters, digits "
                "and '-', e.g. prod"
            )
        target = stack_file(args.stack, project_root())
    else:
        target = Path(args.out)
    tfvars = read_tfvars(Path(args.tfvars))
    result = write_draft(
        draft_from_tfvars(tfvars), target, force=args.force, tfvars_name=Path(args.tfvars).name
    )
    if args.json:
        print(json.dumps(draft_document(result), indent=2, sort_keys=True))
    else:
        print(render_draft(result))
    return 0


def run_state(args: argparse.Namespace) -> int:
    migration = migrate_state(
        stack_options.stack_path(args), Path(args.state), write=not args.dry_run
    )
    if args.json:
        print(json.dumps(state_document(migration), indent=2, sort_keys=True, default=str))
    else:
        print(render_state(migration))
    if migration.plan.blockers:
        raise EcomaError(
            f"{migration.state.source}: {len(migration.plan.blockers)} blocking mismatch(es) "
            "between the state and the stack (listed above); nothing was adopted"
        )
    return 0


def _is_stack_name(name: str) -> bool:
    return re.fullmatch(DNS_LABEL, name) is not None
