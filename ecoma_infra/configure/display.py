"""How a run shows itself: live per-host progress, JSON lines, or nothing; the summary table."""

from __future__ import annotations

import json
import shutil
import time
from typing import Any, Literal, TextIO

from ecoma_infra.configure.events import Display, EventTracker, plain_text
from ecoma_infra.configure.redact import Redactor
from ecoma_infra.configure.result import RunResult

OutputMode = Literal["progress", "json", "quiet"]


class _Writer:
    """The one door to the stream: everything printed is redacted here."""

    def __init__(self, stream: TextIO, redact: Redactor) -> None:
        self.stream = stream
        self.redact = redact

    def write(self, text: str) -> None:
        self.stream.write(self.redact(text))
        self.stream.flush()


class _QuietDisplay:
    def play(self, name: str) -> None:
        pass

    def host_task(self, tracker: EventTracker, host: str) -> None:
        pass

    def host_result(
        self, tracker: EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        pass

    def ansible_output(self, text: str) -> None:
        pass

    def finish(self, result: RunResult) -> None:
        pass


class _JsonDisplay(_QuietDisplay):
    """One JSON object per line: a `result` per host and task, then a `summary`."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def host_result(
        self, tracker: EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        record = {"type": "result", "host": host, "task": task, "status": status}
        if msg:
            record["msg"] = msg
        self._emit(record)

    def finish(self, result: RunResult) -> None:
        self._emit({"type": "summary", **result.to_dict()})

    def _emit(self, record: dict[str, Any]) -> None:
        self.writer.write(json.dumps(record, sort_keys=False) + "\n")


_STATUS_LABEL = {
    "ok": "ok",
    "changed": "changed",
    "skipped": "skipped",
    "ignored": "ignored",
    "failed": "FAILED",
    "unreachable": "UNREACHABLE",
}
_COLUMNS = ("ok", "changed", "failed", "unreachable", "skipped")


class _ProgressDisplay(_QuietDisplay):
    """A live per-host block redrawn in place on a terminal; a line per event otherwise.
    With -v, Ansible's own output is shown instead of the per-event lines."""

    def __init__(self, writer: _Writer, *, tty: bool, verbosity: int) -> None:
        self.writer = writer
        self.verbose = verbosity > 0
        self.live = tty and not self.verbose
        self.color = tty
        self.play_name = ""
        self.drawn_lines = 0
        self.last_draw = 0.0
        self.tracker: EventTracker | None = None

    def play(self, name: str) -> None:
        self.play_name = name
        if not self.live and not self.verbose:
            self.writer.write(f"PLAY {name}\n")

    def host_task(self, tracker: EventTracker, host: str) -> None:
        self.tracker = tracker
        if self.live:
            self._redraw()

    def host_result(
        self, tracker: EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        self.tracker = tracker
        line = f"{_STATUS_LABEL[status]:<12} {host}  {task}"
        if msg and status in ("failed", "unreachable"):
            line += f": {msg}"
        if self.live:
            if status in ("failed", "unreachable"):  # keep failures on screen above the block
                self._clear()
                self.writer.write(line + "\n")
            self._redraw(force=status in ("failed", "unreachable"))
        elif not self.verbose:
            self.writer.write(line + "\n")

    def ansible_output(self, text: str) -> None:
        if self.verbose:
            self.writer.write((text if self.color else plain_text(text)) + "\n")

    def finish(self, result: RunResult) -> None:
        if self.live:
            self._clear()
        self.writer.write(_summary_text(result))

    def _clear(self) -> None:
        if self.drawn_lines:
            self.writer.write(f"\x1b[{self.drawn_lines}F\x1b[J")
            self.drawn_lines = 0

    def _redraw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tracker is None or (not force and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        width = max(shutil.get_terminal_size().columns - 1, 20)
        hosts = sorted(self.tracker.hosts.items())
        name_width = max(len(name) for name, _ in hosts) if hosts else 0
        lines = [f"PLAY {self.play_name}"]
        for name, state in hosts:
            c = state.counts
            # Compact counts, so that the current task still fits on an 80-column terminal.
            lines.append(
                f"  {name:<{name_width}}  ok={c.ok} chg={c.changed} fail={c.failed} "
                f"unr={c.unreachable} skip={c.skipped}  {state.task}"
            )
        self._clear()
        self.writer.write("".join(line[:width] + "\n" for line in lines))
        self.drawn_lines = len(lines)


def _summary_text(result: RunResult) -> str:
    rows = [("HOST", *(column.upper() for column in _COLUMNS))]
    rows += [
        (name, *(str(getattr(counts, column)) for column in _COLUMNS))
        for name, counts in sorted(result.hosts.items())
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["", "SUMMARY"]
    lines += [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    if result.failures:
        lines.append("FAILURES")
        for failure in result.failures:
            kind = "unreachable" if failure.unreachable else "failed"
            lines.append(f"  {failure.host} | {failure.task} | {kind}: {failure.msg}")
    if not result.success and result.messages and not result.failures:
        lines.append("ANSIBLE SAID")
        lines += [f"  {message}" for message in result.messages]
    verdict = "succeeded" if result.success else "FAILED"
    lines.append(f"configure {verdict} (rc={result.rc}, status={result.status})")
    return "\n".join(lines) + "\n"


def make_display(output: OutputMode, stream: TextIO, redact: Redactor, verbosity: int) -> Display:
    writer = _Writer(stream, redact)
    if output == "json":
        return _JsonDisplay(writer)
    if output == "quiet":
        return _QuietDisplay()
    isatty = getattr(stream, "isatty", None)
    return _ProgressDisplay(writer, tty=bool(isatty and isatty()), verbosity=verbosity)
