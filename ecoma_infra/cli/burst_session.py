"""What `burst`, `reap`, `autoscale`, `drill` and `deploy` share on the command line: the stack
and its seams (real, or simulated with `--offline`), the timeouts, the telemetry and the report."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ecoma_infra.burst.plan import NodeLease, ScalePlan, StackRef
from ecoma_infra.burst.run import Configure, Outcome, Runner, Seams, Timeouts, load_ref
from ecoma_infra.cli import conventions, stack_options
from ecoma_infra.cli.events import event_log
from ecoma_infra.cli.heartbeat import Heartbeat
from ecoma_infra.cli.prompt import confirm
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.ops.telemetry import Telemetry
from ecoma_infra.paths import ansible_dir, project_root
from ecoma_infra.platforms.pulumi_automation import AutomationStack
from ecoma_infra.platforms.pulumi_simulated import rehearsal_state_file
from ecoma_infra.platforms.seams import Cluster, Tailnet
from ecoma_infra.platforms.simulated import SimulatedWorld
from ecoma_infra.stack.load import stack_file


def add_options(parser: argparse.ArgumentParser) -> None:
    stack_options.add_stack_option(parser)
    conventions.add_yes_option(parser)
    conventions.add_json_option(parser, "the plan and the outcome as one JSON document")
    conventions.add_log_format_option(parser)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="rehearse: Pulumi, Kubernetes and Tailscale simulated, the program run under mocks "
        "(state kept in .rehearsal/<stack>/state.json; `--offline --reset` starts over)",
    )
    parser.add_argument("--reset", action="store_true", help=argparse.SUPPRESS)
    conventions.add_cluster_options(parser, ready_help="for new nodes to be Ready (900)")
    parser.add_argument(
        "--metrics-file",
        metavar="FILE",
        type=Path,
        help="node_exporter textfile for the run's metrics (default: $ECOMA_METRICS_FILE; "
        "$ECOMA_PUSHGATEWAY pushes them too)",
    )


@dataclass
class Session:
    """One command's stack, seams and clocks."""

    args: argparse.Namespace
    seams: Seams
    world: SimulatedWorld | None
    now: Callable[[], datetime]

    def ref(self) -> StackRef:
        return load_ref(self.seams.stack)

    @property
    def out(self) -> TextIO:
        """Where the human progress goes (stderr when stdout carries --json)."""
        return conventions.human_stream(self.args)

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def telemetry(self, operation: str) -> Telemetry:
        return Telemetry.from_environment(
            self.args.stack, operation, self.args.metrics_file, log=event_log(self.args)
        )

    def runner(self, telemetry: Telemetry) -> Runner:
        timeouts = Timeouts(drain=self.args.drain_timeout, ready=self.args.ready_timeout)
        if self.world is not None:
            timeouts = Timeouts(drain=timeouts.drain, ready=timeouts.ready, poll=0.0)
        return Runner(
            self.seams,
            telemetry,
            self.out,
            timeouts=timeouts,
            now=self.now,
            waits=Heartbeat(self.out),
        )

    def confirm(self, question: str) -> None:
        confirm(question, yes=conventions.skip_confirmations(self.args), out=self.out)


def session(args: argparse.Namespace, *, config_from_file: bool = False) -> Session:
    """The command's stack and seams. `config_from_file`: the rehearsal takes the stack file's
    config as it is now (what `deploy` applies), not the config its last run left."""
    if args.offline:
        return _offline_session(args, config_from_file=config_from_file)
    stack = AutomationStack(args.pulumi_stack or args.stack, project_root())
    kubeconfig: Path | None = args.kubeconfig

    def cluster() -> Cluster:
        from ecoma_infra.platforms.kubernetes import KubernetesCluster  # noqa: PLC0415  (kubernetes is slow)

        return KubernetesCluster.from_kubeconfig(kubeconfig)

    def tailnet() -> Tailnet | None:
        from ecoma_infra.platforms.tailscale import TailscaleApi  # noqa: PLC0415

        settings = load_ref(stack).config.tailscale
        try:
            return TailscaleApi.from_environment(settings, os.environ)
        except EcomaError as error:
            print(f"ecoma-infra: note: {error}", file=sys.stderr)
            return None

    seams = Seams(stack, cluster, tailnet, _playbook_runner(conventions.human_stream(args)))
    return Session(args, seams, None, lambda: datetime.now(UTC))


def _playbook_runner(stream: TextIO) -> Configure:
    def run(inventory: dict[str, Any], secrets: dict[str, str], limit: str) -> bool:
        from ecoma_infra.configure.run import run_playbook  # noqa: PLC0415

        result = run_playbook(
            inventory,
            ansible_dir() / "playbook.yaml",
            secrets=secrets,
            limit=limit,
            output="progress",
            stream=stream,
        )
        return result.success

    return run


def _offline_session(args: argparse.Namespace, *, config_from_file: bool = False) -> Session:
    path = stack_file(args.stack, project_root())
    if not path.is_file():
        raise UsageError(
            f"{path}: no such stack file. Fix: a rehearsal runs a stack file of this project "
            "(e.g. --stack staging)"
        )
    state = rehearsal_state_file(project_root(), args.stack)
    if getattr(args, "reset", False) and (state.exists() or state.is_symlink()):
        if state.is_dir() and not state.is_symlink():
            raise UsageError(
                f"--reset: {state} is a directory, not the rehearsal's state file: move it away"
            )
        state.unlink()
    world = SimulatedWorld.from_file(path, state_file=state)
    if config_from_file:
        world.stack.read_file_config(path)
    # Nodes the rehearsal's `up` created earlier are in the cluster and the tailnet again.
    for provider, pool in load_ref(world.stack).config.burst.pools().items():
        for name in pool.node_names(provider):
            world.cluster.join(name, provider)
            world.tailnet.add(name)
    conventions.human_stream(args).write(
        f"offline rehearsal of stack {args.stack}: Pulumi, Kubernetes and Tailscale are "
        f"simulated; the program runs under mocks; state in {state}\n"
    )
    seams = Seams(world.stack, lambda: world.cluster, lambda: world.tailnet, world.configure)
    return Session(args, seams, world, lambda: datetime.now(UTC))


def run_plans(
    sess: Session, plans: Sequence[ScalePlan | Callable[[], ScalePlan]], telemetry: Telemetry
) -> tuple[list[Outcome], EcomaError | None]:
    """Apply plans in order (a callable is planned only when its turn comes, against the
    stack as the plans before it left it); stop at the first failure. Always writes the
    telemetry."""
    runner = sess.runner(telemetry)
    outcomes: list[Outcome] = []
    failure: EcomaError | None = None
    try:
        for item in plans:
            plan = item() if callable(item) else item
            outcomes.append(runner.apply(plan))
    except EcomaError as error:
        failure = error
    finally:
        with contextlib.suppress(EcomaError):  # the config was valid a moment ago
            telemetry.pools(sess.ref().config)
        telemetry.finish(success=failure is None)
    return outcomes, failure


def report(sess: Session, outcomes: list[Outcome], telemetry: Telemetry) -> None:
    """What the runs did, in words (on the human stream)."""
    say = sess.say
    for outcome in outcomes:
        plan = outcome.plan
        line = f"pool {plan.provider}: {plan.count_before} -> {plan.count_after} nodes"
        if outcome.added:
            ready = ", ".join(f"{n} Ready in {s:.1f} s" for n, s in outcome.ready.items())
            line += f"; added {', '.join(outcome.added)} ({ready})"
        if outcome.removed:
            line += f"; drained and removed {', '.join(outcome.removed)}"
        line += f"; {plan.hourly_before:.4f} -> {plan.hourly_after:.4f} USD/h"
        say(line)
    if telemetry.phases:
        say("phases: " + ", ".join(f"{p} {s:.1f} s" for p, s in telemetry.phases.items()))


def plan_document(plan: ScalePlan) -> dict[str, Any]:
    """A plan as `--json` shows it."""

    def lease(item: NodeLease) -> dict[str, Any]:
        return {
            "name": item.name,
            "launched_at": item.launched_at,
            "expires_at": item.expires_at,
        }

    return {
        "provider": plan.provider,
        "count_before": plan.count_before,
        "count_after": plan.count_after,
        "max": plan.max,
        "add": [lease(item) for item in plan.add],
        "remove": [lease(item) for item in plan.remove],
        "hourly_usd_before": plan.hourly_before,
        "hourly_usd_after": plan.hourly_after,
        "budget_usd_per_hour": plan.budget,
        "notes": list(plan.notes),
    }


def outcome_document(outcome: Outcome) -> dict[str, Any]:
    """What applying a plan did, as `--json` shows it."""
    return {
        "provider": outcome.plan.provider,
        "count_before": outcome.plan.count_before,
        "count_after": outcome.plan.count_after,
        "added": list(outcome.added),
        "removed": list(outcome.removed),
        "ready_seconds": dict(outcome.ready),
        "changes": dict(outcome.changes),
    }
