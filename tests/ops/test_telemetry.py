"""Telemetry of the one-shot commands: the JSON events, the textfile and a real Pushgateway.

The textfile is checked with `promtool check metrics` and the Pushgateway tests run Debian's
`prometheus-pushgateway` on a free 127.0.0.1 port. Either binary missing: those tests skip, or
fail when ECOMA_LAB_REQUIRED=1 (CI).
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ecoma_infra.ops.telemetry import (
    FAILURES,
    JOB,
    LABELS,
    METRICS,
    OPERATIONS,
    PHASES,
    Samples,
    Telemetry,
    parse,
    render,
)

PROMTOOL = Path("/usr/bin/promtool")
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
REQUIRED_ENV = "ECOMA_LAB_REQUIRED"
STARTUP_TIMEOUT = 10.0
T0 = 1_800_000_000.0
LAUNCHED = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


# ------------------------------------------------------------------ helpers


def require(binary: Path, package: str) -> None:
    """Skip, or fail under ECOMA_LAB_REQUIRED=1, when `binary` is not installed."""
    if binary.is_file():
        return
    reason = f"{binary} is missing: apt-get install {package} (scripts/test installs it)"
    if os.environ.get(REQUIRED_ENV) == "1":
        pytest.fail(f"{reason}; {REQUIRED_ENV}=1 forbids skipping", pytrace=False)
    pytest.skip(reason)


def telemetry(
    operation: str,
    *,
    at: float = T0,
    stack: str = "staging",
    metrics_file: Path | None = None,
    pushgateway: str | None = None,
) -> tuple[Telemetry, io.StringIO]:
    log = io.StringIO()
    made = Telemetry(
        stack,
        operation,
        log=log,
        metrics_file=metrics_file,
        pushgateway=pushgateway,
        clock=lambda: at,
        monotonic=time.monotonic,
    )
    return made, log


def events(log: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def named(log: io.StringIO, event: str) -> list[dict[str, Any]]:
    return [record for record in events(log) if record["event"] == event]


def values(samples: Samples, name: str, **wanted: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of `name` whose labels include `wanted`, by their labels."""
    return {
        labels: value
        for (metric, labels), value in samples.items()
        if metric == name and all((key, val) in labels for key, val in wanted.items())
    }


def one(samples: Samples, name: str, **wanted: str) -> float:
    found = values(samples, name, **wanted)
    assert len(found) == 1, f"{name}{wanted}: {found}"
    return next(iter(found.values()))


def stack_config(**pools: tuple[int, int]) -> Any:
    """A stand-in `StackConfig`: provider=(count, max) at 0.5 USD/h a node, budget 2 USD/h."""
    made = {
        provider: SimpleNamespace(
            count=count,
            max=most,
            hourly_price_usd=0.5,
            hourly_cost=lambda count=count: count * 0.5,
        )
        for provider, (count, most) in pools.items()
    }
    return SimpleNamespace(burst=SimpleNamespace(pools=lambda: made, budget_usd_per_hour=2.0))


def fail_in(run: Telemetry, phase: str, message: str = "boom") -> None:
    with pytest.raises(RuntimeError, match=message), run.phase(phase):
        raise RuntimeError(message)


# ------------------------------------------------------------------ the text format


def test_render_escapes_label_values_and_parse_reads_them_back() -> None:
    tricky = 'a "quoted" \\ back\nslash'
    samples: Samples = {
        (
            "ecoma_credential_expiry_timestamp_seconds",
            (("credential", tricky), ("stack", "staging")),
        ): 1.5e9,
        ("ecoma_burst_hourly_cost_usd", (("stack", "staging"),)): 0.125,
        ("ecoma_autoscale_signal_value", (("signal", "cpu"), ("stack", "staging"))): float("inf"),
        ("not_ours", (("stack", "staging"),)): 1.0,
    }

    text = render(samples)

    assert 'credential="a \\"quoted\\" \\\\ back\\nslash"' in text
    assert 'ecoma_burst_hourly_cost_usd{stack="staging"} 0.125\n' in text
    assert "+Inf" in text
    assert "not_ours" not in text
    assert parse(text) == {key: value for key, value in samples.items() if key[0] in METRICS}


def test_the_contract_labels_cover_every_metric() -> None:
    assert set(LABELS) == set(METRICS)
    assert all("stack" in labels for labels in LABELS.values())
    assert METRICS[FAILURES][0] == "counter"


def test_samples_outside_the_contract_are_refused() -> None:
    run, _ = telemetry("burst")

    with pytest.raises(KeyError, match=r"not in telemetry\.METRICS"):
        run.set("ecoma_burst_nodez", 1, provider="aws")
    with pytest.raises(ValueError, match="takes the labels provider, stack"):
        run.set("ecoma_burst_nodes", 1, provder="aws")
    with pytest.raises(ValueError, match="operation 'bursting'"):
        run.operation = "bursting"
    with pytest.raises(ValueError, match="phase 'boot'"), run.phase("boot"):
        pass


# ------------------------------------------------------------------ events


def test_events_are_json_lines_with_the_fixed_keys_first() -> None:
    run, log = telemetry("reap")

    run.event("leases_found", count=2, stack="not-the-stack")
    with run.phase("plan", provider="aws"):
        pass
    run.finish(success=True)

    records = events(log)
    assert [r["event"] for r in records] == [
        "leases_found",
        "phase_started",
        "phase_finished",
        "finished",
    ]
    for record in records:
        assert list(record)[:5] == ["ts", "level", "stack", "operation", "event"]
        assert (record["stack"], record["operation"]) == ("staging", "reap")
        assert datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=UTC
        ).timestamp() == pytest.approx(T0)
    assert records[0]["count"] == 2
    assert records[0]["_stack"] == "not-the-stack"  # a field never overwrites a fixed key
    assert records[2]["provider"] == "aws"
    assert records[3]["success"] is True


def test_a_failing_phase_logs_phase_failed_once_and_raises_again() -> None:
    run, log = telemetry("burst")

    with (
        pytest.raises(RuntimeError, match="quota exceeded"),
        run.phase("up", nodes=["n1"]),
        run.phase("configure"),
    ):
        raise RuntimeError("quota exceeded")

    (failed,) = named(log, "phase_failed")
    assert failed["level"] == "error"
    assert failed["phase"] == "configure"
    assert failed["reason"] == "quota exceeded"
    assert not named(log, "phase_finished")
    assert run.failed_phase == "configure"
    assert set(run.phases) == {"up", "configure"}


def test_a_failure_outside_a_phase_counts_as_verify() -> None:
    run, log = telemetry("burst")

    run.finish(success=False)

    assert run.failed_phase == "verify"
    assert named(log, "phase_failed")[0]["phase"] == "verify"
    assert named(log, "finished")[0]["level"] == "error"


# ------------------------------------------------------------------ the textfile


def test_textfile_runs_of_two_operations_merge(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "ecoma.prom"
    burst, _ = telemetry("burst", at=T0, metrics_file=path)
    burst.pools(stack_config(aws=(1, 3)))
    burst.finish(success=True)

    reap, _ = telemetry("reap", at=T0 + 600, metrics_file=path)
    reap.pools(stack_config(aws=(0, 3)))
    reap.finish(success=True)

    samples = parse(path.read_text())
    last_run = "ecoma_burst_last_run_timestamp_seconds"
    assert one(samples, last_run, operation="burst") == T0
    assert one(samples, last_run, operation="reap") == T0 + 600
    assert one(samples, "ecoma_burst_last_success_timestamp_seconds", operation="burst") == T0
    assert one(samples, "ecoma_burst_nodes", provider="aws") == 0  # the later run's value
    assert not list(tmp_path.glob("textfile/*.tmp"))


def test_textfile_zeros_every_phase_from_the_first_run(tmp_path: Path) -> None:
    path = tmp_path / "ecoma.prom"
    run, _ = telemetry("drill", metrics_file=path)

    run.finish(success=True)

    failures = values(parse(path.read_text()), FAILURES, operation="drill")
    assert sorted(dict(labels)["phase"] for labels in failures) == sorted(PHASES)
    assert set(failures.values()) == {0.0}


def test_textfile_counts_a_failed_run_once_however_often_it_flushes(tmp_path: Path) -> None:
    path = tmp_path / "ecoma.prom"
    run, _ = telemetry("scale_down", metrics_file=path)
    run.teardown_started("aws", "wkr-aws-1")  # flushes before the failure
    fail_in(run, "drain", "PodDisruptionBudget")
    run.finish(success=False)
    run.flush()
    run.flush()

    samples = parse(path.read_text())
    assert one(samples, FAILURES, operation="scale_down", phase="drain") == 1
    assert sum(values(samples, FAILURES).values()) == 1

    again, _ = telemetry("scale_down", at=T0 + 60, metrics_file=path)
    fail_in(again, "drain")
    again.finish(success=False)
    again.flush()

    samples = parse(path.read_text())
    assert one(samples, FAILURES, operation="scale_down", phase="drain") == 2  # carried on
    assert one(samples, FAILURES, operation="scale_down", phase="destroy") == 0


def test_textfile_teardown_finished_removes_the_node_samples(tmp_path: Path) -> None:
    path = tmp_path / "ecoma.prom"
    burst, _ = telemetry("burst", metrics_file=path)
    for node in ("wkr-aws-1", "wkr-aws-2"):
        burst.node_ready("aws", node, ready=True, launched=LAUNCHED)
    burst.finish(success=True)

    reap, _ = telemetry("reap", at=T0 + 3600, metrics_file=path)
    reap.node_ready("aws", "wkr-aws-3", ready=False, launched=LAUNCHED)  # set by this run
    reap.teardown_started("aws", "wkr-aws-1")
    during = parse(path.read_text())
    assert one(during, "ecoma_burst_teardown_started_timestamp_seconds", node="wkr-aws-1") == (
        T0 + 3600
    )
    for node in ("wkr-aws-1", "wkr-aws-3"):
        reap.teardown_finished("aws", node)
    reap.finish(success=True)

    after = parse(path.read_text())
    assert not values(after, "ecoma_burst_teardown_started_timestamp_seconds")
    for name in ("ecoma_burst_node_ready", "ecoma_burst_node_launched_timestamp_seconds"):
        assert not values(after, name, node="wkr-aws-1")
        assert not values(after, name, node="wkr-aws-3")
        assert one(after, name, node="wkr-aws-2") > 0


def test_textfile_keeps_only_the_last_run_phases_and_configured_pools(tmp_path: Path) -> None:
    path = tmp_path / "ecoma.prom"
    first, _ = telemetry("burst", metrics_file=path)
    with first.phase("plan"), first.phase("up"):
        pass
    first.pools(stack_config(aws=(1, 3), gcp=(1, 2)))
    first.finish(success=True)

    second, _ = telemetry("burst", metrics_file=path)
    fail_in(second, "plan")
    second.pools(stack_config(aws=(1, 3)))
    second.finish(success=False)

    samples = parse(path.read_text())
    durations = values(samples, "ecoma_burst_phase_duration_seconds", operation="burst")
    assert [dict(labels)["phase"] for labels in durations] == ["plan"]
    assert [dict(labels)["provider"] for labels in values(samples, "ecoma_burst_nodes")] == ["aws"]
    assert one(samples, "ecoma_burst_hourly_cost_usd") == 0.5


@pytest.mark.parametrize(
    "content",
    [b'ecoma_burst_nodes{stack="staging" 1\n', b"\xff\xfe\x00garbage"],
    ids=["broken-line", "not-utf8"],
)
def test_textfile_corrupt_previous_is_kept_aside_and_the_run_written(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "ecoma.prom"
    path.write_bytes(content)
    run, log = telemetry("burst", metrics_file=path)

    fail_in(run, "up")
    run.finish(success=False)

    assert path.with_name("ecoma.prom.corrupt").read_bytes() == content
    samples = parse(path.read_text())
    assert one(samples, FAILURES, operation="burst", phase="up") == 1
    assert one(samples, "ecoma_burst_last_run_timestamp_seconds", operation="burst") == T0
    (warning,) = named(log, "metrics_file_corrupt")
    assert warning["level"] == "warning"
    assert warning["kept"] == str(path.with_name("ecoma.prom.corrupt"))


def test_textfile_that_cannot_be_written_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    run, log = telemetry("burst", metrics_file=blocker / "ecoma.prom")

    run.teardown_started("aws", "wkr-aws-1")
    run.finish(success=True)

    failures = named(log, "metrics_write_failed")
    assert len(failures) == 2
    assert failures[0]["level"] == "error"


def test_textfile_passes_promtool_check_metrics(tmp_path: Path) -> None:
    require(PROMTOOL, "prometheus")
    path = tmp_path / "ecoma.prom"
    for index, operation in enumerate(OPERATIONS):
        run, _ = telemetry(operation, at=T0 + index, metrics_file=path)
        run.pools(stack_config(aws=(1, 3), oci=(0, 0)), {"aws": 1})
        run.node_ready("aws", 'wkr-"odd"\\node\n', ready=False, launched=LAUNCHED)
        run.teardown_started("oci", "wkr-oci-1")
        run.set("ecoma_autoscale_load_high", 1)
        run.set("ecoma_autoscale_desired_nodes", 2, provider="aws")
        run.set("ecoma_autoscale_decision", 1, action="up", reason="cpu")
        run.set("ecoma_autoscale_signal_value", 0.8125, signal="cpu")
        run.set("ecoma_credential_expiry_timestamp_seconds", T0 + 86400, credential="aws")
        run.set("ecoma_k3s_certificate_expiry_timestamp_seconds", T0 + 86400, node="cpl-1")
        if index % 2:
            fail_in(run, "tailnet")
        run.finish(success=not index % 2)

    text = path.read_text()
    assert {name for name, _ in parse(text)} == set(METRICS)
    checked = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ------------------------------------------------------------------ a real Pushgateway


@dataclass(frozen=True)
class Pushgateway:
    url: str

    def exposition(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:  # noqa: S310
            return response.read().decode()

    def group(self, stack: str) -> Samples:
        return parse(self.exposition(), keep={"job": JOB, "stack": stack})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def pushgateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pushgateway]:
    """Debian's Pushgateway on a free port, persisting into tmp_path; stopped afterwards."""
    require(PUSHGATEWAY, "prometheus-pushgateway")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "pushgateway.log"
    command = [
        str(PUSHGATEWAY),
        f"--web.listen-address={address}",
        f"--persistence.file={tmp_path / 'pushgateway.state'}",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://{address}"
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not _ready(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Pushgateway did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
            yield Pushgateway(url)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_pushgateway_merges_the_operations_of_a_stack_and_leaves_other_stacks(
    pushgateway: Pushgateway,
) -> None:
    prod, _ = telemetry("reap", stack="prod", pushgateway=pushgateway.url)
    prod.pools(stack_config(aws=(2, 3)))
    prod.finish(success=True)
    prod_before = pushgateway.group("prod")

    burst, burst_log = telemetry("burst", at=T0, pushgateway=pushgateway.url)
    burst.pools(stack_config(aws=(1, 3)))
    burst.finish(success=True)
    reap, reap_log = telemetry("reap", at=T0 + 600, pushgateway=pushgateway.url)
    reap.finish(success=True)

    group = pushgateway.group("staging")
    last_run = "ecoma_burst_last_run_timestamp_seconds"
    assert one(group, last_run, operation="burst") == T0
    assert one(group, last_run, operation="reap") == T0 + 600
    assert one(group, "ecoma_burst_nodes", provider="aws") == 1
    assert all(dict(labels)["stack"] == "staging" for _, labels in group)
    assert pushgateway.group("prod") == prod_before
    assert one(prod_before, "ecoma_burst_nodes", provider="aws") == 2
    assert not named(burst_log, "metrics_push_failed")
    assert not named(reap_log, "metrics_push_failed")


def test_pushgateway_carries_counters_over_and_drops_a_cleared_teardown(
    pushgateway: Pushgateway,
) -> None:
    burst, burst_log = telemetry("scale_down", pushgateway=pushgateway.url)
    burst.teardown_started("aws", "wkr-aws-1")
    assert one(pushgateway.group("staging"), "ecoma_burst_teardown_started_timestamp_seconds")
    fail_in(burst, "destroy")
    burst.finish(success=False)
    burst.flush()

    group = pushgateway.group("staging")
    assert one(group, FAILURES, operation="scale_down", phase="destroy") == 1
    assert one(group, FAILURES, operation="scale_down", phase="drain") == 0
    assert values(group, "ecoma_burst_teardown_started_timestamp_seconds")

    again, _ = telemetry("scale_down", at=T0 + 60, pushgateway=pushgateway.url)
    fail_in(again, "destroy")
    again.finish(success=False)
    reap, _ = telemetry("reap", at=T0 + 120, pushgateway=pushgateway.url)
    reap.teardown_started("aws", "wkr-aws-1")
    reap.teardown_finished("aws", "wkr-aws-1")
    reap.finish(success=True)

    group = pushgateway.group("staging")
    assert one(group, FAILURES, operation="scale_down", phase="destroy") == 2
    assert not values(group, "ecoma_burst_teardown_started_timestamp_seconds")
    assert one(group, "ecoma_burst_last_success_timestamp_seconds", operation="reap") == T0 + 120
    assert not named(burst_log, "metrics_push_failed")


def test_pushgateway_group_of_a_stack_with_a_slash(pushgateway: Pushgateway) -> None:
    run, log = telemetry("drill", stack="team/staging", pushgateway=pushgateway.url)

    run.finish(success=True)

    assert not named(log, "metrics_push_failed")
    group = pushgateway.group("team/staging")
    assert one(group, "ecoma_burst_last_success_timestamp_seconds", operation="drill") == T0


def test_unreachable_pushgateway_logs_a_warning_and_the_textfile_is_still_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ecoma.prom"
    url = f"127.0.0.1:{free_port()}"  # nothing listens; no scheme: http is assumed
    run, log = telemetry("burst", metrics_file=path, pushgateway=url)

    run.teardown_started("aws", "wkr-aws-1")
    fail_in(run, "drain")
    run.finish(success=False)

    warnings = named(log, "metrics_push_failed")
    assert len(warnings) == 2
    assert {w["level"] for w in warnings} == {"warning"}
    assert warnings[0]["url"] == f"http://{url}"
    assert "refused" in warnings[0]["reason"].lower()
    assert one(parse(path.read_text()), FAILURES, operation="burst", phase="drain") == 1
