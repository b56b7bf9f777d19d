"""The `ecoma-infra` command line.

Each subcommand lives in its own module under `ecoma_infra.cli.commands` and exposes
`register(subparsers)`, which adds its parser and sets `handler` to a function taking the parsed
arguments and returning an exit code. Modules are discovered, so adding a command touches no
shared file.

Exit codes scripts can trust: 0 success, 1 the work failed (invalid config, failed host, refused
change), 2 bad usage (argparse's own convention).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ecoma_infra.cli import commands
from ecoma_infra.errors import EcomaError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecoma-infra",
        description=(
            "Ecoma's hybrid k3s infrastructure: validate stack configs, preview the Pulumi "
            "program offline, configure nodes with Ansible, run a local lab, burst cloud workers."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except EcomaError as error:
        print(f"ecoma-infra: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ecoma-infra: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
