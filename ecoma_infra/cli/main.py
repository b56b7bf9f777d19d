"""The `ecoma-infra` command line.

Each subcommand lives in its own module under `ecoma_infra.cli.commands`, named like the
command, and exposes `register(subparsers)`, which adds its parser and sets `handler` to a
function taking the parsed arguments and returning an exit code. Modules are discovered, so adding
a command touches no shared file. Only the module of the command that runs is imported (the
others import the cloud SDKs, the Automation API, ansible-runner); `--help` and a mistyped
command import them all.

Exit codes scripts can trust: 0 success, 1 the work failed (invalid config, failed host, refused
change), 2 bad usage (argparse's own convention).
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from ecoma_infra.cli import commands
from ecoma_infra.errors import EcomaError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def command_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `only` when that names one."""
    parser = argparse.ArgumentParser(
        prog="ecoma-infra",
        description=(
            "Ecoma's hybrid k3s infrastructure: validate stack configs, preview the Pulumi "
            "program offline, configure nodes with Ansible, run a local lab, burst cloud workers."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = command_names()
    for name in [only] if only in names else names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _short_lived_process()
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    try:
        return int(args.handler(args))
    except EcomaError as error:
        print(f"ecoma-infra: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ecoma-infra: interrupted", file=sys.stderr)
        return 130


def _short_lived_process() -> None:
    """The collector out of the way of a command run from the command line.

    The provider SDKs leave ~600k objects that every full collection walks again: during a
    preview that is up to 40% of its time, and the interpreter's last collection at exit ~1 s.
    A command is one bounded run, so the collector stays off while it runs, and at exit every
    object is frozen (moved where no collection looks) before the interpreter's last one.
    """
    gc.disable()
    atexit.register(gc.freeze)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
