"""`ecoma-infra reap`: scale away the burst nodes past their lease, drain first."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ecoma_infra.burst.plan import ScalePlan, expired, plan_removal
from ecoma_infra.burst.run import confirm
from ecoma_infra.cli import burst_session
from ecoma_infra.stack.model import CloudProvider


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reap",
        help="remove burst nodes past their lease (drain, then destroy)",
        description=(
            "Find the burst nodes whose lease (the ecoma-expires-at tag, kept in the stack "
            "config) has passed and remove them the same way `burst` scales down: cordon, "
            "drain, delete the Node, then `up`. Exit 0 when nothing is left expired."
        ),
    )
    parser.add_argument("--dry-run", action="store_true", help="list them, change nothing")
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sess = burst_session.session(args)
    ref = sess.ref()
    now = sess.now()
    telemetry = sess.telemetry("reap")
    with telemetry.phase("plan"):
        found = expired(ref.config, now)
    if not found:
        print(f"stack {args.stack}: no burst node is past its lease")
        telemetry.pools(ref.config)
        telemetry.finish(success=True)
        return 0
    for provider, leases in found.items():
        for lease in leases:
            print(f"{lease.name} ({provider}): lease ended {lease.expires_at:%Y-%m-%dT%H:%M:%SZ}")
    if args.dry_run:
        telemetry.pools(ref.config, {p: len(leases) for p, leases in found.items()})
        telemetry.finish(success=True)
        return 0
    confirm(f"remove them from stack {args.stack}", yes=args.yes, out=sys.stdout)

    def planner(provider: CloudProvider, names: list[str]) -> Callable[[], ScalePlan]:
        # Planned when its turn comes, against the stack as the pool before it left it.
        def plan() -> ScalePlan:
            made = plan_removal(sess.ref(), provider, names, now)
            for line in made.describe():
                print(line)
            return made

        return plan

    steps: list[ScalePlan | Callable[[], ScalePlan]] = [
        planner(provider, [lease.name for lease in leases]) for provider, leases in found.items()
    ]
    outcomes, failure = burst_session.run_plans(sess, steps, telemetry)
    burst_session.report(outcomes, telemetry)
    if failure is not None:
        raise failure
    return 0
