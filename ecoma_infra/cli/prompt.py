"""The one question a command asks before it changes anything."""

from __future__ import annotations

import sys
from typing import TextIO

from ecoma_infra.cli.conventions import SKIP_CONFIRMATIONS_ENV, is_terminal
from ecoma_infra.errors import EcomaError, UsageError


class CancelledError(EcomaError):
    """The answer was no: nothing was changed (exit 1)."""


def confirm(question: str, *, yes: bool, out: TextIO, stdin: TextIO | None = None) -> None:
    """Go on with `yes` (-y/--yes or PULUMI_SKIP_CONFIRMATIONS) or a 'y' typed at a terminal;
    refuse without a terminal (exit 2), stop on anything else (exit 1)."""
    if yes:
        return
    stdin = stdin or sys.stdin
    if not is_terminal(stdin):
        raise UsageError(
            f"{question}: no terminal to ask: pass --yes to apply without a prompt "
            f"(-y, or {SKIP_CONFIRMATIONS_ENV}=true)"
        )
    out.write(f"{question} [y/N] ")
    out.flush()
    answer = stdin.readline()
    if not answer.endswith("\n"):
        out.write("\n")  # end of input: the next message starts on a line of its own
    if answer.strip().lower() not in {"y", "yes"}:
        raise CancelledError("cancelled: nothing was changed")
