"""ansible-runner's event stream turned into per-host state, failures and the run's result."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ecoma_infra.configure.redact import Redactor
from ecoma_infra.configure.result import HostCounts, RunResult, TaskFailure

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


MAX_MESSAGE = 2000


@dataclass
class _HostState:
    counts: HostCounts = field(default_factory=HostCounts)
    task: str = ""


class Display(Protocol):
    def play(self, name: str) -> None: ...
    def host_task(self, tracker: EventTracker, host: str) -> None: ...
    def host_result(
        self, tracker: EventTracker, host: str, task: str, status: str, msg: str
    ) -> None: ...
    def ansible_output(self, text: str) -> None: ...
    def finish(self, result: RunResult) -> None: ...


class EventTracker:
    """Turns ansible-runner events into per-host state, failures and the final result."""

    def __init__(self, display: Display, redact: Redactor) -> None:
        self.display = display
        self.redact = redact
        self.hosts: dict[str, _HostState] = {}
        self.failures: list[TaskFailure] = []
        self.messages: deque[str] = deque(maxlen=40)
        self.stats: dict[str, Any] | None = None

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event_handler. Returns True: returning None would drop the event."""
        try:
            self._handle(event)
        except Exception as error:  # a display bug must not abort a half-done run
            self.messages.append(f"ecoma-infra: could not handle an event: {error!r}")
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        stdout = str(event.get("stdout") or "")
        if stdout:
            self.display.ansible_output(stdout)
        host = str(data.get("host") or "")
        task = self.redact(str(data.get("task") or ""))
        raw_res = data.get("res")
        res: dict[str, Any] = raw_res if isinstance(raw_res, dict) else {}
        if kind.startswith("runner_on_") and host:
            self._host_event(kind, host, task, res, ignore_errors=bool(data.get("ignore_errors")))
        elif kind == "playbook_on_play_start":
            self.display.play(self.redact(str(data.get("play") or "")))
        elif kind == "playbook_on_no_hosts_matched":
            self.messages.append("a play matched no hosts (check the inventory and --limit)")
        elif kind == "playbook_on_stats":
            self.stats = data
        elif kind in ("verbose", "warning", "error", "deprecated") and stdout:
            for line in plain_text(stdout).splitlines():
                if line.strip():
                    self.messages.append(self.redact(line.rstrip())[:MAX_MESSAGE])

    def _host_event(
        self, kind: str, host: str, task: str, res: dict[str, Any], *, ignore_errors: bool
    ) -> None:
        state = self._host(host)
        counts = state.counts
        if kind == "runner_on_start":
            state.task = task
            self.display.host_task(self, host)
            return
        status, msg = "", ""
        if kind == "runner_on_ok":
            counts.ok += 1
            counts.changed += bool(res.get("changed"))
            status = "changed" if res.get("changed") else "ok"
        elif kind == "runner_on_skipped":
            counts.skipped += 1
            status = "skipped"
        elif kind == "runner_on_failed" and ignore_errors:
            counts.ok += 1  # as Ansible counts an ignored failure
            counts.ignored += 1
            status, msg = "ignored", self._message(res)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            unreachable = kind == "runner_on_unreachable"
            counts.unreachable += unreachable
            counts.failed += not unreachable
            status = "unreachable" if unreachable else "failed"
            msg = self._message(res)
            self.failures.append(TaskFailure(host, task, msg, unreachable=unreachable))
        if status:
            self.display.host_result(self, host, task, status, msg)

    def _host(self, name: str) -> _HostState:
        return self.hosts.setdefault(name, _HostState())

    def _message(self, res: Mapping[str, Any]) -> str:
        parts: list[str] = []
        if res.get("censored"):
            parts.append(str(res["censored"]))
        if res.get("msg"):
            parts.append(str(res["msg"]))
        for key in ("stderr", "module_stderr"):
            text = str(res.get(key) or "").strip()
            if text and text not in parts:
                parts.append(text)
        for item in res.get("results") or []:
            if isinstance(item, dict) and item.get("failed") and len(parts) < 4:
                label = item.get("_ansible_item_label", item.get("item", ""))
                parts.append(f"item {label}: {self._message(item)}")
        return self.redact("; ".join(parts) or "failed")[:MAX_MESSAGE]

    def result(self, *, rc: int, status: str) -> RunResult:
        hosts = {name: state.counts for name, state in self.hosts.items()}
        if self.stats is not None:  # Ansible's own recap is authoritative
            keys = {
                "ok": "ok",
                "changed": "changed",
                "failures": "failed",
                "dark": "unreachable",
                "skipped": "skipped",
                "rescued": "rescued",
                "ignored": "ignored",
            }
            names: set[str] = set(self.stats.get("processed") or {})
            for stat in keys:
                names.update(self.stats.get(stat) or {})
            hosts = {
                name: HostCounts(
                    **{
                        field_name: int((self.stats.get(stat) or {}).get(name, 0))
                        for stat, field_name in keys.items()
                    }
                )
                for name in names
            }
        messages = list(self.messages)
        if not hosts:
            messages.append("no host was targeted: check the inventory, the plays' hosts, --limit")
        return RunResult(
            rc=rc, status=status, hosts=hosts, failures=list(self.failures), messages=messages
        )


def plain_text(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")
