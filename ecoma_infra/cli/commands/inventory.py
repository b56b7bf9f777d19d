"""`ecoma-infra inventory --offline`: the stack's Ansible inventory as JSON."""

from __future__ import annotations

import argparse
import json

from ecoma_infra.cli import stack_options
from ecoma_infra.cli.commands.preview import require_offline
from ecoma_infra.program.offline import run_offline


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "inventory",
        help="print the stack's Ansible inventory (the ansible_inventory output) as JSON",
        description="Print the `ansible_inventory` stack output computed by the offline preview. "
        "It holds no secret; `ecoma-infra configure --inventory FILE` takes it.",
    )
    stack_options.add_stack_options(parser)
    parser.add_argument("--offline", action="store_true", help="use the mock engine (required)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    require_offline(args)
    result = run_offline(stack_options.stack_path(args))
    print(json.dumps(result.outputs["ansible_inventory"], indent=2, sort_keys=True))
    return 0
