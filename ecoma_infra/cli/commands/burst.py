"""`ecoma-infra burst`: set a burst pool's size; a smaller size drains before it destroys."""

from __future__ import annotations

import argparse
import sys

from ecoma_infra.burst.plan import PlanRefusedError, plan_count
from ecoma_infra.burst.run import confirm
from ecoma_infra.cli import burst_session
from ecoma_infra.stack.model import CLOUD_PROVIDERS

_EPILOG = """\
growing:   sets the pool's count and the new nodes' leases in the stack config (structured, through
           the Pulumi Automation API), runs `up`, configures only the new nodes (--limit) and
           waits until each is Ready with its provider label.
shrinking: picks the nodes (past their lease first, oldest lease first; then the newest), cordons
           and drains each through the Kubernetes API (PodDisruptionBudgets honoured), deletes the
           Node objects, and only then runs `up` with the smaller count; then deletes their
           Tailscale devices. A failed drain uncordons, destroys nothing and exits 1.
refused before anything changes: a count above the pool's max, or a cost above the budget.

exit codes: 0 done; 1 refused or failed (the message says what state things are in); 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "burst",
        help="grow or shrink a cloud burst pool (drains before it destroys)",
        description="Set the number of burst workers of one cloud pool of a stack.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--provider", required=True, choices=CLOUD_PROVIDERS)
    parser.add_argument("--count", required=True, type=_count, metavar="N", help="nodes wanted")
    parser.add_argument(
        "--ttl", metavar="DURATION", help="lease of the new nodes (e.g. 4h; default: pool's ttl)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of nodes (0 or more)")
    return int(text)


def run(args: argparse.Namespace) -> int:
    sess = burst_session.session(args)
    ref = sess.ref()
    telemetry = sess.telemetry("burst")
    try:
        with telemetry.phase("plan", provider=args.provider, count=args.count):
            plan = plan_count(ref, args.provider, args.count, sess.now(), ttl=args.ttl)
    except PlanRefusedError:
        telemetry.pools(ref.config)
        telemetry.finish(success=False)
        raise
    for line in plan.describe():
        print(line)
    if args.dry_run or not plan.changes:
        if not plan.changes:
            print("nothing to change")
        return 0
    confirm(f"apply to stack {args.stack}", yes=args.yes, out=sys.stdout)
    if plan.remove:
        telemetry.operation = "scale_down"
    outcomes, failure = burst_session.run_plans(sess, [plan], telemetry)
    burst_session.report(outcomes, telemetry)
    if failure is not None:
        raise failure
    return 0
