"""`ecoma-infra lab`: a stack's on-prem nodes as real local Debian 12 hosts, and the playbook
run against them.

    sudo ecoma-infra lab up -s staging        # hosts at their SDN IPs, disks at by-id paths
    sudo ecoma-infra lab converge -s staging  # `configure` against them
    sudo ecoma-infra lab status -s staging    # --json for one document
    sudo ecoma-infra lab down -s staging      # leaves the machine as it was
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecoma_infra.cli import conventions, stack_options
from ecoma_infra.cli.commands import configure as configure_command
from ecoma_infra.errors import UsageError
from ecoma_infra.lab import engine as lab
from ecoma_infra.lab import stack as labstack
from ecoma_infra.lab.state import LabState, load_state
from ecoma_infra.paths import project_root
from ecoma_infra.stack.load import load_stack_file, stack_file


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "lab",
        help="run a stack's on-prem nodes as local Debian 12 hosts (needs root)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="lab_action", metavar="ACTION", required=True)
    up = actions.add_parser("up", help="create the hosts and write their inventory")
    converge = actions.add_parser("converge", help="run the playbook against the hosts")
    status = actions.add_parser("status", help="show each host: running, ssh, disks")
    down = actions.add_parser("down", help="remove every host, disk, mount, swap and bridge")
    for action in (up, converge, status):
        stack_options.add_stack_option(
            action,
            help_text="the stack to mirror (default: $PULUMI_STACK, else the stack selected "
            "with `pulumi stack select`)",
        )
    conventions.add_json_option(status, "every host's state as one JSON document")
    which = down.add_mutually_exclusive_group()
    # No $PULUMI_STACK fallback here: without -s, `down` takes the lab that is up, whichever.
    which.add_argument("-s", "--stack", metavar="NAME", help="the stack's lab")
    which.add_argument(
        "--state-dir", type=Path, help="a lab's state dir (default: the lab that is up)"
    )
    configure_command.add_run_options(converge)
    up.set_defaults(handler=run_up)
    converge.set_defaults(handler=run_converge)
    status.set_defaults(handler=run_status)
    down.set_defaults(handler=run_down)


def run_up(args: argparse.Namespace) -> int:
    config = load_stack_file(stack_file(args.stack, project_root())).config
    directory = labstack.state_dir(args.stack)
    state = lab.lab_up(labstack.lab_spec(config), directory)
    path = labstack.write_inventory(directory, labstack.lab_inventory(args.stack, config, state))
    for host in state.hosts:
        disks = ", ".join(f"{d.tier}={d.loop_device}" for d in host.disks) or "no data disks"
        print(f"{host.name:<12} {host.ip:<15} {disks}")
    print(f"lab up: {len(state.hosts)} hosts; inventory {path}")
    print(f"next: ecoma-infra lab converge --stack {args.stack}")
    return 0


def _state(stack: str) -> LabState:
    state = load_state(labstack.state_dir(stack))
    if state is None:
        raise UsageError(
            f"no lab for stack {stack} (looked in {labstack.state_dir(stack)}). "
            f"Fix: sudo ecoma-infra lab up --stack {stack}"
        )
    return state


def run_converge(args: argparse.Namespace) -> int:
    state = _state(args.stack)
    path = labstack.state_dir(args.stack) / labstack.INVENTORY_FILE
    inventory = json.loads(path.read_text(encoding="utf-8"))
    return configure_command.run_with(args, inventory, labstack.lab_secrets(state))


def run_status(args: argparse.Namespace) -> int:
    _state(args.stack)
    healthy = True
    hosts = lab.lab_status(labstack.state_dir(args.stack))
    for host in hosts:
        disks = " ".join(f"{k}:{'ok' if v else 'MISSING'}" for k, v in host.disks_present.items())
        if not args.json:
            print(
                f"{host.name:<12} {host.ip:<15} running={host.running} "
                f"ssh={host.ssh_reachable} {disks}"
            )
        healthy = healthy and host.healthy
    if args.json:
        conventions.emit_json(
            {
                "stack": args.stack,
                "healthy": healthy,
                "hosts": [
                    {
                        "name": host.name,
                        "ip": host.ip,
                        "running": host.running,
                        "ssh": host.ssh_reachable,
                        "disks": dict(host.disks_present),
                        "healthy": host.healthy,
                    }
                    for host in hosts
                ],
            }
        )
    return conventions.EXIT_OK if healthy else conventions.EXIT_FAILED


def run_down(args: argparse.Namespace) -> int:
    directory: Path | None = (
        labstack.state_dir(args.stack) if args.stack else args.state_dir or lab.current_lab()
    )
    if directory is None:
        print("lab down: no lab is up on this machine", file=sys.stderr)
        return 0
    lab.lab_down(directory)
    print(f"lab down: {directory} removed", file=sys.stderr)
    return 0
