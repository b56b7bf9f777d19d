"""The Prometheus client against a real Prometheus (see prometheus_server.py), then end to end:
exporter values -> PrometheusClient.read -> decide.

The staging queries rate() over [5m]; a Prometheus a few seconds old has too little history for
that (rate() divides by the whole window), so the numeric checks use the same queries over [3s],
a window the fixture's history covers.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_server import (
    DEFAULT_CPU_BUSY,
    DEFAULT_QUEUES,
    LATENCY_P95,
    RATE_WINDOW,
    PrometheusLab,
    free_port,
    prometheus_missing,
)
from stacks import ROOT

from ecoma_infra.burst.autoscale import decide
from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.prometheus import PrometheusClient
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import AutoscaleSettings, BurstSettings, MetricRule

STAGING = load_stack_file(ROOT / "Pulumi.staging.yaml").config.burst
QUEUE_TOTAL = sum(DEFAULT_QUEUES.values())


def staging_autoscale() -> AutoscaleSettings:
    assert STAGING.autoscale is not None
    return STAGING.autoscale


def fast(settings: AutoscaleSettings) -> AutoscaleSettings:
    """The same queries with rate() over RATE_WINDOW instead of [5m]."""
    changes: dict[str, MetricRule] = {}
    for name, rule in settings.rules().items():
        query = rule.query.replace("[5m]", f"[{RATE_WINDOW}]")
        changes[name] = rule.model_copy(update={"query": query})
    return settings.model_copy(update=changes)


def fast_burst() -> BurstSettings:
    return STAGING.model_copy(update={"autoscale": fast(staging_autoscale())})


@pytest.fixture
def lab(prometheus_lab: PrometheusLab) -> Iterator[PrometheusLab]:
    """The shared Prometheus, its exporter back at the default values after each test."""
    yield prometheus_lab
    prometheus_lab.exporter.reset()


@pytest.fixture
def client(lab: PrometheusLab) -> PrometheusClient:
    return PrometheusClient(lab.url, timeout=5)


def test_the_staging_queries_over_a_short_window_return_what_the_exporter_set(
    client: PrometheusClient,
) -> None:
    rules = staging_autoscale().rules()
    assert "[5m]" in rules["cpu"].query
    assert "[5m]" in rules["latency"].query
    settings = fast(staging_autoscale())
    assert client.value(settings.cpu.query) == pytest.approx(DEFAULT_CPU_BUSY, abs=0.02)
    assert client.value(settings.queue.query) == QUEUE_TOTAL
    assert client.value(settings.latency.query) == pytest.approx(LATENCY_P95, abs=1e-6)


def test_the_exact_staging_queries_are_valid_and_answer(client: PrometheusClient) -> None:
    settings = staging_autoscale()
    cpu = client.value(settings.cpu.query)
    assert cpu is not None
    assert 0.0 <= cpu <= 1.0  # rate over [5m] of a few seconds of data: too little history
    assert client.value(settings.queue.query) == QUEUE_TOTAL
    # Every bucket's rate is scaled alike, so the quantile is exact even over [5m].
    assert client.value(settings.latency.query) == pytest.approx(LATENCY_P95, abs=1e-6)


def test_read_returns_all_three_signals(client: PrometheusClient) -> None:
    readings = client.read(fast(staging_autoscale()))
    assert list(readings) == ["cpu", "queue", "latency"]
    assert readings["cpu"] == pytest.approx(DEFAULT_CPU_BUSY, abs=0.02)
    assert readings["queue"] == QUEUE_TOTAL
    assert readings["latency"] == pytest.approx(LATENCY_P95, abs=1e-6)


def test_scalar_results_are_numbers(client: PrometheusClient) -> None:
    assert client.value("scalar(sum(rabbitmq_queue_messages_ready))") == QUEUE_TOTAL
    assert client.value("1 + 1") == 2.0


def test_a_query_matching_no_series_is_no_reading(client: PrometheusClient) -> None:
    assert client.value('sum(rabbitmq_queue_messages_ready{queue="absent"})') is None
    assert client.value("no_such_metric_total") is None


def test_nan_is_no_reading(client: PrometheusClient) -> None:
    assert client.value("0 / 0") is None
    assert client.value("sum(rabbitmq_queue_messages_ready) / 0 * 0") is None


def test_two_series_ask_for_an_aggregation(client: PrometheusClient) -> None:
    with pytest.raises(EcomaError) as caught:
        client.value("rabbitmq_queue_messages_ready")
    message = str(caught.value)
    assert "query 'rabbitmq_queue_messages_ready' returned 2 series" in message
    assert 'queue="orders"' in message
    assert "sum(...) or avg(...)" in message


@pytest.mark.parametrize(
    ("query", "kind"),
    [("rabbitmq_queue_messages_ready[1m]", "matrix"), ('"ecoma"', "string")],
)
def test_a_matrix_or_a_string_is_refused(client: PrometheusClient, query: str, kind: str) -> None:
    with pytest.raises(EcomaError, match=rf"returned a {kind}, not one number"):
        client.value(query)


def test_invalid_promql_carries_prometheus_message(client: PrometheusClient) -> None:
    with pytest.raises(EcomaError) as caught:
        client.value("sum(rabbitmq_queue_messages_ready")
    message = str(caught.value)
    assert "Prometheus rejected the query 'sum(rabbitmq_queue_messages_ready': bad_data:" in message
    assert "parse error" in message


def test_a_url_without_the_path_prefix_is_not_the_api(lab: PrometheusLab) -> None:
    with pytest.raises(EcomaError) as caught:
        PrometheusClient(lab.root_url).value("up")
    message = str(caught.value)
    assert f"{lab.root_url}/api/v1/query gave HTTP 404" in message
    assert "check the --prometheus URL" in message


def test_a_trailing_slash_is_fine(lab: PrometheusLab) -> None:
    assert (
        PrometheusClient(lab.url + "/").value("sum(rabbitmq_queue_messages_ready)") == QUEUE_TOTAL
    )


def test_an_unreachable_url_says_what_to_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}/prometheus"
    with pytest.raises(EcomaError) as caught:
        PrometheusClient(url).value("up")
    message = str(caught.value)
    assert f"cannot reach Prometheus at {url}: " in message
    assert "Connection refused" in message
    assert "Fix: check the --prometheus URL" in message


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # connections complete in the backlog; nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(EcomaError, match=r"timed out .*timeout 0\.3 s.*--prometheus URL"):
            PrometheusClient(url, timeout=0.3).value("up")
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("url", ["prometheus:9090", "ftp://host/prometheus", "http://"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(EcomaError, match="is not an http\\(s\\) URL of Prometheus"):
        PrometheusClient(url)


def test_end_to_end_a_long_queue_scales_up(lab: PrometheusLab, client: PrometheusClient) -> None:
    burst = fast_burst()
    assert burst.autoscale is not None
    now = datetime.now(UTC)
    calm = decide(burst, client.read(burst.autoscale), now)
    assert calm.action == "hold"
    assert calm.reason.startswith("inside the hysteresis band")
    assert not calm.load_high

    lab.exporter.queues["orders"] = 5000.0
    deadline = time.monotonic() + 5
    while (readings := client.read(burst.autoscale))["queue"] != 5012.0:
        assert time.monotonic() < deadline, f"the new queue length never showed: {readings}"
        time.sleep(0.1)
    decision = decide(burst, readings, now)
    assert decision.action == "up"
    assert decision.load_high
    assert decision.reason == "queue 5012 > 1000: add 1 node to aws"
    assert decision.desired == {"aws": 1, "gcp": 0, "oci": 0}


def test_prometheus_started_quickly(lab: PrometheusLab) -> None:
    """Startup is the bulk of this module's runtime: keep it visible and bounded."""
    assert lab.ready_seconds < lab.scraped_seconds < 15


def test_a_missing_binary_skips_or_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "prometheus"
    monkeypatch.delenv("ECOMA_LAB_REQUIRED", raising=False)
    with pytest.raises(pytest.skip.Exception, match="is missing: apt-get install prometheus"):
        prometheus_missing(missing)
    monkeypatch.setenv("ECOMA_LAB_REQUIRED", "1")
    with pytest.raises(pytest.fail.Exception, match="ECOMA_LAB_REQUIRED=1 forbids skipping"):
        prometheus_missing(missing)
