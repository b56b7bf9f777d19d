"""`ecoma-infra configure`: run the Ansible playbook against a stack's nodes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ecoma_infra.cli import stack_options
from ecoma_infra.configure import inputs
from ecoma_infra.configure.run import run_playbook
from ecoma_infra.paths import ansible_dir, project_root

_EPILOG = """\
inventory:
  -s/--stack NAME   the stack's `ansible_inventory` output, read with the Pulumi Automation API
                    (needs the Pulumi CLI and a logged-in backend); default: $PULUMI_STACK,
                    else the stack selected with `pulumi stack select`
  --inventory FILE  a JSON file: a bare inventory {"all": {...}}, a preview document with
                    outputs.ansible_inventory, or `pulumi stack output --json`

secrets (given to Ansible only through its process environment, never written to disk):
  ECOMA_K3S_TOKEN            k3s server token
  ECOMA_K3S_AGENT_TOKEN      k3s agent token
  ECOMA_TAILSCALE_AUTH_KEYS  JSON object {node_name: auth_key}
  Taken from these environment variables of the caller; with --stack, a variable that is not
  set is taken from the stack's secret outputs k3s_token, k3s_agent_token, tailscale_auth_keys.

exit codes: 0 every host succeeded; 1 a host failed or was unreachable, no host matched, or
ansible-playbook failed; 2 bad usage (missing or invalid file, conflicting options); 130 Ctrl-C.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "configure",
        help="configure the nodes with Ansible (exit 0 ok, 1 a host failed, 2 bad usage)",
        description=(
            "Run ansible/playbook.yaml through ansible-runner against a stack's inventory: "
            "storage tiers, swap, Tailscale, k3s servers and agents, labels and taints. "
            "Shows live progress per host and a summary with every failed task."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    stack_options.add_stack_option(
        source,
        alternatives=("inventory",),
        help_text="read the inventory from this stack (default: $PULUMI_STACK, else the stack "
        "selected with `pulumi stack select`)",
    )
    source.add_argument(
        "--inventory", metavar="FILE", type=Path, help="read the inventory from this JSON file"
    )
    add_run_options(parser)
    parser.set_defaults(handler=run)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The Ansible options `configure` and `lab converge` share."""
    parser.add_argument(
        "--playbook",
        metavar="FILE",
        type=Path,
        default=None,
        help="the playbook to run (default: ansible/playbook.yaml of the project)",
    )
    parser.add_argument("--limit", metavar="PATTERN", help="only these hosts (Ansible pattern)")
    parser.add_argument(
        "--tags", metavar="TAGS", action="append", help="only tasks with these tags (comma list)"
    )
    parser.add_argument(
        "--skip-tags", metavar="TAGS", action="append", help="skip tasks with these tags"
    )
    parser.add_argument("--check", action="store_true", help="dry run: change nothing")
    parser.add_argument("--diff", action="store_true", help="show the changes to files")
    parser.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="count",
        default=0,
        help="show Ansible's own output; repeat for more (-vvv)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per host result and a final summary object (for CI logs)",
    )


def run(args: argparse.Namespace) -> int:
    if args.stack:
        outputs = inputs.read_stack_outputs(args.pulumi_stack or args.stack, project_root())
        inventory = inputs.inventory_from_document(outputs, f"stack {args.stack}")
        secrets = {
            **inputs.secrets_from_outputs(outputs),
            **inputs.secrets_from_environment(),
        }
    else:
        inventory = inputs.load_inventory_file(args.inventory)
        secrets = inputs.secrets_from_environment()
    return run_with(args, inventory, secrets)


def run_with(args: argparse.Namespace, inventory: dict[str, Any], secrets: dict[str, str]) -> int:
    """Run the playbook with the options of `add_run_options`; the exit code of the run."""
    missing = [name for name in inputs.SECRET_ENV_VARS if name not in secrets]
    if missing:
        print(
            f"ecoma-infra: note: {', '.join(missing)} not set: tasks that need them will fail",
            file=sys.stderr,
        )
    result = run_playbook(
        inventory,
        args.playbook or ansible_dir() / "playbook.yaml",
        secrets=secrets,
        limit=args.limit,
        tags=_split(args.tags),
        skip_tags=_split(args.skip_tags),
        check=args.check,
        diff=args.diff,
        verbosity=args.verbosity,
        output="json" if args.json else "progress",
        stream=sys.stdout,
    )
    return 0 if result.success else 1


def _split(values: list[str] | None) -> list[str] | None:
    """`--tags a,b --tags c` → ["a", "b", "c"]."""
    if not values:
        return None
    return [tag.strip() for value in values for tag in value.split(",") if tag.strip()]
