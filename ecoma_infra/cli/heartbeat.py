"""A heartbeat on long waits (nodes becoming Ready, drains), like Terraform's
"Still creating... [10s elapsed]".

At a terminal: one live line (rich), redrawn at every poll of the wait and gone when the wait
ends: what is awaited, the time elapsed, and what it waits on (the pods being evicted and why an
eviction is refused, the nodes not Ready yet). Elsewhere (CI logs): a plain line every
`interval` seconds, so a log shows the run is alive without a line per poll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from ecoma_infra.cli.conventions import is_terminal


class Wait:
    """One wait in progress: `beat` with the time elapsed and what it waits on; `say` prints a
    line that stays (e.g. "wkr-aws-1: Ready after 42.0 s") without breaking the live line."""

    def __init__(
        self,
        activity: str,
        stream: TextIO,
        live: Live | None,
        *,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self.activity = activity
        self.stream = stream
        self.live = live
        self.interval = interval
        self.clock = clock
        self.last_line = clock()
        self.beats = 0

    def beat(self, elapsed: float, detail: str = "") -> None:
        self.beats += 1
        line = f"{self.activity}... [{elapsed:.0f}s elapsed]" + (f" {detail}" if detail else "")
        if self.live is not None:
            self.live.update(Spinner("dots", Text(line, overflow="ellipsis", no_wrap=True)))
            self.live.refresh()
            return
        now = self.clock()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self.stream.write(f"  still {line}\n")
            self.stream.flush()

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(Text(line), soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()


class Heartbeat:
    """Makes `Wait`s on one stream; `tty` defaults to whether the stream is a terminal."""

    def __init__(
        self,
        stream: TextIO,
        *,
        tty: bool | None = None,
        interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = is_terminal(stream) if tty is None else tty
        self.interval = interval
        self.clock = clock

    @contextmanager
    def __call__(self, activity: str) -> Iterator[Wait]:
        if not self.tty:
            yield Wait(activity, self.stream, None, interval=self.interval, clock=self.clock)
            return
        console = Console(file=self.stream, force_terminal=True, highlight=False)
        # Redrawn at each beat, not by a timer thread: a wait's beats come every poll (2-10 s).
        with Live(
            Text(f"{activity}..."),
            console=console,
            auto_refresh=False,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        ) as live:
            yield Wait(activity, self.stream, live, interval=self.interval, clock=self.clock)
