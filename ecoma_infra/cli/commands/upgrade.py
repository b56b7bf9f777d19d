"""`ecoma-infra upgrade`: a rolling k3s upgrade, servers one at a time, then agents drain first."""

from __future__ import annotations

import argparse
import sys

from ecoma_infra.cli import conventions, day2_session
from ecoma_infra.cli.prompt import confirm
from ecoma_infra.day2.upgrade import Upgrader, plan_upgrade
from ecoma_infra.day2.versions import K3sVersion
from ecoma_infra.errors import UsageError
from ecoma_infra.paths import project_root
from ecoma_infra.platforms.pulumi_automation import AutomationStack
from ecoma_infra.stack.model import NAMESPACE

_EPILOG = f"""\
refused before anything changes: a downgrade, a skipped minor version (v1.32 -> v1.34), a node
missing from the cluster or not Ready, etcd not healthy.

servers, one at a time: cordon, ansible/upgrade.yaml on it (the new binary, verified against its
sha256, then a restart), wait until its Node is Ready on the new version, wait until etcd is
healthy, uncordon. agents, in batches of --batch-size: cordon and drain each through the Kubernetes
API (PodDisruptionBudgets honoured, the drain of a burst scale-down), the playbook on the batch,
wait until each is Ready on the new version, uncordon.

The first failure stops: every node after it keeps its old version; exit 1 says what was
upgraded, what failed and how. Run the same command again to resume (nodes already on the version
are skipped). With --stack, the end sets {NAMESPACE}:k3s.version in the stack's config: commit the
stack file, or the next configure refuses the nodes' newer version.

exit codes: 0 done (or nothing to do); 1 refused or failed; 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "upgrade",
        help="rolling k3s upgrade: servers one at a time, then agents, drain first",
        description="Upgrade k3s on every node of a stack, one minor version at a time.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    day2_session.add_inventory_options(parser)
    parser.add_argument(
        "--k3s-version", required=True, metavar="VERSION", help="the release, e.g. v1.33.1+k3s1"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="agents upgraded at once (1)"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    day2_session.add_cluster_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    target = K3sVersion.parse(args.k3s_version, "--k3s-version")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: give 1 or more")
    inventory, _secrets = day2_session.inventory_and_secrets(args)
    cluster = day2_session.cluster(args)
    plan = plan_upgrade(inventory, cluster, target, batch_size=args.batch_size)
    for line in plan.describe():
        print(line)
    if args.dry_run:
        return 0
    if plan.nodes:
        confirm(
            f"upgrade {len(plan.nodes)} nodes to {target}",
            yes=conventions.skip_confirmations(args),
            out=sys.stdout,
        )
        upgrader = Upgrader(
            cluster,
            day2_session.run_playbook,
            inventory,
            print,
            day2_session.waits(args),
        )
        outcome = upgrader.run(plan)
        print(f"upgraded to {target}: {', '.join(outcome.upgraded)}")
    if args.stack:
        stack = AutomationStack(args.stack, project_root())
        stack.set_config({f"{NAMESPACE}:k3s.version": str(target)})
        print(
            f"set {NAMESPACE}:k3s.version = {target} in Pulumi.{args.stack}.yaml: commit it "
            "(new nodes install this version; configure refuses a node whose version differs)"
        )
    else:
        print(f"set {NAMESPACE}:k3s.version to {target} in the stack file and commit it")
    return 0
