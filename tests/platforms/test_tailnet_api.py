"""`TailscaleApi` against a simulated Tailscale API v2 (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from simulated_apis import SimulatedTailscale, tailscale_api_key

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Device, Tailnet
from ecoma_infra.platforms.tailscale import TOKEN_RENEW_MARGIN, TailscaleApi, TailscaleApiError
from ecoma_infra.stack.model import TailscaleSettings


@pytest.fixture
def tailscale() -> Iterator[SimulatedTailscale]:
    with SimulatedTailscale() as api:
        yield api


def settings(oauth_client_id: str | None = None, tailnet: str = "ecoma.io") -> TailscaleSettings:
    return TailscaleSettings(
        tailnet=tailnet,
        magic_dns_suffix="tail4e2c1.ts.net",
        oauth_client_id=oauth_client_id,
        subnet_routers=["cpl-1"],
    )


def with_key(sim: SimulatedTailscale) -> TailscaleApi:
    return TailscaleApi(sim.tailnet, api_key=sim.api_key, base_url=sim.url)


def with_oauth(sim: SimulatedTailscale, clock: list[float] | None = None) -> TailscaleApi:
    ticks = clock if clock is not None else [0.0]
    return TailscaleApi(
        sim.tailnet,
        oauth_client_id=sim.client_id,
        oauth_client_secret=sim.client_secret,
        base_url=sim.url,
        clock=lambda: ticks[0],
    )


def test_simulated_devices_are_listed_by_node_id_and_hostname(
    tailscale: SimulatedTailscale,
) -> None:
    first = tailscale.add_device("wkr-aws-1")
    second = tailscale.add_device("cpl-1")
    api: Tailnet = with_key(tailscale)

    devices = api.devices()

    assert sorted(devices, key=lambda d: d.hostname) == [
        Device(second, "cpl-1"),
        Device(first, "wkr-aws-1"),
    ]
    assert [seen.auth for seen in tailscale.seen] == ["bearer"]


def test_simulated_delete_device_removes_it_and_a_second_delete_is_fine(
    tailscale: SimulatedTailscale,
) -> None:
    gone = tailscale.add_device("wkr-aws-1")
    kept = tailscale.add_device("wkr-aws-2")
    api = with_key(tailscale)

    api.delete_device(gone)
    api.delete_device(gone)  # 404 now: already gone is what was wanted

    assert [d.id for d in api.devices()] == [kept]
    statuses = [seen.method for seen in tailscale.seen]
    assert statuses == ["DELETE", "DELETE", "GET"]


def test_simulated_unknown_tailnet_names_the_setting(tailscale: SimulatedTailscale) -> None:
    api = TailscaleApi("other.example", api_key=tailscale.api_key, base_url=tailscale.url)

    with pytest.raises(TailscaleApiError) as caught:
        api.devices()

    assert caught.value.status == 404
    assert "ecoma:tailscale.tailnet (other.example)" in str(caught.value)


def test_simulated_oauth_token_is_exchanged_once_and_reused(
    tailscale: SimulatedTailscale,
) -> None:
    tailscale.add_device("cpl-1")
    tailscale.add_key(tailscale.client_id, None)
    api = with_oauth(tailscale)

    api.devices()
    api.devices()
    api.key(tailscale.client_id)

    assert tailscale.exchanges == 1
    assert (tailscale.seen[0].method, tailscale.seen[0].path) == ("POST", "/api/v2/oauth/token")
    assert [s.auth for s in tailscale.seen[1:]] == ["bearer"] * 3


def test_simulated_oauth_token_is_renewed_before_it_expires(
    tailscale: SimulatedTailscale,
) -> None:
    clock = [100.0]
    api = with_oauth(tailscale, clock)

    api.devices()
    clock[0] += tailscale.token_lifetime - TOKEN_RENEW_MARGIN - 1
    api.devices()
    assert tailscale.exchanges == 1

    clock[0] += 2
    api.devices()
    assert tailscale.exchanges == 2


def test_simulated_revoked_oauth_token_is_exchanged_again_once(
    tailscale: SimulatedTailscale,
) -> None:
    api = with_oauth(tailscale)
    api.devices()
    tailscale.access_tokens.clear()  # revoked on Tailscale's side before it expired

    api.devices()

    assert tailscale.exchanges == 2


def test_simulated_auth_failure_names_the_variable_never_the_key(
    tailscale: SimulatedTailscale,
) -> None:
    wrong = tailscale_api_key("kWrong0CNTRL")
    api = TailscaleApi(tailscale.tailnet, api_key=wrong, base_url=tailscale.url)

    with pytest.raises(TailscaleApiError) as caught:
        api.devices()

    message = str(caught.value)
    assert caught.value.status == 401
    assert "HTTP 401: API token invalid" in message
    assert "TAILSCALE_API_KEY is valid and neither expired nor revoked" in message
    for text in (message, repr(api), repr(caught.value)):
        assert wrong not in text
        assert tailscale.api_key not in text


def test_simulated_oauth_failure_names_the_client_never_the_secret(
    tailscale: SimulatedTailscale,
) -> None:
    wrong = tailscale.client_secret[:-4] + "0000"
    api = TailscaleApi(
        tailscale.tailnet,
        oauth_client_id=tailscale.client_id,
        oauth_client_secret=wrong,
        base_url=tailscale.url,
    )

    with pytest.raises(TailscaleApiError) as caught:
        api.devices()

    message = str(caught.value)
    assert "POST /api/v2/oauth/token: HTTP 401: invalid client credentials" in message
    assert f"the OAuth client {tailscale.client_id} exists" in message
    assert "TAILSCALE_OAUTH_CLIENT_SECRET" in message
    assert wrong not in message
    assert wrong not in repr(api)


def test_simulated_key_expiry_is_an_aware_datetime_or_none(
    tailscale: SimulatedTailscale,
) -> None:
    expires = datetime(2025, 8, 30, 10, 0, tzinfo=UTC)
    tailscale.add_key(tailscale.api_key_id, expires)
    tailscale.add_key("kNever0CNTRL", None)
    api = with_key(tailscale)

    assert api.key(tailscale.api_key_id) == expires
    assert api.key("kNever0CNTRL") is None
    with pytest.raises(TailscaleApiError) as caught:
        api.key("kMissing0CNTRL")
    assert caught.value.status == 404


def test_simulated_from_environment_prefers_the_oauth_client(
    tailscale: SimulatedTailscale,
) -> None:
    environ = {
        "TAILSCALE_OAUTH_CLIENT_SECRET": tailscale.client_secret,
        "TAILSCALE_API_KEY": tailscale.api_key,
        "TAILSCALE_BASE_URL": tailscale.url,
    }
    api = TailscaleApi.from_environment(settings(tailscale.client_id), environ)

    api.devices()

    assert api.credential == "TAILSCALE_OAUTH_CLIENT_SECRET"
    assert tailscale.exchanges == 1
    assert tailscale.client_secret not in repr(api)


def test_simulated_from_environment_uses_the_api_key_without_a_client(
    tailscale: SimulatedTailscale,
) -> None:
    environ = {"TAILSCALE_API_KEY": tailscale.api_key, "TAILSCALE_BASE_URL": tailscale.url}
    api = TailscaleApi.from_environment(settings(), environ)

    assert api.devices() == []
    assert tailscale.exchanges == 0
    assert "api_key=[secret]" in repr(api)


@pytest.mark.parametrize(
    ("client_id", "environ", "named"),
    [
        (None, {}, "TAILSCALE_API_KEY is not set"),
        ("kStgEcomaCNTRL", {}, "TAILSCALE_OAUTH_CLIENT_SECRET is not set"),
        (None, {"TAILSCALE_OAUTH_CLIENT_SECRET": "x"}, "ecoma:tailscale.oauth_client_id"),
    ],
)
def test_from_environment_names_the_missing_variable(
    client_id: str | None, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(EcomaError, match=named):
        TailscaleApi.from_environment(settings(client_id), environ)


def test_unreachable_api_says_where_it_looked() -> None:
    with socket.socket() as probe:  # a free port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = tailscale_api_key("kDown0CNTRL")
    api = TailscaleApi("ecoma.io", api_key=key, base_url=f"http://127.0.0.1:{port}", timeout=5)

    with pytest.raises(TailscaleApiError) as caught:
        api.devices()

    assert f"no answer from http://127.0.0.1:{port}" in str(caught.value)
    assert caught.value.status == 0
    assert key not in str(caught.value)
