"""`ecoma-infra validate`: check a stack file against every rule before any resource exists."""

from __future__ import annotations

import argparse
from collections import Counter

from ecoma_infra.cli import conventions, stack_options
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.model import ROLES


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
    conventions.add_json_option(
        parser, '{"valid": ..., "problems": [{"where", "message", "fix"}], ...}'
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        loaded = stack_options.load(args, require_secrets=args.require_secrets)
    except ConfigError as error:
        if not args.json:
            raise
        conventions.emit_json(
            {
                "file": error.source,
                "valid": False,
                "problems": [
                    {"where": issue.where, "message": issue.message, "fix": issue.fix}
                    for issue in error.issues
                ],
            }
        )
        return error.exit_code
    config = loaded.config
    if args.json:
        roles = Counter(node.role for node in config.nodes)
        conventions.emit_json(
            {
                "file": loaded.source,
                "valid": True,
                "problems": [],
                "nodes": {role: roles[role] for role in ROLES if roles[role]},
                "burst_pools": {
                    name: {"count": pool.count, "max": pool.max}
                    for name, pool in config.burst.pools().items()
                },
                "notes": list(loaded.notices),
            }
        )
        return conventions.EXIT_OK
    for line in stack_options.summary(loaded):
        print(line)
    return conventions.EXIT_OK
