"""`ecoma-infra validate`: check a stack file against every rule before any resource exists."""

from __future__ import annotations

import argparse

from ecoma_infra.cli import stack_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a stack config (exit 0 valid, 1 invalid, 2 bad usage)",
        description=(
            "Check a stack file's ecoma:* config: types, unknown fields, and every rule of the "
            "design (roles, disks and tiers, address plan, burst pools, Tailscale). All problems "
            "are listed at once, each with the file, the node or section, the field and the fix."
        ),
    )
    stack_options.add_stack_options(parser)
    parser.add_argument(
        "--require-secrets",
        action="store_true",
        help="also fail when a secret that `pulumi up` needs is not set (for CI before `up`)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = stack_options.load(args, require_secrets=args.require_secrets)
    for line in stack_options.summary(loaded):
        print(line)
    return 0
