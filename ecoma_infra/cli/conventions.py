"""What every `ecoma-infra` command shares: exit codes, the common options and their checks,
and where human text and machine text go. `docs/architecture.md` ("A command") is the guide for
a new command; this module is its toolbox.

Exit codes scripts can trust:

    0  done (with --dry-run: nothing would change)
    1  the work failed or was refused (invalid config, failed host, drain blocked, cancelled)
    2  bad usage (unknown option, bad value, missing file, no terminal to ask)
    3  --dry-run only: changes are pending (like `terraform plan -detailed-exitcode`'s 2, which
       is taken here by bad usage)
    130 interrupted (Ctrl-C)

Streams: the result goes to stdout; with `--json` that is one JSON document and nothing else, and
the human progress moves to stderr. Prompts go where the human text goes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHANGES_PENDING = 3
EXIT_INTERRUPTED = 130

#: Pulumi's own switch for non-interactive runs: "1" or "true" (any case) skip the prompts, as
#: `pulumi up` does. It never stands in for an explicit flag that guards a destructive act
#: (`drill --allow-prod`), as Pulumi's own documentation of the variable asks.
SKIP_CONFIRMATIONS_ENV = "PULUMI_SKIP_CONFIRMATIONS"


def truthy(value: str | None) -> bool:
    """Pulumi's reading of a boolean environment variable: "1" or "true", any case."""
    return value is not None and (value == "1" or value.strip().lower() == "true")


# --- options ---------------------------------------------------------------------------------


def add_yes_option(parser: argparse.ArgumentParser, what: str = "apply without asking") -> None:
    """`-y/--yes`; `PULUMI_SKIP_CONFIRMATIONS=true` does the same (see `skip_confirmations`)."""
    parser.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help=f"{what} (also: {SKIP_CONFIRMATIONS_ENV}=true)",
    )


def skip_confirmations(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "yes", False)) or truthy(os.environ.get(SKIP_CONFIRMATIONS_ENV))


def add_cluster_options(
    parser: argparse.ArgumentParser, *, drain: bool = True, ready_help: str
) -> None:
    """`--kubeconfig`, `--drain-timeout` (when the command drains) and `--ready-timeout`: what
    every command that waits on the cluster takes."""
    parser.add_argument(
        "--kubeconfig", metavar="FILE", type=Path, help="default: $KUBECONFIG or ~/.kube/config"
    )
    if drain:
        parser.add_argument(
            "--drain-timeout",
            metavar="SECONDS",
            type=seconds,
            default=600.0,
            help="per node (600)",
        )
    parser.add_argument(
        "--ready-timeout", metavar="SECONDS", type=seconds, default=900.0, help=ready_help
    )


def add_json_option(parser: argparse.ArgumentParser, what: str = "one JSON document") -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} on stdout (progress goes to stderr)",
    )


def add_dry_run_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"{what}, change nothing; exit {EXIT_CHANGES_PENDING} when changes are pending, "
        f"{EXIT_OK} when there are none",
    )


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """`-v/--verbose` (count) on a command that has none: tracebacks of unexpected errors."""
    if "-v" in parser._option_string_actions:  # configure's own -v (Ansible's verbosity)
        return
    parser.add_argument(
        "-v",
        "--verbose",
        dest="verbosity",
        action="count",
        default=0,
        help="show the traceback of an unexpected error",
    )


def add_log_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("auto", "text", "json"),
        default="auto",
        help="the run's events (phase started/finished/failed, warnings): json = one JSON "
        "object per line on stderr, for a log collector; text = warnings only, as sentences; "
        "auto (default) = json when stderr is not a terminal, else text",
    )


# --- values ----------------------------------------------------------------------------------


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, e.g. 600")
    return value


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest lease `--ttl` accepts. A burst node is ephemeral: its lease bounds what it costs.
MAX_TTL = timedelta(days=365)


def duration(text: str) -> str:
    """An argparse type: a lease such as 30m, 4h or 1d, at most a year (the text is kept)."""
    if not re.fullmatch(r"[1-9][0-9]{0,11}[smhd]", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: use e.g. 30m, 4h or 1d")
    number, unit = text[:-1], text[-1]
    if int(number) * _DURATION_UNITS[unit] > MAX_TTL.total_seconds():
        raise argparse.ArgumentTypeError(f"{text!r} is longer than a year: use at most 365d")
    return text


def http_url(text: str) -> str:
    """An argparse type: an http(s) URL with a host, e.g. http://prometheus:9090."""
    try:
        parts = urlsplit(text)
        port = parts.port  # a bad port raises ValueError here
    except ValueError:
        parts, port = None, None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an http(s) URL with a host, e.g. http://prometheus:9090"
        )
    del port
    return text


# --- streams ---------------------------------------------------------------------------------


def human_stream(args: argparse.Namespace) -> TextIO:
    """Where progress and prompts go: stdout, or stderr when stdout carries `--json`."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def emit_json(document: Any) -> None:
    """The command's one JSON document, on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False
