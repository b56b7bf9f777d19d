"""`ecoma-infra deploy`: `up` a stack from its file, keeping the burst pools as they run now."""

from __future__ import annotations

import argparse
import sys

from ecoma_infra.burst.plan import carried_burst_state
from ecoma_infra.burst.run import confirm
from ecoma_infra.cli import burst_session
from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.config_paths import apply_paths
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import split_namespace

_EPILOG = """\
why: burst pool sizes and leases change at run time (`burst`, `reap`, `autoscale`), while the stack
file in git holds the pools' definitions. A plain `pulumi up` of the committed file would set every
pool back to its committed count and destroy running burst nodes without draining them. `deploy`
reads the running sizes and leases from the stack's `burst` output first and carries them into the
config, so a deploy never adds or removes a burst node.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="pulumi up of a stack, burst pools kept at their running size",
        description="Update a stack from its file through the Pulumi Automation API.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sess = burst_session.session(args)
    stack = sess.seams.stack
    telemetry = sess.telemetry("deploy")
    success = False
    try:
        with telemetry.phase("plan"):
            config = stack.config()
            values, removals = carried_burst_state(config, stack.outputs())
            merged, _ = split_namespace(apply_paths(config, values, removals))
            try:
                parsed = parse_stack_config(merged, f"Pulumi.{args.stack}.yaml")
            except ConfigError as error:
                raise EcomaError(
                    f"{error}\nthe stack file with the burst pools as they run now is not valid: "
                    "scale the pools down first (`ecoma-infra burst --count ...`), then deploy"
                ) from None
        for path, value in values.items():
            print(f"keeping the running burst state: {path} = {value}")
        for path in removals:
            print(f"dropping the lease of a node that no longer runs: {path}")
        pools = ", ".join(f"{p} {pool.count}" for p, pool in parsed.burst.pools().items())
        print(f"stack {args.stack}: burst pools stay at {pools or 'none'}")
        confirm(f"pulumi up of stack {args.stack}", yes=args.yes, out=sys.stdout)
        with telemetry.phase("up"):
            stack.set_config(values)
            stack.remove_config(removals)
            summary = stack.up(lambda line: print(f"  | {line.rstrip()}"))
        changed = ", ".join(f"{op} {n}" for op, n in sorted(summary.changes.items()))
        print(f"up: {changed}")
        telemetry.pools(parsed)
        success = True
    finally:
        telemetry.finish(success=success)
    return 0
