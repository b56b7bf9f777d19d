"""`ecoma-infra diagram`: where a stack's machines run, as a Mermaid flowchart."""

from __future__ import annotations

import argparse

from ecoma_infra.cli import stack_options
from ecoma_infra.program.topology import mermaid


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diagram",
        help="print where a stack's machines run (hypervisors, VMs, SDN, VIP, tailnet, burst "
        "pools) as a Mermaid flowchart",
        description=(
            "Print the stack's topology as a Mermaid flowchart, from its stack file: every "
            "hypervisor with its VMs (role, IP), the SDN zone and the kube-vip address, the "
            "subnet routers, the tailnet, and the burst pools (count, max, TTL). GitHub renders "
            "it in a ```mermaid block; README.md shows prod's."
        ),
    )
    stack_options.add_stack_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = stack_options.load(args)
    print(mermaid(loaded.config, stack_options.stack_name(args)), end="")
    return 0
