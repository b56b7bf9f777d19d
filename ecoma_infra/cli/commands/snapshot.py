"""`ecoma-infra snapshot`: an etcd snapshot now, on one server, to where the scheduled ones go."""

from __future__ import annotations

import argparse

from ecoma_infra.cli import day2_session
from ecoma_infra.day2.snapshot import plan_snapshot, take_snapshot
from ecoma_infra.stack.model import NAMESPACE

_EPILOG = f"""\
It runs ansible/snapshot.yaml on the server: `k3s etcd-snapshot save --name NAME` there, with the
S3 credentials of the k3s unit's environment file, so the snapshot lands in the server's
snapshot dir (/var/lib/rancher/k3s/server/db/snapshots) and, when the stack names an S3 target
({NAMESPACE}:k3s.etcd_snapshots.s3), in the bucket. k3s names it NAME-<node>-<unix time>.
On-demand snapshots are not pruned by the retention. Take one before an upgrade or a replace;
restoring one is a runbook (docs/day2.md, "Restore").

exit codes: 0 saved; 1 the snapshot failed; 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "snapshot",
        help="take an etcd snapshot now (to the servers' disk and the stack's S3 target)",
        description="An on-demand etcd snapshot on one server of a stack.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    day2_session.add_inventory_options(parser)
    parser.add_argument(
        "--node", metavar="SERVER", help="the server to take it on (default: the first)"
    )
    parser.add_argument(
        "--name", default="on-demand", help="base name of the snapshot (default on-demand)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    inventory, secrets = day2_session.inventory_and_secrets(args)
    plan = plan_snapshot(inventory, server=args.node, name=args.name)
    print(plan.describe())
    # Ansible's own output: it shows the snapshot's name and where it went.
    take_snapshot(
        plan,
        lambda *run: day2_session.run_playbook(*run, verbosity=1),
        inventory,
        secrets,
    )
    print(f"{plan.describe()}: saved (`k3s etcd-snapshot ls` on {plan.server} lists it)")
    return 0
