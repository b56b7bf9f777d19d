"""How a run shows itself: live per-host progress (rich), JSON lines, or nothing; the summary."""

from __future__ import annotations

import atexit
import io
import json
import time
from typing import Any, Literal, TextIO, cast

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ecoma_infra.configure.events import Display, EventTracker, plain_text
from ecoma_infra.configure.redact import Redactor
from ecoma_infra.configure.result import RunResult

OutputMode = Literal["progress", "json", "quiet"]


class _Writer:
    """The one door to the stream: everything printed is redacted here."""

    def __init__(self, stream: TextIO, redact: Redactor) -> None:
        self.stream = stream
        self.redact = redact

    def write(self, text: str) -> int:
        self.stream.write(self.redact(text))
        self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return True  # asked only by the live display, which is made for terminals


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
    """A live per-host table (rich) redrawn in place on a terminal; a line per event otherwise.
    With -v, Ansible's own output is shown instead of the per-event lines."""

    def __init__(self, writer: _Writer, *, tty: bool, verbosity: int) -> None:
        self.writer = writer
        self.verbose = verbosity > 0
        self.live_mode = tty and not self.verbose
        self.color = tty
        self.play_name = ""
        self.last_draw = 0.0
        self.tracker: EventTracker | None = None
        self.live: Live | None = None

    def play(self, name: str) -> None:
        self.play_name = name
        if not self.live_mode and not self.verbose:
            self.writer.write(f"PLAY {name}\n")

    def host_task(self, tracker: EventTracker, host: str) -> None:
        self.tracker = tracker
        if self.live_mode:
            self._redraw()

    def host_result(
        self, tracker: EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        self.tracker = tracker
        line = f"{_STATUS_LABEL[status]:<12} {host}  {task}"
        if msg and status in ("failed", "unreachable"):
            line += f": {msg}"
        if self.live_mode:
            failed = status in ("failed", "unreachable")
            if failed:  # keep failures on screen above the live table
                self._start().console.print(Text(line), soft_wrap=True)
            self._redraw(force=failed)
        elif not self.verbose:
            self.writer.write(line + "\n")

    def ansible_output(self, text: str) -> None:
        if self.verbose:
            self.writer.write((text if self.color else plain_text(text)) + "\n")

    def finish(self, result: RunResult) -> None:
        self._stop()
        self.writer.write(_summary_text(result))

    def _start(self) -> Live:
        if self.live is None:
            # The writer redacts what rich draws: all a console needs of a file is write/flush.
            console = Console(file=cast(TextIO, self.writer), force_terminal=True, highlight=False)
            self.live = Live(
                console=console,
                auto_refresh=False,  # redrawn on events, at most every 0.1 s: no thread
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
            atexit.register(self._stop)  # a run that dies still gives the cursor back
        return self.live

    def _stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            atexit.unregister(self._stop)

    def _redraw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tracker is None or (not force and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        table = Table(
            title=f"PLAY {self.play_name}",
            title_justify="left",
            box=None,
            padding=(0, 1),
            show_edge=False,
        )
        table.add_column("host", no_wrap=True)
        for column in ("ok", "chg", "fail", "unr", "skip"):
            table.add_column(column, justify="right")
        table.add_column("task", overflow="ellipsis", no_wrap=True)
        for name, state in sorted(self.tracker.hosts.items()):
            c = state.counts
            table.add_row(
                name,
                str(c.ok),
                str(c.changed),
                Text(str(c.failed), style="red" if c.failed else ""),
                Text(str(c.unreachable), style="red" if c.unreachable else ""),
                str(c.skipped),
                state.task,
            )
        live = self._start()
        live.update(table)
        live.refresh()


def _summary_text(result: RunResult) -> str:
    """The recap: a table of every host's counts, then every failure, one line each (plain text,
    so a CI log and a terminal read the same)."""
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    table.add_column("HOST", no_wrap=True)
    for column in _COLUMNS:
        table.add_column(column.upper(), justify="right")
    for name, counts in sorted(result.hosts.items()):
        table.add_row(name, *(str(getattr(counts, column)) for column in _COLUMNS))
    rendered = io.StringIO()
    Console(file=rendered, width=200, color_system=None, highlight=False).print(table)
    lines = ["", "SUMMARY"]
    lines += [f"  {line.rstrip()}" for line in rendered.getvalue().splitlines() if line.strip()]
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
