"""Errors that the CLI turns into a message and an exit code instead of a traceback."""

from __future__ import annotations


class EcomaError(Exception):
    """A failure the user can act on. The message names the file, the field and the fix."""

    exit_code = 1


class UsageError(EcomaError):
    """The command was called wrongly (missing file, conflicting options)."""

    exit_code = 2
