"""Metrics and events of burst, scale-down, reap, autoscale and drill runs.

Every run writes:
- one JSON log line per event to its log stream (stderr by default): `ts`, `level`, `stack`,
  `operation`, `event` and the event's fields;
- Prometheus metrics (`METRICS` and their labels `LABELS`, the contract `monitoring/alerts.yaml`
  is written against) to a node_exporter textfile (`--metrics-file` / `ECOMA_METRICS_FILE`)
  and/or a Pushgateway (`ECOMA_PUSHGATEWAY`).

The commands run once and exit, so the metrics keep their state in what they are written to:
each flush reads the previous samples back (the textfile, or the stack's Pushgateway group
`job/ecoma-infra/stack/<stack>`), drops what this run cleared, carries the counters on and
replaces what the run measured itself. A failed run adds 1 to its phase's failure counter once
per sink, however often it flushes. A node whose teardown is in progress keeps a
`ecoma_burst_teardown_started_timestamp_seconds` sample until the teardown ends, so a run that
dies half-way leaves that sample behind for the "stuck" alert.

Metrics never fail a run: a textfile that cannot be read or parsed is moved aside to
`<file>.corrupt` and written afresh (its counters start again at 0; `increase()` copes with the
reset), with a `metrics_file_corrupt` warning; a textfile that cannot be written logs
`metrics_write_failed`; an unreachable or refusing Pushgateway logs `metrics_push_failed` and
its group is left as it was (a push without the previous samples would lose the counters).
Runs that overlap are serialised on the textfile by a lock file next to it; the Pushgateway's
read-then-PUT has no such lock.
"""

from __future__ import annotations

import base64
import fcntl
import json
import math
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

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
    "ecoma_k3s_certificate_expiry_timestamp_seconds": (
        "gauge",
        "When the first of a k3s server's own certificates (not its CAs) expires.",
    ),
}

# name -> the labels of each of its samples (`set` adds `stack`)
LABELS: dict[str, frozenset[str]] = {
    "ecoma_burst_nodes": frozenset({"stack", "provider"}),
    "ecoma_burst_pool_max": frozenset({"stack", "provider"}),
    "ecoma_burst_nodes_expired": frozenset({"stack", "provider"}),
    "ecoma_burst_hourly_cost_usd": frozenset({"stack"}),
    "ecoma_burst_budget_usd_per_hour": frozenset({"stack"}),
    "ecoma_burst_operation_failures_total": frozenset({"stack", "operation", "phase"}),
    "ecoma_burst_phase_duration_seconds": frozenset({"stack", "operation", "phase"}),
    "ecoma_burst_last_run_timestamp_seconds": frozenset({"stack", "operation"}),
    "ecoma_burst_last_success_timestamp_seconds": frozenset({"stack", "operation"}),
    "ecoma_burst_teardown_started_timestamp_seconds": frozenset({"stack", "provider", "node"}),
    "ecoma_burst_node_ready": frozenset({"stack", "provider", "node"}),
    "ecoma_burst_node_launched_timestamp_seconds": frozenset({"stack", "provider", "node"}),
    "ecoma_autoscale_load_high": frozenset({"stack"}),
    "ecoma_autoscale_desired_nodes": frozenset({"stack", "provider"}),
    "ecoma_autoscale_decision": frozenset({"stack", "action", "reason"}),
    "ecoma_autoscale_signal_value": frozenset({"stack", "signal"}),
    "ecoma_credential_expiry_timestamp_seconds": frozenset({"stack", "credential"}),
    "ecoma_k3s_certificate_expiry_timestamp_seconds": frozenset({"stack", "node"}),
}

JOB = "ecoma-infra"
FAILURES = "ecoma_burst_operation_failures_total"
HTTP_TIMEOUT = 10.0
_FILE, _PUSH = "file", "push"
_REASON_CHARS = 300
_PHASE_KEYS = frozenset({"level", "phase", "reason", "seconds"})  # the phase events' own


def _labels(values: Mapping[str, str]) -> Labels:
    return tuple(sorted((key, str(value)) for key, value in values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render(samples: Mapping[tuple[str, Labels], float]) -> str:
    """The Prometheus text format (0.0.4) of the samples of `METRICS`, in its order; others are
    left out."""
    lines: list[str] = []
    for name, (kind, text) in METRICS.items():
        mine = sorted(
            (labels, value) for (metric, labels), value in samples.items() if metric == name
        )
        if not mine:
            continue
        help_text = text.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in mine:
            inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels)
            series = f"{name}{{{inner}}}" if inner else name
            lines.append(f"{series} {_number(value)}")
    return "\n".join(lines) + "\n" if lines else ""


def parse(text: str, *, keep: Mapping[str, str] | None = None) -> Samples:
    """The samples of `METRICS` in a Prometheus text exposition; with `keep`, only those whose
    labels match it. `job` and `instance` (added by a Pushgateway) are dropped.

    Raises ValueError on text that is not the text format."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    found: Samples = {}
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
        self._pushgateway = _base_url(pushgateway) if pushgateway else None
        self._clock = clock
        self._monotonic = monotonic
        self._samples: Samples = {}
        self._removed: set[tuple[str, Labels]] = set()
        self._removed_matchers: list[tuple[str, dict[str, str]]] = []
        self._failure: str | None = None  # the phase whose counter this run adds 1 to
        self._counted_in: set[str] = set()  # the sinks that hold that 1 already
        self.phases: dict[str, float] = {}
        self.failed_phase: str | None = None

    @property
    def operation(self) -> str:
        """The operation the run's samples are labelled with (one of `OPERATIONS`)."""
        return self._operation

    @operation.setter
    def operation(self, value: str) -> None:
        if value not in OPERATIONS:
            raise ValueError(f"operation {value!r} is not one of {', '.join(OPERATIONS)}")
        self._operation = value

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
        """One JSON log line; a field named like a fixed key is written as `_<name>`."""
        record: dict[str, Any] = {
            "ts": datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": level,
            "stack": self.stack,
            "operation": self.operation,
            "event": event,
        }
        for key, value in fields.items():
            record[f"_{key}" if key in record else key] = value
        self._log.write(json.dumps(record, default=str) + "\n")
        self._log.flush()

    @contextmanager
    def phase(self, name: str, **fields: Any) -> Iterator[None]:
        """Time a phase; an exception out of it is the run's failure (if it is the first),
        logged as `phase_failed` and raised again."""
        _check_phase(name)
        reserved = sorted(_PHASE_KEYS.intersection(fields))
        if reserved:
            raise ValueError(f"phase fields may not be named {', '.join(reserved)}")
        self.event("phase_started", phase=name, **fields)
        start = self._monotonic()
        try:
            yield
        except BaseException as error:
            seconds = self._add_time(name, start)
            self.fail(name, str(error) or type(error).__name__, seconds=seconds, **fields)
            raise
        seconds = self._add_time(name, start)
        self.event("phase_finished", phase=name, seconds=seconds, **fields)

    def _add_time(self, name: str, start: float) -> float:
        seconds = round(self._monotonic() - start, 3)
        self.phases[name] = self.phases.get(name, 0.0) + seconds
        return seconds

    def fail(self, phase: str, reason: str, **fields: Any) -> None:
        """Record the run's failure in this phase: only the first call of a run counts (and is
        logged), so nested phases that one exception passes through count once."""
        _check_phase(phase)
        if self.failed_phase is None:
            self.failed_phase = phase
            self.event("phase_failed", level="error", phase=phase, reason=reason, **fields)

    # --- metrics -----------------------------------------------------------------------------

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a sample of this run (labelled with the stack and `labels`)."""
        key = self._key(name, labels)
        self._samples[key] = float(value)
        self._removed.discard(key)

    def clear(self, name: str, **labels: str) -> None:
        """Drop a sample (and any earlier one of the same labels) from what is written."""
        key = self._key(name, labels)
        self._samples.pop(key, None)
        self._removed.add(key)

    def clear_matching(self, name: str, **labels: str) -> None:
        """Drop every sample of `name` whose labels include these (e.g. a removed node's), set
        by this run so far or written before; a later `set` adds one back."""
        if name not in METRICS:
            raise KeyError(f"{name} is not in telemetry.METRICS")
        wanted = {"stack": self.stack, **labels}
        self._removed_matchers.append((name, wanted))
        for key in [key for key in self._samples if _matches(key, name, wanted)]:
            del self._samples[key]

    def pools(self, config: Any, expired: Mapping[str, int] | None = None) -> None:
        """The gauges of every pool of a `StackConfig` (after this run's change); a provider
        that is no longer configured loses its samples."""
        expired = expired or {}
        for name in ("ecoma_burst_nodes", "ecoma_burst_pool_max", "ecoma_burst_nodes_expired"):
            self.clear_matching(name)
        total = 0.0
        for provider, pool in config.burst.pools().items():
            self.set("ecoma_burst_nodes", pool.count, provider=provider)
            self.set("ecoma_burst_pool_max", pool.max, provider=provider)
            self.set("ecoma_burst_nodes_expired", expired.get(provider, 0), provider=provider)
            total += pool.hourly_cost()
        self.set("ecoma_burst_hourly_cost_usd", round(total, 4))
        self.set("ecoma_burst_budget_usd_per_hour", config.burst.budget_usd_per_hour)

    def teardown_started(self, provider: str, node: str) -> None:
        """Mark the node's teardown in progress, and write it out at once."""
        self.set(
            "ecoma_burst_teardown_started_timestamp_seconds",
            round(self._clock()),
            provider=provider,
            node=node,
        )
        self.flush()  # a run that dies from here on leaves the sample for the "stuck" alert

    def teardown_finished(self, provider: str, node: str) -> None:
        """The node is gone (or stays): drop its teardown mark and its node samples."""
        self.clear("ecoma_burst_teardown_started_timestamp_seconds", provider=provider, node=node)
        self.clear_matching("ecoma_burst_node_ready", node=node)
        self.clear_matching("ecoma_burst_node_launched_timestamp_seconds", node=node)

    def node_ready(self, provider: str, node: str, *, ready: bool, launched: datetime) -> None:
        """Whether a burst node is Ready, and when it was launched."""
        self.set("ecoma_burst_node_ready", 1 if ready else 0, provider=provider, node=node)
        self.set(
            "ecoma_burst_node_launched_timestamp_seconds",
            round(launched.timestamp()),
            provider=provider,
            node=node,
        )

    def finish(self, *, success: bool) -> None:
        """The run's own metrics, then write everything out. A failure outside any phase
        counts as `verify`."""
        if not success and self.failed_phase is None:
            self.fail("verify", "the run failed outside a timed phase")
        now = round(self._clock())
        self.clear_matching("ecoma_burst_phase_duration_seconds", operation=self.operation)
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
        self._failure = None if success else self.failed_phase
        self.flush()

    def flush(self) -> None:
        """Merge with what was written before and write it (textfile, Pushgateway). Never
        raises for the sinks: what went wrong is logged."""
        if self._metrics_file is not None:
            self._write_file(self._metrics_file)
        if self._pushgateway is not None:
            self._push(self._pushgateway)

    def merged(self, previous: Mapping[tuple[str, Labels], float], sink: str = _FILE) -> Samples:
        """Earlier samples, minus what this run removed, plus this run's; the failure counters
        of this operation from 0, and +1 for a failed run unless `sink` holds it already."""
        merged = {
            key: value
            for key, value in previous.items()
            if key not in self._removed and not self._matches_removed(key)
        }
        for phase in PHASES:
            merged.setdefault(self._failure_key(phase), 0.0)  # so increase() sees a first rise
        merged.update(self._samples)
        if self._failure is not None and sink not in self._counted_in:
            merged[self._failure_key(self._failure)] += 1
        return merged

    def _key(self, name: str, labels: Mapping[str, str]) -> tuple[str, Labels]:
        if name not in METRICS:
            raise KeyError(f"{name} is not in telemetry.METRICS")
        values = {"stack": self.stack, **labels}
        if set(values) != LABELS[name]:
            expected = ", ".join(sorted(LABELS[name]))
            raise ValueError(f"{name} takes the labels {expected}, not {', '.join(values)}")
        return (name, _labels(values))

    def _failure_key(self, phase: str) -> tuple[str, Labels]:
        return self._key(FAILURES, {"operation": self.operation, "phase": phase})

    def _matches_removed(self, key: tuple[str, Labels]) -> bool:
        return any(_matches(key, name, wanted) for name, wanted in self._removed_matchers)

    # --- sinks -------------------------------------------------------------------------------

    def _write_file(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _locked(path.with_name(f".{path.name}.lock")):
                text = render(self.merged(self._read_file(path), _FILE))
                _replace(path, text)
        except OSError as error:
            self.event("metrics_write_failed", level="error", path=str(path), reason=str(error))
            return
        if self._failure is not None:
            self._counted_in.add(_FILE)

    def _read_file(self, path: Path) -> Samples:
        """The previous samples; an unreadable or corrupt file is moved aside."""
        try:
            return parse(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return {}
        except IsADirectoryError:
            raise
        except (OSError, ValueError) as error:
            kept = path.with_name(f"{path.name}.corrupt")
            path.replace(kept)
            self.event(
                "metrics_file_corrupt",
                level="warning",
                path=str(path),
                kept=str(kept),
                reason=_short(str(error) or type(error).__name__),
            )
            return {}

    def _push(self, base: str) -> None:
        # One group per stack holding every operation's samples, merged like the textfile: a
        # teardown that `reap` finishes clears what a dead `burst` run left behind.
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=HTTP_TIMEOUT) as response:  # noqa: S310
                exposed = response.read().decode("utf-8")
            previous = parse(exposed, keep={"job": JOB, "stack": self.stack})
            # The group's key carries `stack`: the samples are pushed without it.
            body = render(
                {
                    (name, tuple(item for item in labels if item[0] != "stack")): value
                    for (name, labels), value in self.merged(previous, _PUSH).items()
                    if dict(labels).get("stack") == self.stack
                }
            )
            request = urllib.request.Request(  # noqa: S310
                _group_url(base, self.stack), data=body.encode(), method="PUT"
            )
            request.add_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT):  # noqa: S310
                pass
        except (OSError, ValueError) as error:  # URLError and HTTPError are OSErrors
            # Metrics are never a reason to fail a burst; the log line says they were lost.
            self.event("metrics_push_failed", level="warning", url=base, reason=_http_reason(error))
            return
        if self._failure is not None:
            self._counted_in.add(_PUSH)


def _check_phase(name: str) -> None:
    if name not in PHASES:
        raise ValueError(f"phase {name!r} is not one of {', '.join(PHASES)}")


def _matches(key: tuple[str, Labels], name: str, wanted: Mapping[str, str]) -> bool:
    labels = dict(key[1])
    return key[0] == name and all(labels.get(k) == v for k, v in wanted.items())


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on this file (created if missing) for the block."""
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _replace(path: Path, text: str) -> None:
    """Write `path` atomically: node_exporter never reads a half-written file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # not *.prom: never collected
    try:
        with temporary.open("w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        temporary.chmod(0o644)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _base_url(pushgateway: str) -> str:
    base = pushgateway.strip().rstrip("/")
    return base if "://" in base else f"http://{base}"


def _group_url(base: str, stack: str) -> str:
    """The URL of the stack's group; a value a path segment cannot hold goes as base64."""
    if stack and "/" not in stack:
        return f"{base}/metrics/job/{JOB}/stack/{urllib.parse.quote(stack, safe='')}"
    encoded = base64.urlsafe_b64encode(stack.encode()).decode() or "="
    return f"{base}/metrics/job/{JOB}/stack@base64/{encoded}"


def _http_reason(error: BaseException) -> str:
    reason = str(error) or type(error).__name__
    if isinstance(error, urllib.error.HTTPError):
        try:
            detail = error.read().decode("utf-8", "replace").strip()
        except OSError:
            detail = ""
        if detail:
            reason = f"{reason}: {detail}"
    return _short(reason)


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 3] + "..."
