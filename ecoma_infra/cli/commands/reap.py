"""`ecoma-infra reap`: scale away the burst nodes past their lease, drain first."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ecoma_infra.burst.plan import ScalePlan, expired, plan_removal
from ecoma_infra.cli import burst_session, conventions
from ecoma_infra.stack.model import CloudProvider


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "reap",
        help="remove burst nodes past their lease (drain, then destroy)",
        description=(
            "Find the burst nodes whose lease (the ecoma-expires-at tag, kept in the stack "
            "config) has passed and remove them the same way `burst` scales down: cordon, "
            "drain, delete the Node, then `up`. Exit 0 when nothing is left expired; with "
            f"--dry-run, exit {conventions.EXIT_CHANGES_PENDING} when nodes are expired."
        ),
    )
    conventions.add_dry_run_option(parser, "list them")
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sess = burst_session.session(args)
    ref = sess.ref()
    now = sess.now()
    telemetry = sess.telemetry("reap")
    with telemetry.phase("plan"):
        found = expired(ref.config, now)
    document: dict[str, object] = {
        "stack": args.stack,
        "expired": {
            provider: [{"name": lease.name, "expires_at": lease.expires_at} for lease in leases]
            for provider, leases in found.items()
        },
        "applied": False,
    }
    if not found:
        sess.say(f"stack {args.stack}: no burst node is past its lease")
        telemetry.pools(ref.config)
        telemetry.finish(success=True)
        if args.json:
            conventions.emit_json(document)
        return conventions.EXIT_OK
    for provider, leases in found.items():
        for lease in leases:
            sess.say(
                f"{lease.name} ({provider}): lease ended {lease.expires_at:%Y-%m-%dT%H:%M:%SZ}"
            )
    if args.dry_run:
        telemetry.pools(ref.config, {p: len(leases) for p, leases in found.items()})
        telemetry.finish(success=True)
        if args.json:
            conventions.emit_json(document)
        return conventions.EXIT_CHANGES_PENDING
    sess.confirm(f"remove them from stack {args.stack}")

    def planner(provider: CloudProvider, names: list[str]) -> Callable[[], ScalePlan]:
        # Planned when its turn comes, against the stack as the pool before it left it.
        def plan() -> ScalePlan:
            made = plan_removal(sess.ref(), provider, names, now)
            for line in made.describe():
                sess.say(line)
            return made

        return plan

    steps: list[ScalePlan | Callable[[], ScalePlan]] = [
        planner(provider, [lease.name for lease in leases]) for provider, leases in found.items()
    ]
    outcomes, failure = burst_session.run_plans(sess, steps, telemetry)
    burst_session.report(sess, outcomes, telemetry)
    if args.json:
        document["applied"] = failure is None
        document["outcomes"] = [burst_session.outcome_document(o) for o in outcomes]
        document["error"] = str(failure) if failure is not None else None
        conventions.emit_json(document)
    if failure is not None:
        raise failure
    return conventions.EXIT_OK
