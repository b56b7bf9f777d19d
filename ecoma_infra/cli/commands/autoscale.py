"""`ecoma-infra autoscale`: read the load from Prometheus, decide, and burst or scale down."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ecoma_infra.burst.autoscale import decide
from ecoma_infra.burst.plan import ScalePlan, plan_count
from ecoma_infra.burst.run import load_ref
from ecoma_infra.cli import burst_session, conventions
from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.prometheus import PrometheusClient
from ecoma_infra.stack.model import CloudProvider

_EPILOG = f"""\
the decision (ecoma:burst.autoscale in the stack file): scale up when any of cpu, queue, latency is
above its scale_up_above; scale down only when all three are below their scale_down_below (a
missing reading never scales down); hold inside that band and within the cooldown after any change.
Nodes are added in the preference order of the providers, within each pool's max and the budget,
and removed in the reverse order, through the same path as `burst` (drain before destroy).
Run it on a schedule (every few minutes); each run makes at most one decision.

exit codes: 0 done (--dry-run: the decision changes nothing); 1 failed (Prometheus unreachable, a
failed burst); 2 bad usage; {conventions.EXIT_CHANGES_PENDING} --dry-run when the decision would
change a pool.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "autoscale",
        help="decide the burst size from Prometheus metrics and apply it",
        description="One metrics-driven burst decision for a stack.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--prometheus",
        metavar="URL",
        required=True,
        type=conventions.http_url,
        help="e.g. http://prometheus:9090",
    )
    conventions.add_dry_run_option(parser, "decide and show")
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sess = burst_session.session(args)
    ref = sess.ref()
    telemetry = sess.telemetry("autoscale")
    settings = ref.config.burst.autoscale
    if settings is None:
        raise EcomaError(
            f"{ref.source}: ecoma:burst.autoscale is not set: add it (see `ecoma-infra schema`)"
        )
    try:
        with telemetry.phase("plan"):
            readings = PrometheusClient(args.prometheus).read(settings)
            decision = decide(ref.config.burst, readings, sess.now())
    except EcomaError:
        telemetry.finish(success=False)
        raise
    for signal, value in readings.items():
        shown = "no reading" if value is None else f"{value:g}"
        sess.say(f"{signal}: {shown}")
        if value is not None:
            telemetry.set("ecoma_autoscale_signal_value", value, signal=signal)
    telemetry.set("ecoma_autoscale_load_high", 1 if decision.load_high else 0)
    telemetry.clear_matching("ecoma_autoscale_decision")
    telemetry.set("ecoma_autoscale_decision", 1, action=decision.action, reason=decision.reason)
    for provider, count in decision.desired.items():
        telemetry.set("ecoma_autoscale_desired_nodes", count, provider=provider)
    telemetry.event(
        "decision", action=decision.action, reason=decision.reason, desired=decision.desired
    )
    sess.say(f"decision: {decision.action}: {decision.reason}")
    pools = ref.config.burst.pools()
    changes = {p: n for p, n in decision.desired.items() if p in pools and pools[p].count != n}
    document: dict[str, object] = {
        "stack": args.stack,
        "readings": readings,
        "decision": {
            "action": decision.action,
            "reason": decision.reason,
            "desired": decision.desired,
        },
        "changes": changes if decision.action != "hold" else {},
        "applied": False,
    }
    if decision.action == "hold" or not changes or args.dry_run:
        telemetry.pools(ref.config)
        telemetry.finish(success=True)
        if args.json:
            conventions.emit_json(document)
        pending = args.dry_run and decision.action != "hold" and bool(changes)
        return conventions.EXIT_CHANGES_PENDING if pending else conventions.EXIT_OK
    sess.confirm(f"apply to stack {args.stack}")

    def planner(provider: CloudProvider, count: int) -> Callable[[], ScalePlan]:
        def plan() -> ScalePlan:
            made = plan_count(load_ref(sess.seams.stack), provider, count, sess.now())
            for line in made.describe():
                sess.say(line)
            return made

        return plan

    steps: list[ScalePlan | Callable[[], ScalePlan]] = [
        planner(provider, count) for provider, count in changes.items()
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
