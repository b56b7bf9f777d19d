"""The HTTP adapters against broken and hostile servers (simulated Tailscale and Proxmox APIs, a
stub Prometheus): rate limits and outages are waited out as `Retry-After` asks, within bounds;
an answer that echoes a credential or carries junk where a value belongs ends in a message, and
a secret scan of every message, repr and log line finds no credential."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from simulated_apis import SimulatedProxmox, SimulatedTailscale

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.prometheus import PrometheusClient
from ecoma_infra.platforms.proxmox import (
    ProxmoxApi,
    ProxmoxApiError,
    TokenId,
    parse_api_token,
    token_expiry,
)
from ecoma_infra.platforms.tailscale import TailscaleApi, TailscaleApiError


@pytest.fixture
def tailscale() -> Iterator[SimulatedTailscale]:
    with SimulatedTailscale() as api:
        yield api


def oauth_client(sim: SimulatedTailscale, **kwargs: Any) -> TailscaleApi:
    return TailscaleApi(
        sim.tailnet,
        oauth_client_id=sim.client_id,
        oauth_client_secret=sim.client_secret,
        base_url=sim.url,
        **kwargs,
    )


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, "a secret in the output"


# --------------------------------------------------------------------------- retries


def test_simulated_rate_limit_and_outage_are_waited_out_as_retry_after_asks(
    tailscale: SimulatedTailscale,
) -> None:
    tailscale.add_device("wkr-aws-1")
    api = TailscaleApi(tailscale.tailnet, api_key=tailscale.api_key, base_url=tailscale.url)
    tailscale.throttle = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "1"})]

    started = time.monotonic()
    devices = api.devices()

    assert [d.hostname for d in devices] == ["wkr-aws-1"]
    assert tailscale.requests_served == 3
    assert time.monotonic() - started >= 1.9  # both waits were honoured


def test_simulated_endless_retry_after_is_capped(tailscale: SimulatedTailscale) -> None:
    api = TailscaleApi(
        tailscale.tailnet, api_key=tailscale.api_key, base_url=tailscale.url, retry_after_max=1
    )
    tailscale.throttle = [(429, {"Retry-After": "86400"})]

    started = time.monotonic()
    assert api.devices() == []
    assert 0.9 <= time.monotonic() - started < 10


@pytest.mark.parametrize("value", ["soon", "9" * 5000, "Tue, 99 Foo 2025 25:61:00 GMT"])
def test_simulated_unreadable_retry_after_falls_back_to_backoff(
    tailscale: SimulatedTailscale, value: str
) -> None:
    api = TailscaleApi(tailscale.tailnet, api_key=tailscale.api_key, base_url=tailscale.url)
    tailscale.throttle = [(503, {"Retry-After": value})]
    assert api.devices() == []
    assert tailscale.requests_served == 2


def test_simulated_rate_limit_that_never_lifts_ends_in_a_message(
    tailscale: SimulatedTailscale,
) -> None:
    api = TailscaleApi(tailscale.tailnet, api_key=tailscale.api_key, base_url=tailscale.url)
    tailscale.throttle = [(429, {"Retry-After": "0"})] * 10

    with pytest.raises(TailscaleApiError) as caught:
        api.devices()

    assert caught.value.status == 429
    assert "HTTP 429: slow down. Check: the rate limit" in str(caught.value)
    assert tailscale.requests_served == 4  # the call and three retries, not ten


# --------------------------------------------------------------------------- hostile answers


def test_simulated_expires_holding_the_access_token_is_not_shown(
    tailscale: SimulatedTailscale,
) -> None:
    api = oauth_client(tailscale)
    api.devices()  # the exchange: the server now knows the access token it issued
    (token,) = tailscale.access_tokens
    tailscale.add_key("kEcho0CNTRL", datetime(2030, 1, 1, tzinfo=UTC))
    tailscale.keys["kEcho0CNTRL"]["expires"] = token

    with pytest.raises(TailscaleApiError) as caught:
        api.key("kEcho0CNTRL")

    assert "`expires` is not a timestamp (the value is not shown)" in str(caught.value)
    secrets = [token, tailscale.client_secret, tailscale.api_key]
    assert_no_secret([str(caught.value), repr(caught.value), repr(api)], secrets)


def test_simulated_expires_holding_the_api_key_is_not_shown(
    tailscale: SimulatedTailscale,
) -> None:
    api = TailscaleApi(tailscale.tailnet, api_key=tailscale.api_key, base_url=tailscale.url)
    tailscale.add_key("kEcho1CNTRL", None)
    tailscale.keys["kEcho1CNTRL"]["expires"] = tailscale.api_key

    with pytest.raises(TailscaleApiError) as caught:
        api.key("kEcho1CNTRL")

    assert_no_secret([str(caught.value), repr(caught.value)], [tailscale.api_key])


def test_simulated_error_message_echoing_a_key_is_masked(tailscale: SimulatedTailscale) -> None:
    """The server's own message is shown, but never a credential in it, ours or another."""
    other = "tskey-" + "auth-kOther0CNTRL-" + "f" * 32

    class Echo(SimulatedTailscale):
        def handle(self, method: str, target: str, auth: str, body: bytes) -> Any:
            return 400, "Bad Request", {"message": f"bad: {auth} {other} " + "x" * 5000}

    with Echo() as echo:
        api = TailscaleApi(echo.tailnet, api_key=echo.api_key, base_url=echo.url)
        with pytest.raises(TailscaleApiError) as caught:
            api.devices()

    message = str(caught.value)
    assert "HTTP 400: bad: Bearer [secret] [secret]" in message
    assert len(message) < 800
    assert_no_secret([message], [echo.api_key, other])


def test_simulated_proxmox_expire_holding_the_token_is_not_shown() -> None:
    with SimulatedProxmox() as pve:
        value = pve.add_token("ci-20250301", expire=0)
        token_id, secret = parse_api_token(value)
        api = ProxmoxApi(pve.url, token_id, secret, insecure=True)
        pve.fail = lambda method, path: (
            (200, "OK", {"data": {"expire": value, "privsep": 1}}) if method == "GET" else None
        )
        with pytest.raises(ProxmoxApiError) as caught:
            token_expiry(api.token_info(token_id), token_id)

    message = str(caught.value)
    assert "is not a number of seconds (the value is not shown)" in message
    assert_no_secret([message, repr(caught.value), repr(api)], [value, secret.reveal()])


@pytest.mark.parametrize(
    ("expire", "expected"),
    [
        (0, None),
        ("0", None),
        (1767225600, datetime(2026, 1, 1, tzinfo=UTC)),
        ("1767225600", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_proxmox_expire_of_every_shape_the_api_gives(expire: object, expected: object) -> None:
    assert token_expiry({"expire": expire}, TokenId("ci@pve", "x")) == expected


@pytest.mark.parametrize("expire", [True, -5, 1.5, "soon", "9" * 5000, 10**20, ["x"]])
def test_proxmox_expire_of_no_shape_is_a_message(expire: object) -> None:
    with pytest.raises(ProxmoxApiError, match="`expire` of token ci@pve!x is"):
        token_expiry({"expire": expire}, TokenId("ci@pve", "x"))


# --------------------------------------------------------------------------- Prometheus


class _StubPrometheus:
    """Answers 503 with Retry-After `busy` times, then one instant-vector sample."""

    def __init__(self, busy: int, retry_after: str = "1") -> None:
        self.busy = busy
        self.served = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                stub.served += 1
                if stub.served <= stub.busy:
                    body = json.dumps({"status": "error", "errorType": "unavailable"}).encode()
                    self.send_response(503)
                    self.send_header("Retry-After", retry_after)
                else:
                    sample = [{"metric": {}, "value": [time.time(), "42"]}]
                    data = {"resultType": "vector", "result": sample}
                    body = json.dumps({"status": "success", "data": data}).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_simulated_busy_prometheus_is_waited_out_as_retry_after_asks() -> None:
    stub = _StubPrometheus(busy=2)
    try:
        started = time.monotonic()
        assert PrometheusClient(stub.url).value("sum(up)") == 42.0
        assert stub.served == 3
        assert time.monotonic() - started >= 1.9
    finally:
        stub.close()


def test_simulated_prometheus_that_stays_busy_is_a_message() -> None:
    stub = _StubPrometheus(busy=100, retry_after="0")
    try:
        with pytest.raises(EcomaError, match="Prometheus rejected the query 'sum\\(up\\)'"):
            PrometheusClient(stub.url).value("sum(up)")
        assert stub.served == 4
    finally:
        stub.close()


def test_a_password_in_the_prometheus_url_is_never_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    url = "http://reader:s3cr3t-pw@127.0.0.1:9/prom"
    with pytest.raises(EcomaError) as caught:
        PrometheusClient(url, timeout=0.5).value("up")
    assert "http://reader:[secret]@127.0.0.1:9/prom" in str(caught.value)
    assert_no_secret([str(caught.value), caplog.text], ["s3cr3t-pw"])
