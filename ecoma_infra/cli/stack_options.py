"""The stack a command works on: `-s/--stack NAME` (or `--file PATH` where a file will do), else
`$PULUMI_STACK`, else the stack selected with `pulumi stack select` in this project, like the
Pulumi CLI. Every command that names where its stack came from when it was not given."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import yaml

from ecoma_infra.errors import UsageError
from ecoma_infra.paths import project_root
from ecoma_infra.stack.load import LoadedStack, load_stack_file, stack_file
from ecoma_infra.stack.model import ROLES

STACK_ENV = "PULUMI_STACK"
_STACK_HELP = (
    f"the stack (default: ${STACK_ENV}, else the stack selected with `pulumi stack select`)"
)


def add_stack_option(
    parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup,
    *,
    alternatives: tuple[str, ...] = (),
    help_text: str = _STACK_HELP,
) -> None:
    """`-s/--stack NAME`, resolved by `resolve_stack` before the command runs. `alternatives`
    are the dests of options that make a stack unnecessary (`file`, `inventory`)."""
    parser.add_argument("-s", "--stack", metavar="NAME", help=help_text)
    parser.set_defaults(stack_alternatives=alternatives, stack_source=None, pulumi_stack=None)


def add_stack_options(parser: argparse.ArgumentParser, *, allow_file: bool = True) -> None:
    """`-s/--stack NAME` or `--file PATH`."""
    group = parser.add_mutually_exclusive_group()
    if allow_file:
        add_stack_option(group, alternatives=("file",))
        group.add_argument("--file", metavar="PATH", type=Path, help="read this stack file")
    else:
        add_stack_option(group)


def resolve_stack(args: argparse.Namespace) -> None:
    """Fill `args.stack` for a command that declared `-s/--stack`: the option, else
    `$PULUMI_STACK`, else the selected stack; `UsageError` when there is none.

    `args.stack` is the stack's own name (`prod`: the file is `Pulumi.prod.yaml`, the metrics'
    `stack` label); `args.pulumi_stack` is the name as given (`org/ecoma-infra/prod`), which the
    Pulumi Automation API resolves."""
    if not hasattr(args, "stack_alternatives"):
        return
    given, source = args.stack, None
    if not given and not any(getattr(args, name, None) for name in args.stack_alternatives):
        given, source = os.environ.get(STACK_ENV, "").strip(), f"${STACK_ENV}"
        if not given:
            given, source = selected_stack(project_root()) or "", "`pulumi stack select`"
        if not given:
            alternatives = "".join(f" or --{name}" for name in args.stack_alternatives)
            raise UsageError(
                f"which stack? pass -s NAME{alternatives}, set {STACK_ENV}, or select one with "
                "`pulumi stack select NAME`"
            )
    if not given:
        args.pulumi_stack = None
        return
    parts = given.split("/")
    if len(parts) > 3 or not all(_STACK_NAME.fullmatch(part) for part in parts):
        origin = f" (from {source})" if source else ""
        raise UsageError(
            f"--stack {given!r}{origin} is not a stack name: use letters, digits, '-', '_' and "
            "'.', optionally qualified as ORG/PROJECT/NAME"
        )
    args.stack, args.pulumi_stack, args.stack_source = parts[-1], given, source


_STACK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")


def selected_stack(root: Path, pulumi_home: Path | None = None) -> str | None:
    """The stack `pulumi stack select` chose for the project at `root`, or None.

    The Pulumi CLI keeps it in `$PULUMI_HOME/workspaces/<project>-<sha1 of the absolute path of
    Pulumi.yaml>-workspace.json` as `{"stack": "..."}` (pulumi/pulumi,
    sdk/go/common/workspace/workspace.go, `settingsPath`); PULUMI_HOME defaults to ~/.pulumi."""
    project_file = root / "Pulumi.yaml"
    try:
        name = (yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}).get("name")
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(name, str):
        return None
    home = pulumi_home or Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    # The CLI hashes the path as it found it (os.Getwd): the resolved one, or one through $PWD.
    candidates = {str(project_file.resolve()), str(Path(os.path.abspath(project_file)))}  # noqa: PTH100
    for path in sorted(candidates):
        digest = hashlib.sha1(path.encode(), usedforsecurity=False).hexdigest()
        settings = home / "workspaces" / f"{name}-{digest}-workspace.json"
        try:
            stack = json.loads(settings.read_text(encoding="utf-8")).get("stack")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(stack, str) and stack.strip():
            return stack.strip()
    return None


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
