"""Options shared by the commands that read a stack: `--stack NAME` or `--file PATH`."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from ecoma_infra.paths import project_root
from ecoma_infra.stack.load import LoadedStack, load_stack_file, stack_file
from ecoma_infra.stack.model import ROLES


def add_stack_options(parser: argparse.ArgumentParser, *, allow_file: bool = True) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--stack", metavar="NAME", help="read Pulumi.NAME.yaml at the project root")
    if allow_file:
        group.add_argument("--file", metavar="PATH", type=Path, help="read this stack file")


def stack_path(args: argparse.Namespace) -> Path:
    if getattr(args, "file", None):
        return Path(args.file)
    return stack_file(args.stack, project_root())


def stack_name(args: argparse.Namespace) -> str:
    """The stack's name: --stack, or what the file name says (Pulumi.<name>.yaml)."""
    if args.stack:
        return str(args.stack)
    name = Path(args.file).name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
        return name.split(".")[1]
    return Path(args.file).stem


def load(args: argparse.Namespace, *, require_secrets: bool = False) -> LoadedStack:
    return load_stack_file(stack_path(args), require_secrets=require_secrets)


def summary(loaded: LoadedStack) -> list[str]:
    """What `validate` says of a valid stack file: its nodes and pools, then any notice."""
    config = loaded.config
    roles = Counter(node.role for node in config.nodes)
    pools = ", ".join(
        f"{name} {pool.count}/{pool.max}" for name, pool in config.burst.pools().items()
    )
    return [
        f"{loaded.source}: valid: {len(config.nodes)} on-prem nodes "
        f"({', '.join(f'{roles[r]} {r}' for r in ROLES if roles[r])}); "
        f"burst pools {pools or 'none'}",
        *(f"{loaded.source}: note: {notice}" for notice in loaded.notices),
    ]
