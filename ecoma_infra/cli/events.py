"""Where a run's events go: JSON lines where a machine reads them, sentences where a person does.

`Telemetry` writes one JSON object per event to its log stream. With `--log-format json`, or
`auto` when stderr is not a terminal (a CI log, a log collector), that stream is stderr as it is.
At a terminal (`auto`, or `text`) a person reads stderr: the JSON lines are dropped there, but
for the warnings and errors nothing else says (a Pushgateway that refused the metrics, a metrics
file moved aside, a tailnet not checked), which become one sentence each. The run's failure
itself is not repeated: the error message says it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO, cast

from ecoma_infra.cli.conventions import is_terminal

#: Events whose news the command prints itself (the error message, the summary, the runner's
#: "tailnet: ... not checked" line).
_SAID_ELSEWHERE = frozenset({"phase_failed", "finished", "tailnet_unchecked"})
_FIXED_KEYS = frozenset({"ts", "level", "stack", "operation", "event"})


def json_events(args: argparse.Namespace, stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    chosen = getattr(args, "log_format", "auto")
    return chosen == "json" or (chosen == "auto" and not is_terminal(stream))


def event_log(args: argparse.Namespace) -> TextIO:
    """The stream `Telemetry` writes its JSON lines to, for this command line."""
    if json_events(args):
        return sys.stderr
    return cast(TextIO, TextEvents(sys.stderr))  # the write/flush of a text stream is all it needs


class TextEvents:
    """A log stream for people: JSON event lines in, warnings and errors out as sentences."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            sentence = _sentence(line)
            if sentence:
                self.stream.write(sentence + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return is_terminal(self.stream)


def _sentence(line: str) -> str | None:
    try:
        record: Any = json.loads(line)
    except ValueError:
        return line or None  # not an event: pass it on as it is
    if not isinstance(record, dict):
        return None
    if record.get("level") not in ("warning", "error") or record.get("event") in _SAID_ELSEWHERE:
        return None
    fields = ", ".join(f"{key}: {value}" for key, value in record.items() if key not in _FIXED_KEYS)
    what = str(record.get("event", "event")).replace("_", " ")
    return f"ecoma-infra: {record['level']}: {what}" + (f" ({fields})" if fields else "")
