"""Metrics and events of burst, scale-down, reap, autoscale and drill runs.

Every run writes:
- one JSON log line per event to its log stream (stderr by default): `ts`, `level`, `stack`,
  `operation`, `event` and the event's fields;
- Prometheus metrics (`METRICS`, the contract `monitoring/alerts.yaml` is written against) to a
  node_exporter textfile (`--metrics-file` / `ECOMA_METRICS_FILE`) and/or a Pushgateway
  (`ECOMA_PUSHGATEWAY`).

The commands run once and exit, so the metrics keep their state in what they are written to:
a run reads the previous samples back (the textfile, or the Pushgateway's group), carries the
counters on and replaces what it measured itself. A node whose teardown is in progress keeps a
`ecoma_burst_teardown_started_timestamp_seconds` sample until the teardown ends, so a run that
dies half-way leaves that sample behind for the "stuck" alert.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

Labels = tuple[tuple[str, str], ...]

OPERATIONS = ("burst", "scale_down", "reap", "autoscale", "drill", "deploy")
PHASES = ("plan", "drain", "destroy", "up", "configure", "ready", "tailnet", "verify")

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "ecoma_burst_nodes": ("gauge", "Burst nodes in the pool now."),
    "ecoma_burst_pool_max": ("gauge", "The most nodes the pool may have."),
    "ecoma_burst_nodes_expired": ("gauge", "Running burst nodes past their lease."),
    "ecoma_burst_hourly_cost_usd": ("gauge", "Estimated cost of all burst pools per hour."),
    "ecoma_burst_budget_usd_per_hour": ("gauge", "The stack's cap on the burst pools' cost."),
    "ecoma_burst_operation_failures_total": ("counter", "Failed runs, by the phase that failed."),
    "ecoma_burst_phase_duration_seconds": ("gauge", "How long each phase of the last run took."),
    "ecoma_burst_last_run_timestamp_seconds": ("gauge", "When the operation last ran."),
    "ecoma_burst_last_success_timestamp_seconds": ("gauge", "When the operation last succeeded."),
    "ecoma_burst_teardown_started_timestamp_seconds": (
        "gauge",
        "Present while a node's drain and destroy are in progress: when it started.",
    ),
    "ecoma_burst_node_ready": ("gauge", "1 when the burst node was Ready at the last look."),
    "ecoma_burst_node_launched_timestamp_seconds": ("gauge", "When the burst node was added."),
    "ecoma_autoscale_load_high": ("gauge", "1 when a load signal is above its scale-up mark."),
    "ecoma_autoscale_desired_nodes": ("gauge", "The pool size the last decision asked for."),
    "ecoma_autoscale_decision": ("gauge", "1 for the last decision, its action and reason."),
    "ecoma_autoscale_signal_value": ("gauge", "The last reading of each load signal."),
    "ecoma_credential_expiry_timestamp_seconds": (
        "gauge",
        "When a CI credential expires or is due for rotation.",
    ),
}


def _labels(values: Mapping[str, str]) -> Labels:
    return tuple(sorted((key, str(value)) for key, value in values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(samples: Mapping[tuple[str, Labels], float]) -> str:
    """The Prometheus text format of these samples, metrics in the order of `METRICS`."""
    lines: list[str] = []
    for name, (kind, text) in METRICS.items():
        mine = sorted(
            (labels, value) for (metric, labels), value in samples.items() if metric == name
        )
        if not mine:
            continue
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        for labels, value in mine:
            inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            lines.append(f"{name}{{{inner}}} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def parse(text: str, *, keep: Mapping[str, str] | None = None) -> dict[tuple[str, Labels], float]:
    """Our samples in a Prometheus text exposition; with `keep`, only those whose labels match
    (a Pushgateway adds `job` and `instance`, which are dropped)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    found: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name not in METRICS:
                continue
            labels = dict(sample.labels)
            if keep and any(labels.get(key) != value for key, value in keep.items()):
                continue
            for extra in ("job", "instance"):
                labels.pop(extra, None)
            found[(name, _labels(labels))] = float(sample.value)
    return found


class Telemetry:
    """The events and metrics of one run of one operation on one stack."""

    def __init__(
        self,
        stack: str,
        operation: str,
        *,
        log: TextIO | None = None,
        metrics_file: Path | None = None,
        pushgateway: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stack = stack
        self.operation = operation
        self._log = log if log is not None else sys.stderr
        self._metrics_file = metrics_file
        self._pushgateway = pushgateway.rstrip("/") if pushgateway else None
        self._clock = clock
        self._monotonic = monotonic
        self._samples: dict[tuple[str, Labels], float] = {}
        self._removed: set[tuple[str, Labels]] = set()
        self._removed_matchers: list[tuple[str, dict[str, str]]] = []
        self._failure: str | None = None  # the phase to count, once per sink
        self._counted_in: set[str] = set()
        self.phases: dict[str, float] = {}
        self.failed_phase: str | None = None

    @classmethod
    def from_environment(
        cls, stack: str, operation: str, metrics_file: Path | None = None, **kwargs: Any
    ) -> Telemetry:
        """Where the metrics go: `metrics_file`, else ECOMA_METRICS_FILE; ECOMA_PUSHGATEWAY."""
        if metrics_file is None and os.environ.get("ECOMA_METRICS_FILE"):
            metrics_file = Path(os.environ["ECOMA_METRICS_FILE"])
        pushgateway = os.environ.get("ECOMA_PUSHGATEWAY") or None
        return cls(stack, operation, metrics_file=metrics_file, pushgateway=pushgateway, **kwargs)

    # --- events ------------------------------------------------------------------------------

    def event(self, event: str, *, level: str = "info", **fields: Any) -> None:
        """One structured log line."""
        record = {
            "ts": datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": level,
            "stack": self.stack,
            "operation": self.operation,
            "event": event,
            **fields,
        }
        self._log.write(json.dumps(record, sort_keys=False, default=str) + "\n")
        self._log.flush()

    @contextmanager
    def phase(self, name: str, **fields: Any) -> Iterator[None]:
        """Time a phase; an exception out of it counts as this phase's failure."""
        self.event("phase_started", phase=name, **fields)
        start = self._monotonic()
        try:
            yield
        except BaseException as error:
            seconds = round(self._monotonic() - start, 3)
            self.phases[name] = self.phases.get(name, 0.0) + seconds
            self.fail(name, str(error) or type(error).__name__)
            raise
        seconds = round(self._monotonic() - start, 3)
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        self.event("phase_finished", phase=name, seconds=seconds, **fields)

    def fail(self, phase: str, reason: str) -> None:
        """Record a failure of the run in this phase (once per run)."""
        if self.failed_phase is None:
            self.failed_phase = phase
            self.event("phase_failed", level="error", phase=phase, reason=reason)

    # --- metrics -----------------------------------------------------------------------------

    def set(self, name: str, value: float, **labels: str) -> None:
        if name not in METRICS:
            raise KeyError(f"{name} is not in telemetry.METRICS")
        key = (name, _labels({"stack": self.stack, **labels}))
        self._samples[key] = float(value)
        self._removed.discard(key)

    def clear(self, name: str, **labels: str) -> None:
        """Drop a sample (and any earlier one of the same labels) from what is written."""
        key = (name, _labels({"stack": self.stack, **labels}))
        self._samples.pop(key, None)
        self._removed.add(key)

    def clear_matching(self, name: str, **labels: str) -> None:
        """Drop every sample of `name` whose labels include these (e.g. a removed node's)."""
        self._removed_matchers.append((name, {"stack": self.stack, **labels}))

    def pools(self, config: Any, expired: Mapping[str, int] | None = None) -> None:
        """The gauges of every pool of a `StackConfig` (after this run's change)."""
        expired = expired or {}
        total = 0.0
        for provider, pool in config.burst.pools().items():
            self.set("ecoma_burst_nodes", pool.count, provider=provider)
            self.set("ecoma_burst_pool_max", pool.max, provider=provider)
            self.set("ecoma_burst_nodes_expired", expired.get(provider, 0), provider=provider)
            total += pool.count * pool.hourly_price_usd
        self.set("ecoma_burst_hourly_cost_usd", round(total, 4))
        self.set("ecoma_burst_budget_usd_per_hour", config.burst.budget_usd_per_hour)

    def teardown_started(self, provider: str, node: str) -> None:
        self.set(
            "ecoma_burst_teardown_started_timestamp_seconds",
            round(self._clock()),
            provider=provider,
            node=node,
        )
        self.flush()  # a run that dies from here on leaves the sample for the "stuck" alert

    def teardown_finished(self, provider: str, node: str) -> None:
        self.clear("ecoma_burst_teardown_started_timestamp_seconds", provider=provider, node=node)
        self.clear_matching("ecoma_burst_node_ready", provider=provider, node=node)
        self.clear_matching("ecoma_burst_node_launched_timestamp_seconds", node=node)

    def node_ready(self, provider: str, node: str, *, ready: bool, launched: datetime) -> None:
        self.set("ecoma_burst_node_ready", 1 if ready else 0, provider=provider, node=node)
        self.set(
            "ecoma_burst_node_launched_timestamp_seconds",
            round(launched.timestamp()),
            provider=provider,
            node=node,
        )

    def finish(self, *, success: bool) -> None:
        """The run's own metrics, then write everything out."""
        now = round(self._clock())
        for phase, seconds in self.phases.items():
            self.set(
                "ecoma_burst_phase_duration_seconds",
                seconds,
                operation=self.operation,
                phase=phase,
            )
        self.set("ecoma_burst_last_run_timestamp_seconds", now, operation=self.operation)
        if success:
            self.set("ecoma_burst_last_success_timestamp_seconds", now, operation=self.operation)
        self.event(
            "finished",
            level="info" if success else "error",
            success=success,
            failed_phase=self.failed_phase,
            phases=self.phases,
        )
        self._failure = None if success else (self.failed_phase or "verify")
        self.flush()

    def flush(self) -> None:
        """Merge with what was written before and write it (textfile, Pushgateway)."""
        if self._metrics_file is not None:
            self._write_file(self._metrics_file)
        if self._pushgateway is not None:
            self._push(self._pushgateway)

    def merged(
        self, previous: Mapping[tuple[str, Labels], float], sink: str = "file"
    ) -> dict[tuple[str, Labels], float]:
        """Earlier samples, minus what this run removed, plus this run's, counters carried on."""
        merged = {
            key: value
            for key, value in previous.items()
            if key not in self._removed and not self._matches_removed(key)
        }
        for phase in PHASES:
            key = self._failure_key(phase)
            merged.setdefault(key, 0.0)  # present from the first run: increase() sees a rise
        merged.update(self._samples)
        if self._failure is not None and sink not in self._counted_in:
            key = self._failure_key(self._failure)
            merged[key] = merged.get(key, 0.0) + 1
            self._counted_in.add(sink)
        return merged

    def _failure_key(self, phase: str) -> tuple[str, Labels]:
        labels = {"stack": self.stack, "operation": self.operation, "phase": phase}
        return ("ecoma_burst_operation_failures_total", _labels(labels))

    def _matches_removed(self, key: tuple[str, Labels]) -> bool:
        name, labels = key
        as_dict = dict(labels)
        return any(
            name == metric and all(as_dict.get(k) == v for k, v in wanted.items())
            for metric, wanted in self._removed_matchers
        )

    def _write_file(self, path: Path) -> None:
        previous = parse(path.read_text()) if path.exists() else {}
        text = render(self.merged(previous))
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.replace(path)  # node_exporter never reads a half-written file

    def _push(self, base: str) -> None:
        # One group per stack holding every operation's samples, merged like the textfile: a
        # teardown that `reap` finishes clears what a dead `burst` run left behind.
        group = f"{base}/metrics/job/ecoma-infra/stack/{self.stack}"
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # noqa: S310
                previous = parse(
                    response.read().decode(), keep={"job": "ecoma-infra", "stack": self.stack}
                )
        except (urllib.error.URLError, OSError) as error:
            self.event("metrics_push_failed", level="warning", url=base, reason=str(error))
            return
        # The group's own label (stack) is added back by the Pushgateway on exposition.
        body = render(
            {
                (name, tuple(item for item in labels if item[0] != "stack")): value
                for (name, labels), value in self.merged(previous, "push").items()
                if dict(labels).get("stack") == self.stack
            }
        )
        request = urllib.request.Request(group, data=body.encode(), method="PUT")  # noqa: S310
        request.add_header("Content-Type", "text/plain; version=0.0.4")
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except (urllib.error.URLError, OSError) as error:
            # Metrics are never a reason to fail a burst; the log line says they were lost.
            self.event("metrics_push_failed", level="warning", url=base, reason=str(error))
