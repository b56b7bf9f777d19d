"""A real Prometheus for the client's tests: Debian's binary scraping an exporter the test drives.

- `LoadExporter`: the metrics the autoscale queries read (node CPU counters, RabbitMQ queue
  gauges, a Traefik latency histogram), computed from the clock at each scrape so that their
  rates are exactly what the test set.
- `prometheus_lab` (session fixture): the exporter on a free port, and `/usr/bin/prometheus`
  (2.42 on Debian 12) on another, under the `/prometheus` path prefix, scraping it every second
  into a temp TSDB. It waits, bounded, until four scrapes are queryable and stops Prometheus and
  the exporter afterwards whatever happened. Without the binary it skips, or fails when
  ECOMA_LAB_REQUIRED=1 (CI) so that a runner without Prometheus never passes by skipping.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import pytest
import yaml
from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

PROMETHEUS = Path("/usr/bin/prometheus")
REQUIRED_ENV = "ECOMA_LAB_REQUIRED"
PREFIX = "/prometheus"
JOB = "load"
STARTUP_TIMEOUT = 20.0
LOG_TAIL_LINES = 25
SCRAPES = 4
RATE_WINDOW = "3s"  # what the tests use instead of [5m]: covered by SCRAPES of history

DEFAULT_CPU_BUSY = 0.6
DEFAULT_QUEUES = {"orders": 30.0, "mail": 12.0}
# Cumulative share of requests at or below each bucket bound: the p95 falls in (0.25, 0.5],
# 0.05 of the 0.1 share into it, so histogram_quantile interpolates 0.25 + 0.25 * 0.5 = 0.375.
LATENCY_BUCKETS = {"0.1": 0.5, "0.25": 0.9, "0.5": 1.0, "1": 1.0, "+Inf": 1.0}
LATENCY_P95 = 0.375
REQUESTS_PER_SECOND = 20.0


class LoadExporter(Collector):
    """The seed's load signals as a worker node, RabbitMQ and Traefik would export them."""

    def __init__(self, cpus: int = 2) -> None:
        self._lock = threading.Lock()
        self._cpus = cpus
        self._start = time.monotonic()
        self._changed = self._start
        self._idle = 0.0  # idle seconds of each worker CPU up to _changed
        self._busy = DEFAULT_CPU_BUSY
        self.queues = dict(DEFAULT_QUEUES)

    def set_cpu_busy(self, share: float) -> None:
        """From now on, every worker CPU is busy `share` (0..1) of each second."""
        with self._lock:
            now = time.monotonic()
            self._idle += (1.0 - self._busy) * (now - self._changed)
            self._changed, self._busy = now, share

    def reset(self) -> None:
        self.set_cpu_busy(DEFAULT_CPU_BUSY)
        self.queues = dict(DEFAULT_QUEUES)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            idle = self._idle + (1.0 - self._busy) * (now - self._changed)
            elapsed = now - self._start
            # The sample's own time, not the scrape's: a short-window rate() then measures the
            # exporter's clock, whatever the scrape latency on a busy machine.
            stamp = time.time()
        cpu = CounterMetricFamily(
            "node_cpu_seconds",
            "Seconds the CPUs spent in each mode.",
            labels=["node", "cpu", "mode", "ecoma_role"],
        )
        for index in range(self._cpus):
            cpu.add_metric(["wkr-1", str(index), "idle", "wkr"], idle, timestamp=stamp)
            cpu.add_metric(["wkr-1", str(index), "user", "wkr"], elapsed - idle, timestamp=stamp)
        # An idle control-plane CPU: the queries must filter on ecoma_role="wkr".
        cpu.add_metric(["cpl-1", "0", "idle", "cpl"], elapsed, timestamp=stamp)
        yield cpu
        ready = GaugeMetricFamily(
            "rabbitmq_queue_messages_ready", "Messages ready for delivery.", labels=["queue"]
        )
        for queue, messages in sorted(self.queues.items()):
            ready.add_metric([queue], messages)
        yield ready
        requests = REQUESTS_PER_SECOND * elapsed
        latency = HistogramMetricFamily(
            "traefik_service_request_duration_seconds",
            "Request durations at the ingress.",
            labels=["service"],
        )
        latency.add_metric(
            ["web@kubernetes"],
            buckets=[(bound, share * requests) for bound, share in LATENCY_BUCKETS.items()],
            sum_value=0.2 * requests,
        )
        yield latency


@dataclass(frozen=True)
class PrometheusLab:
    """A running Prometheus: `url` is its API base (with the path prefix)."""

    url: str
    root_url: str
    exporter: LoadExporter
    log: Path
    ready_seconds: float  # start until /-/ready
    scraped_seconds: float  # start until three scrapes are queryable


def prometheus_missing(binary: Path = PROMETHEUS) -> None:
    """Skip, or fail under ECOMA_LAB_REQUIRED=1, when the Prometheus binary is not there."""
    if binary.is_file():
        return
    reason = f"{binary} is missing: apt-get install prometheus (scripts/test installs it)"
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRED_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def prometheus_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusLab]:
    prometheus_missing()
    directory = tmp_path_factory.mktemp("prometheus")
    exporter = LoadExporter()
    registry = CollectorRegistry()
    registry.register(exporter)
    server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        config = directory / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": JOB,
                            "static_configs": [{"targets": [f"127.0.0.1:{server.server_port}"]}],
                        }
                    ],
                }
            )
        )
        port = free_port()
        root = f"http://127.0.0.1:{port}"
        log = directory / "prometheus.log"
        with log.open("w") as output:
            yield from _run(exporter, config, root, log, output)
    finally:
        server.shutdown()
        server.server_close()


def _run(
    exporter: LoadExporter, config: Path, root: str, log: Path, output: TextIO
) -> Iterator[PrometheusLab]:
    command = [
        str(PROMETHEUS),
        f"--config.file={config}",
        f"--storage.tsdb.path={config.parent / 'data'}",
        f"--web.listen-address={root.removeprefix('http://')}",
        f"--web.external-url={root}{PREFIX}",
    ]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = root + PREFIX
        deadline = start + STARTUP_TIMEOUT
        _wait(process, log, deadline, "answer /-/ready", lambda: _ready(url))
        ready = time.monotonic() - start
        # 2.42 applies the targets on a 5 s discovery tick, then scrapes every second. Four
        # scrapes are 3 s of history: rate() over [3s] then covers its whole window.
        scraped = f'count_over_time(up{{job="{JOB}"}}[10s]) >= {SCRAPES} and up{{job="{JOB}"}} == 1'
        what = f"scrape the exporter {SCRAPES} times"
        _wait(process, log, deadline, what, lambda: _any(url, scraped))
        yield PrometheusLab(url, root, exporter, log, ready, time.monotonic() - start)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(
    process: subprocess.Popen[bytes],
    log: Path,
    deadline: float,
    what: str,
    done: Callable[[], bool],
) -> None:
    """Poll `done()` every 0.1 s until it is true; fail with the log tail on exit or timeout."""
    while not done():
        if process.poll() is not None:
            _fail(f"Prometheus exited ({process.returncode}) before it would {what}", log)
        if time.monotonic() > deadline:
            _fail(f"Prometheus did not {what} within {STARTUP_TIMEOUT:g} s", log)
        time.sleep(0.1)


def _fail(message: str, log: Path) -> None:
    tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    pytest.fail("\n".join([f"{message}; its log ends:", *tail]), pytrace=False)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _any(url: str, query: str) -> bool:
    """Whether the instant query returns at least one sample."""
    address = f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(address, timeout=1) as response:  # noqa: S310
            document = json.load(response)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return bool(document.get("data", {}).get("result"))
