"""The `ecoma-infra` command line.

Each subcommand lives in its own module under `ecoma_infra.cli.commands`, named like the
command, and exposes `register(subparsers)`, which adds its parser and sets `handler` to a
function taking the parsed arguments and returning an exit code. Modules are discovered, so adding
a command touches no shared file. Only the module of the command that runs is imported (the
others import the cloud SDKs, the Automation API, ansible-runner); `--help` and a mistyped
command import them all. The conventions every command follows (options, streams, exit codes)
are in `cli.conventions` and docs/architecture.md ("A command"); this module applies the shared
ones:

- `-v/--verbose` on every command: the traceback of an unexpected error;
- `-s/--stack` resolved (`$PULUMI_STACK`, the selected stack) before the command runs;
- an `EcomaError` becomes its message and its exit code; anything unexpected becomes one line
  that names the error's type and place and points to `-v` (exit 1), never a traceback;
- a reader that goes away (`ecoma-infra schema | head`) ends the output quietly: the command
  still finishes its work, its further output is dropped.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ecoma_infra.cli import commands, conventions, stack_options
from ecoma_infra.cli.conventions import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from ecoma_infra.errors import EcomaError
from ecoma_infra.paths import PACKAGE_DIR

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def command_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(commands.__path__))


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `only` when that names one."""
    parser = argparse.ArgumentParser(
        prog="ecoma-infra",
        description=(
            "Ecoma's hybrid k3s infrastructure: validate stack configs, preview the Pulumi "
            "program offline, deploy, configure nodes with Ansible, run a local lab, burst cloud "
            "workers."
        ),
        epilog=(
            "exit codes: 0 ok; 1 the work failed or was refused; 2 bad usage; 3 --dry-run with "
            "changes pending; 130 interrupted. Every command: -h for its options, -v for the "
            "traceback of an unexpected error."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = command_names()
    for name in [only] if only in names else names:
        module = importlib.import_module(f"{commands.__name__}.{name}")
        module.register(subparsers)
    for leaf in leaf_parsers(parser):
        conventions.add_verbose_option(leaf)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser that runs a command (`lab up`, `credentials check`, `schema`, ...)."""
    children = [
        child
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for child in dict.fromkeys(action.choices.values())
    ]
    if not children:
        yield parser
    for child in children:
        yield from leaf_parsers(child)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        _short_lived_process()
    with _quiet_broken_pipes():
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    args = argparse.Namespace(verbosity=0)
    try:
        arguments = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(only=arguments[0] if arguments else None).parse_args(arguments)
        stack_options.resolve_stack(args)
        if getattr(args, "stack_source", None):
            print(
                f"ecoma-infra: stack {args.pulumi_stack} (from {args.stack_source})",
                file=sys.stderr,
            )
        return int(args.handler(args))
    except EcomaError as error:
        print(f"ecoma-infra: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("ecoma-infra: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the last resort: a bug, or an input nothing else caught
        if getattr(args, "verbosity", 0) or _asked_for_traceback(argv):
            traceback.print_exc()
        print(f"ecoma-infra: error: {_unexpected(error)}", file=sys.stderr)
        return EXIT_FAILED


def _asked_for_traceback(argv: Sequence[str] | None) -> bool:
    """-v on a command line that failed before it was parsed."""
    words = sys.argv[1:] if argv is None else argv
    return any(word in ("-v", "--verbose") or word.startswith("-vv") for word in words)


def _unexpected(error: BaseException) -> str:
    """One line for an unexpected error: its type and where it happened. Not its message, which
    may quote a value from a file or an API answer (a token, say)."""
    place = ""
    frames = traceback.extract_tb(error.__traceback__)
    ours = [
        frame
        for frame in frames
        if Path(frame.filename).is_relative_to(PACKAGE_DIR) and frame.filename != __file__
    ] or frames[1:]
    if ours:
        frame = ours[-1]
        where = Path(frame.filename)
        if where.is_relative_to(PACKAGE_DIR):
            where = where.relative_to(PACKAGE_DIR.parent)
        place = f" in {where}:{frame.lineno}"
    return (
        f"unexpected {type(error).__name__}{place}; nothing in the input explained it. Run the "
        "command again with -v to see the traceback (it may show values from your files), and "
        "report it"
    )


class _PipeSafe:
    """A text stream that drops what it cannot write once its reader has gone (EPIPE)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except BrokenPipeError:
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_broken_pipes() -> Iterator[None]:
    """Run with stdout and stderr that survive a reader going away, and leave them so that the
    interpreter's final flush does not complain either."""
    original = sys.stdout, sys.stderr
    safe_out, safe_err = _PipeSafe(sys.stdout), _PipeSafe(sys.stderr)
    sys.stdout, sys.stderr = safe_out, safe_err
    try:
        yield
    finally:
        for safe in (safe_out, safe_err):
            safe.flush()
        sys.stdout, sys.stderr = original
        for safe, stream in zip((safe_out, safe_err), original, strict=True):
            if safe.broken:
                # What Python's documentation advises for SIGPIPE: point the descriptor at
                # /dev/null so that the interpreter's last flush at exit has somewhere to go.
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, stream.fileno())
                    os.close(devnull)


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
