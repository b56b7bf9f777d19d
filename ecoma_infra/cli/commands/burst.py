"""`ecoma-infra burst`: set a burst pool's size; a smaller size drains before it destroys."""

from __future__ import annotations

import argparse

from ecoma_infra.burst.plan import PlanRefusedError, plan_count
from ecoma_infra.cli import burst_session, conventions
from ecoma_infra.stack.model import CLOUD_PROVIDERS

_EPILOG = f"""\
growing:   sets the pool's count and the new nodes' leases in the stack config (structured, through
           the Pulumi Automation API), runs `up`, configures only the new nodes (--limit) and
           waits until each is Ready with its provider label.
shrinking: picks the nodes (past their lease first, oldest lease first; then the newest), cordons
           and drains each through the Kubernetes API (PodDisruptionBudgets honoured), deletes the
           Node objects, and only then runs `up` with the smaller count; then deletes their
           Tailscale devices. A failed drain uncordons, destroys nothing and exits 1.
refused before anything changes: a count above the pool's max, or a cost above the budget.

exit codes: 0 done (--dry-run: nothing to change); 1 refused or failed (the message says what
state things are in); 2 bad usage; {conventions.EXIT_CHANGES_PENDING} --dry-run with changes
pending.
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
        "--ttl",
        metavar="DURATION",
        type=conventions.duration,
        help="lease of the new nodes (e.g. 4h; default: the pool's ttl)",
    )
    conventions.add_dry_run_option(parser, "show the plan")
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9:
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
        sess.say(line)
    document = {"stack": args.stack, "plan": burst_session.plan_document(plan), "applied": False}
    if args.dry_run or not plan.changes:
        if not plan.changes:
            sess.say("nothing to change")
        if args.json:
            conventions.emit_json(document)
        pending = args.dry_run and plan.changes
        return conventions.EXIT_CHANGES_PENDING if pending else conventions.EXIT_OK
    sess.confirm(f"apply to stack {args.stack}")
    if plan.remove:
        telemetry.operation = "scale_down"
    outcomes, failure = burst_session.run_plans(sess, [plan], telemetry)
    burst_session.report(sess, outcomes, telemetry)
    if args.json:
        document["applied"] = failure is None
        document["outcomes"] = [burst_session.outcome_document(o) for o in outcomes]
        document["error"] = str(failure) if failure is not None else None
        conventions.emit_json(document)
    if failure is not None:
        raise failure
    return conventions.EXIT_OK
