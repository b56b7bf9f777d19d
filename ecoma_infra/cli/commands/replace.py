"""`ecoma-infra replace`: rebuild one on-prem node's VM, drain first, data disks kept."""

from __future__ import annotations

import argparse
import os
import sys

from ecoma_infra.burst.run import load_ref
from ecoma_infra.cli import conventions, day2_session, stack_options
from ecoma_infra.cli.prompt import confirm
from ecoma_infra.day2.replace import Replacer, ReplaceSeams, plan_replace
from ecoma_infra.errors import EcomaError
from ecoma_infra.paths import project_root
from ecoma_infra.platforms.proxmox import PROXMOX_TOKEN_ENV, ProxmoxApi
from ecoma_infra.platforms.pulumi_automation import AutomationStack
from ecoma_infra.platforms.seams import Hypervisor, Tailnet

_EPILOG = f"""\
steps: cordon and drain the node (a node that is not Ready is not drained), stop its VM, delete
its Node (a server's etcd member goes with it) and wait for etcd to be healthy, delete its
Tailscale device; for an sts node move its data disks (hot, warm, cold) to a protected holder
VM; pulumi up lifting the node's protection, then replacing its VM and its Tailscale key; move
the data disks back; configure the node only (a server joins the running cluster); wait until
it is Ready; pulumi up restoring its protection. Its OS disk is always new.

refused before anything changes: the only server, another server not Ready, etcd not healthy,
another replace not finished.

needs: the Pulumi CLI and the stack's backend; a kubeconfig allowed to drain; {PROXMOX_TOKEN_ENV}
(VM.Audit, VM.PowerMgmt, VM.Allocate, VM.Config.Disk, VM.Monitor on /vms; Datastore.AllocateSpace);
TAILSCALE_OAUTH_CLIENT_SECRET or TAILSCALE_API_KEY to delete the old device.

A failure stops with what is done and where the data disks are; run the same command again to
resume. exit codes: 0 replaced; 1 refused or failed; 2 bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replace",
        help="rebuild one on-prem node's VM: drain, remove, recreate, configure, Ready",
        description="Replace a node of a stack with a new VM of the same name.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stack_options.add_stack_option(parser)
    parser.add_argument("--node", metavar="NODE", required=True, help="the node to replace")
    parser.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    day2_session.add_cluster_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    stack = AutomationStack(args.stack, project_root())
    ref = load_ref(stack)
    cluster = day2_session.cluster(args)
    plan = plan_replace(ref, args.node, cluster, project=day2_session.project_name())
    for line in plan.describe():
        print(line)
    if args.dry_run:
        return 0

    def hypervisor() -> Hypervisor:
        return ProxmoxApi.from_environment(ref.config.proxmox, os.environ)

    def tailnet() -> Tailnet | None:
        from ecoma_infra.platforms.tailscale import TailscaleApi  # noqa: PLC0415

        try:
            return TailscaleApi.from_environment(ref.config.tailscale, os.environ)
        except EcomaError as error:
            print(f"ecoma-infra: note: {error}", file=sys.stderr)
            return None

    hypervisor()  # the token is needed before anything changes
    confirm(
        f"replace {args.node} of stack {args.stack}",
        yes=conventions.skip_confirmations(args),
        out=sys.stdout,
    )

    def configure(inventory: dict, secrets: dict[str, str], limit: str) -> bool:
        return day2_session.run_playbook("playbook.yaml", inventory, secrets, limit, {})

    seams = ReplaceSeams(
        stack=stack,
        cluster=lambda: cluster,
        hypervisor=hypervisor,
        tailnet=tailnet,
        configure=configure,
        forget_host_key=day2_session.forget_host_key,
    )
    Replacer(seams, print, day2_session.waits(args)).run(plan)
    print(f"{args.node} replaced: Ready, protection restored")
    return 0
