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
from typing import Any

from ecoma_infra.burst.plan import ScalePlan, StackRef
from ecoma_infra.burst.run import Outcome, Runner, Seams, Timeouts, load_ref
from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.telemetry import Telemetry
from ecoma_infra.paths import ansible_dir, project_root
from ecoma_infra.platforms.pulumi_automation import AutomationStack
from ecoma_infra.platforms.pulumi_simulated import rehearsal_state_file
from ecoma_infra.platforms.seams import Cluster, Tailnet
from ecoma_infra.platforms.simulated import SimulatedWorld
from ecoma_infra.stack.load import stack_file


def add_options(parser: argparse.ArgumentParser, *, confirm: bool = True) -> None:
    parser.add_argument("--stack", metavar="NAME", required=True, help="the Pulumi stack")
    if confirm:
        parser.add_argument("--yes", action="store_true", help="apply without asking")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="rehearse: Pulumi, Kubernetes and Tailscale simulated, the program run under mocks "
        "(state kept in .rehearsal/<stack>/state.json; `--offline --reset` starts over)",
    )
    parser.add_argument("--reset", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--kubeconfig", metavar="FILE", type=Path, help="default: $KUBECONFIG or ~/.kube/config"
    )
    parser.add_argument(
        "--drain-timeout", metavar="SECONDS", type=float, default=600.0, help="per node (600)"
    )
    parser.add_argument(
        "--ready-timeout",
        metavar="SECONDS",
        type=float,
        default=900.0,
        help="for new nodes to be Ready (900)",
    )
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

    def telemetry(self, operation: str) -> Telemetry:
        return Telemetry.from_environment(self.args.stack, operation, self.args.metrics_file)

    def runner(self, telemetry: Telemetry) -> Runner:
        timeouts = Timeouts(drain=self.args.drain_timeout, ready=self.args.ready_timeout)
        if self.world is not None:
            timeouts = Timeouts(drain=timeouts.drain, ready=timeouts.ready, poll=0.0)
        return Runner(self.seams, telemetry, sys.stdout, timeouts=timeouts, now=self.now)


def session(args: argparse.Namespace) -> Session:
    if args.offline:
        return _offline_session(args)
    stack = AutomationStack(args.stack, project_root())
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

    seams = Seams(stack, cluster, tailnet, _run_playbook)
    return Session(args, seams, None, lambda: datetime.now(UTC))


def _run_playbook(inventory: dict[str, Any], secrets: dict[str, str], limit: str) -> bool:
    from ecoma_infra.configure.run import run_playbook  # noqa: PLC0415

    result = run_playbook(
        inventory,
        ansible_dir() / "playbook.yaml",
        secrets=secrets,
        limit=limit,
        output="progress",
        stream=sys.stdout,
    )
    return result.success


def _offline_session(args: argparse.Namespace) -> Session:
    state = rehearsal_state_file(project_root(), args.stack)
    if getattr(args, "reset", False) and state.exists():
        state.unlink()
    world = SimulatedWorld.from_file(stack_file(args.stack, project_root()), state_file=state)
    # Nodes the rehearsal's `up` created earlier are in the cluster and the tailnet again.
    for provider, pool in load_ref(world.stack).config.burst.pools().items():
        for name in pool.node_names(provider):
            world.cluster.join(name, provider)
            world.tailnet.add(name)
    print(
        f"offline rehearsal of stack {args.stack}: Pulumi, Kubernetes and Tailscale are "
        f"simulated; the program runs under mocks; state in {state}"
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


def report(outcomes: list[Outcome], telemetry: Telemetry) -> None:
    for outcome in outcomes:
        plan = outcome.plan
        line = f"pool {plan.provider}: {plan.count_before} -> {plan.count_after} nodes"
        if outcome.added:
            ready = ", ".join(f"{n} Ready in {s:.1f} s" for n, s in outcome.ready.items())
            line += f"; added {', '.join(outcome.added)} ({ready})"
        if outcome.removed:
            line += f"; drained and removed {', '.join(outcome.removed)}"
        line += f"; {plan.hourly_before:.4f} -> {plan.hourly_after:.4f} USD/h"
        print(line)
    if telemetry.phases:
        print("phases: " + ", ".join(f"{p} {s:.1f} s" for p, s in telemetry.phases.items()))
