"""`ecoma-infra drill`: rehearse the whole burst path on one node, then remove it."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ecoma_infra.burst.plan import plan_count, plan_removal
from ecoma_infra.burst.run import PROVIDER_LABEL, BurstError, load_ref
from ecoma_infra.cli import burst_session, conventions
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.stack.model import CLOUD_PROVIDERS

_EPILOG = """\
steps, each timed: burst one node (plan, up, configure only it, wait for Ready), verify it (Ready,
labelled topology.ecoma.io/provider=<provider>, schedulable), scale it away (cordon, drain, delete
the Node, up, delete its Tailscale device), verify it is gone (no Node, no device, pool back to its
size). A failure after the node was added still removes it (drain first) and says whether that
worked. It asks first (-y/--yes or PULUMI_SKIP_CONFIRMATIONS=true skip the question), and on a
production stack (named prod or production, e.g. prod, org/ecoma-infra/prod, prod-eu) it refuses
unless --allow-prod is given as well: a drill adds and destroys a real node, which belongs on
staging. Exit 0 when every step passed, 1 otherwise, 2 bad usage or refused.
"""

#: A stack whose name says production: a drill there needs --allow-prod.
_PRODUCTION = re.compile(r"(^|[-_.])(prod|production)($|[-_.])")


@dataclass
class Step:
    name: str
    seconds: float
    ok: bool
    detail: str


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drill",
        help="burst one node, check it, drain and destroy it; report each phase",
        description=(
            "The regular test of the bursting path, end to end, on one real node (run it on "
            "staging, e.g. weekly: the drill workflow does)."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--provider", required=True, choices=CLOUD_PROVIDERS)
    parser.add_argument(
        "--ttl",
        metavar="DURATION",
        type=conventions.duration,
        default="1h",
        help="lease of the drill node (1h)",
    )
    parser.add_argument(
        "--allow-prod",
        action="store_true",
        help="drill a production stack too (refused without it, whatever --yes says)",
    )
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def is_production(stack: str) -> bool:
    return bool(_PRODUCTION.search(stack.lower()))


def run(args: argparse.Namespace) -> int:
    if is_production(args.stack) and not args.allow_prod:
        raise UsageError(
            f"stack {args.stack} is production: a drill adds and destroys a real burst node "
            "there. Drill staging instead, or add --allow-prod if you mean it"
        )
    drill = Drill(args)
    drill.sess.confirm(
        f"drill stack {args.stack}: add one {args.provider} burst node, check it, then drain "
        "and destroy it?"
    )
    return drill.run()


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.provider = args.provider
        self.sess = burst_session.session(args)
        self.telemetry = self.sess.telemetry("drill")
        self.runner = self.sess.runner(self.telemetry)
        self.steps: list[Step] = []
        self.node: str | None = None

    def run(self) -> int:
        ok = self.step("burst", self.burst) and self.step("verify", self.verify_up)
        if self.node is not None:
            # Even after a failure the drill node goes again, the same safe way.
            removed = self.step("teardown", self.teardown) and self.step(
                "verify-gone", self.verify_gone
            )
            ok = ok and removed
        self.telemetry.finish(success=ok)
        width = max(len(s.name) for s in self.steps)
        say = self.sess.say
        say(f"drill of stack {self.args.stack} on {self.provider}:")
        for s in self.steps:
            mark = "ok  " if s.ok else "FAIL"
            say(f"  {mark} {s.name:<{width}}  {s.seconds:7.1f} s  {s.detail}")
        total = sum(s.seconds for s in self.steps)
        say(f"drill {'passed' if ok else 'FAILED'} in {total:.1f} s")
        if self.args.json:
            conventions.emit_json(
                {
                    "stack": self.args.stack,
                    "provider": self.provider,
                    "node": self.node,
                    "passed": ok,
                    "seconds": round(total, 1),
                    "steps": [
                        {
                            "name": s.name,
                            "ok": s.ok,
                            "seconds": round(s.seconds, 1),
                            "detail": s.detail,
                        }
                        for s in self.steps
                    ],
                }
            )
        return conventions.EXIT_OK if ok else conventions.EXIT_FAILED

    def step(self, name: str, action: Callable[[], str]) -> bool:
        start = time.monotonic()
        try:
            detail = action()
        except EcomaError as error:
            self.steps.append(Step(name, time.monotonic() - start, ok=False, detail=str(error)))
            return False
        self.steps.append(Step(name, time.monotonic() - start, ok=True, detail=detail))
        return True

    def _node(self) -> str:
        if self.node is None:  # pragma: no cover  (steps run in order)
            raise BurstError("no drill node")
        return self.node

    def burst(self) -> str:
        ref = load_ref(self.sess.seams.stack)
        pool = ref.config.burst.pools().get(self.provider)
        count = pool.count if pool else 0
        plan = plan_count(ref, self.provider, count + 1, self.sess.now(), ttl=self.args.ttl)
        self.node = plan.add[0].name
        self.runner.apply(plan)
        return f"{self.node} added, configured and Ready"

    def verify_up(self) -> str:
        node = self._node()
        status = self.sess.seams.cluster().node(node)
        if status is None or not status.ready:
            raise BurstError(f"{node} is not Ready")
        if status.labels.get(PROVIDER_LABEL) != self.provider:
            raise BurstError(f"{node} lacks the label {PROVIDER_LABEL}={self.provider}")
        if status.unschedulable:
            raise BurstError(f"{node} is cordoned")
        return f"{node} Ready, {PROVIDER_LABEL}={self.provider}, schedulable"

    def teardown(self) -> str:
        node = self._node()
        ref = load_ref(self.sess.seams.stack)
        self.runner.apply(plan_removal(ref, self.provider, [node], self.sess.now()))
        return f"{node} drained and destroyed"

    def verify_gone(self) -> str:
        node = self._node()
        if self.sess.seams.cluster().node(node) is not None:
            raise BurstError(f"the Node object {node} is still in the cluster")
        tailnet = self.sess.seams.tailnet()
        if tailnet is not None and any(d.hostname == node for d in tailnet.devices()):
            raise BurstError(f"the Tailscale device of {node} is still in the tailnet")
        pool = load_ref(self.sess.seams.stack).config.burst.pools()[self.provider]
        if node in pool.node_names(self.provider):
            raise BurstError(f"{node} is still in pool {self.provider}")
        return f"{node} gone from the cluster, the tailnet and the stack"
