"""The Tailscale API v2 over `requests`: the real `seams.Tailnet`, and key expiry for
`ecoma-infra credentials check`. Calls that meet Tailscale's rate limit (429) or a passing server
error are repeated as `Retry-After` asks (`platforms.http`).

Authentication is an API access token (`TAILSCALE_API_KEY`, sent as a bearer token) or an OAuth
client (`ecoma:tailscale.oauth_client_id` and `TAILSCALE_OAUTH_CLIENT_SECRET`), whose client
credentials are exchanged at `/api/v2/oauth/token` for an access token that is cached until
shortly before it expires. No key, client secret or access token appears in a message, a repr or
a log: errors name the environment variable instead, and whatever the server sends back is
masked before it is shown (`secret_shapes.mask_secrets`), since a broken or hostile server may
echo a credential.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import requests

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.http import (
    BodyTooLargeError,
    failure_reason,
    read_body,
    retrying_session,
)
from ecoma_infra.platforms.seams import Device
from ecoma_infra.stack.model import TailscaleSettings
from ecoma_infra.stack.secret_shapes import mask_secrets

DEFAULT_BASE_URL = "https://api.tailscale.com"
API_KEY_ENV = "TAILSCALE_API_KEY"
OAUTH_CLIENT_ID_ENV = "TAILSCALE_OAUTH_CLIENT_ID"
OAUTH_CLIENT_SECRET_ENV = "TAILSCALE_OAUTH_CLIENT_SECRET"  # noqa: S105 (a variable name)
BASE_URL_ENV = "TAILSCALE_BASE_URL"

# Renew the OAuth access token this long before Tailscale says it expires.
TOKEN_RENEW_MARGIN = 60.0
_NO_EXPIRY = datetime(1, 1, 1, tzinfo=UTC)  # Go's zero time: Tailscale's "does not expire"


class TailscaleApiError(EcomaError):
    """A Tailscale API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


class TailscaleApi:
    """`seams.Tailnet` against the Tailscale API v2, plus `key()` for key expiry."""

    def __init__(
        self,
        tailnet: str,
        *,
        api_key: str | None = None,
        oauth_client_id: str | None = None,
        oauth_client_secret: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        retry_after_max: int = 30,
    ) -> None:
        if bool(api_key) == bool(oauth_client_id and oauth_client_secret):
            raise EcomaError(
                "TailscaleApi: give either an API key or an OAuth client id and secret"
            )
        scheme = urllib.parse.urlsplit(base_url).scheme
        if scheme not in ("https", "http"):
            raise EcomaError(f"Tailscale base URL {base_url!r}: use an https:// URL")
        self.tailnet = tailnet
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._client_id = oauth_client_id
        self._client_secret = oauth_client_secret
        self._timeout = timeout
        self._clock = clock
        self._token: str | None = None
        self._token_expires = 0.0
        # The OAuth exchange may be repeated too: a second token for the same client is harmless.
        self._session = retrying_session(
            methods=("GET", "DELETE", "POST"), retry_after_max=retry_after_max
        )
        self.credential = API_KEY_ENV if api_key else OAUTH_CLIENT_SECRET_ENV
        """The environment variable the credential came from, for error messages."""
        self.granted_scopes: frozenset[str] | None = None
        """The scopes Tailscale granted the OAuth client's last access token (its `scope`);
        None for an API key, or when the answer did not say."""

    @property
    def uses_oauth(self) -> bool:
        return self._api_key is None

    @classmethod
    def from_environment(
        cls, settings: TailscaleSettings, environ: Mapping[str, str], *, timeout: float = 30.0
    ) -> TailscaleApi:
        """The client the environment allows: the OAuth client when its secret is set, else
        `TAILSCALE_API_KEY`; `TAILSCALE_BASE_URL` overrides the API's address."""
        base_url = environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        client_id = settings.oauth_client_id or environ.get(OAUTH_CLIENT_ID_ENV)
        secret = environ.get(OAUTH_CLIENT_SECRET_ENV)
        if client_id and secret:
            return cls(
                settings.tailnet,
                oauth_client_id=client_id,
                oauth_client_secret=secret,
                base_url=base_url,
                timeout=timeout,
            )
        api_key = environ.get(API_KEY_ENV)
        if api_key:
            return cls(settings.tailnet, api_key=api_key, base_url=base_url, timeout=timeout)
        if secret:
            raise EcomaError(
                f"{OAUTH_CLIENT_SECRET_ENV} is set but no OAuth client id is known: set "
                f"ecoma:tailscale.oauth_client_id in the stack file (or {OAUTH_CLIENT_ID_ENV})"
            )
        if client_id:
            raise EcomaError(
                f"{OAUTH_CLIENT_SECRET_ENV} is not set: export the secret of the OAuth client "
                f"{client_id} (ecoma:tailscale.oauth_client_id), or {API_KEY_ENV}"
            )
        raise EcomaError(
            f"{API_KEY_ENV} is not set: export a Tailscale API access token, or set "
            f"ecoma:tailscale.oauth_client_id and export {OAUTH_CLIENT_SECRET_ENV}"
        )

    def __repr__(self) -> str:
        auth = f"oauth_client_id={self._client_id!r}" if self._client_id else "api_key=[secret]"
        return f"TailscaleApi(tailnet={self.tailnet!r}, {auth}, base_url={self.base_url!r})"

    # --- seams.Tailnet ------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        """Every device of the tailnet: `nodeId` (or the legacy `id`) and its hostname."""
        body = self._call("GET", f"/api/v2/tailnet/{_segment(self.tailnet)}/devices")
        items = body.get("devices") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise TailscaleApiError(
                f"Tailscale API GET devices of {self.tailnet}: the answer has no `devices` list"
            )
        found: list[Device] = []
        for item in items:
            if not isinstance(item, dict):
                continue
            device_id = item.get("nodeId") or item.get("id")
            hostname = item.get("hostname") or str(item.get("name", "")).split(".", 1)[0]
            if device_id and hostname:
                found.append(Device(id=str(device_id), hostname=str(hostname)))
        return found

    def delete_device(self, device_id: str) -> None:
        """Remove a device from the tailnet; no error when it is already gone (404)."""
        try:
            self._call("DELETE", f"/api/v2/device/{_segment(device_id)}")
        except TailscaleApiError as error:
            if error.status != 404:
                raise

    # --- keys ---------------------------------------------------------------------------------

    def key(self, key_id: str) -> datetime | None:
        """When the key (API access token, auth key or OAuth client) `key_id` expires; None when
        Tailscale gives no expiry."""
        path = f"/api/v2/tailnet/{_segment(self.tailnet)}/keys/{_segment(key_id)}"
        body = self._call("GET", path)
        raw = body.get("expires") if isinstance(body, dict) else None
        if not raw:
            return None
        try:
            expires = datetime.fromisoformat(str(raw))
        except ValueError:
            # The value is not shown: what a server puts in a field it should not may be a key.
            raise TailscaleApiError(
                f"Tailscale API GET key {key_id}: `expires` is not a timestamp (the value is "
                "not shown). Check: TAILSCALE_BASE_URL points at the Tailscale API"
            ) from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        return None if expires <= _NO_EXPIRY else expires

    # --- what `doctor` reads --------------------------------------------------------------------

    def authenticate(self) -> None:
        """Exchange the OAuth client's credentials for an access token now (which also reads
        the granted scopes); with an API key, one cheap authenticated read."""
        if self._api_key:
            self._call("GET", f"/api/v2/tailnet/{_segment(self.tailnet)}/keys")
        else:
            self._exchange()

    def policy(self) -> dict[str, Any]:
        """The tailnet policy file as JSON (`Accept: application/json`; HuJSON otherwise)."""
        body = self._call("GET", f"/api/v2/tailnet/{_segment(self.tailnet)}/acl")
        if not isinstance(body, dict):
            raise TailscaleApiError(f"Tailscale API GET acl of {self.tailnet}: not a JSON object")
        return body

    def validate_policy(self, policy: Mapping[str, Any]) -> str:
        """Tailscale's verdict on a policy file (its syntax and its `tests`) without applying
        it: "" when valid, else Tailscale's message and the failed tests."""
        try:
            body = self._call(
                "POST",
                f"/api/v2/tailnet/{_segment(self.tailnet)}/acl/validate",
                json.dumps(dict(policy)).encode(),
            )
        except TailscaleApiError as error:
            if error.status != 400:
                raise
            return str(error)
        message = body.get("message") if isinstance(body, dict) else None
        if not message:
            return ""
        details = [
            f"{item.get('user', '')}: {'; '.join(str(e) for e in item.get('errors') or [])}"
            for item in (body.get("data") or [])
            if isinstance(item, dict)
        ]
        return str(message) + (f" ({' | '.join(details)})" if details else "")

    def route_devices(self) -> list[dict[str, Any]]:
        """Every device with its tags and routes (`fields=all`: the default listing omits
        `advertisedRoutes` and `enabledRoutes`)."""
        body = self._call("GET", f"/api/v2/tailnet/{_segment(self.tailnet)}/devices?fields=all")
        items = body.get("devices") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise TailscaleApiError(
                f"Tailscale API GET devices of {self.tailnet}: the answer has no `devices` list"
            )
        return [item for item in items if isinstance(item, dict)]

    # --- transport ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, json_body: bytes | None = None) -> Any:
        """One API call with the current credential; an OAuth token refused with 401 is
        exchanged once more and the call repeated."""
        try:
            return self._request(method, path, self._authorization(), json_body=json_body)
        except TailscaleApiError as error:
            if error.status != 401 or self._api_key:
                raise
        self._token = None
        return self._request(method, path, self._authorization(), json_body=json_body)

    def _authorization(self) -> str:
        if self._api_key:
            return f"Bearer {self._api_key}"
        if self._token is None or self._clock() >= self._token_expires:
            self._exchange()
        return f"Bearer {self._token}"

    def _exchange(self) -> None:
        """The OAuth client credentials grant: client id and secret for an access token."""
        form = {
            "client_id": self._client_id or "",
            "client_secret": self._client_secret or "",
            "grant_type": "client_credentials",
        }
        started = self._clock()
        body = self._request("POST", "/api/v2/oauth/token", None, form)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TailscaleApiError(
                "Tailscale API POST /api/v2/oauth/token: the answer has no access_token; "
                f"check the OAuth client {self._client_id} in the admin console"
            )
        lifetime = body.get("expires_in", 3600)
        seconds = (
            float(lifetime)
            if isinstance(lifetime, int | float) and not isinstance(lifetime, bool)
            else 3600.0
        )
        if not 0 <= seconds <= 86400 * 365:  # NaN fails both comparisons too
            seconds = 3600.0
        scope = body.get("scope")
        self.granted_scopes = frozenset(scope.split()) if isinstance(scope, str) else None
        self._token = token
        self._token_expires = started + max(seconds - TOKEN_RENEW_MARGIN, 0.0)

    def _request(
        self,
        method: str,
        path: str,
        authorization: str | None,
        form: dict[str, str] | None = None,
        *,
        json_body: bytes | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        if authorization:
            headers["Authorization"] = authorization
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                headers=headers,
                data=form if json_body is None else json_body,
                timeout=self._timeout,
                stream=True,
            )
            raw = read_body(response)
        except requests.RequestException as error:
            raise TailscaleApiError(
                self._redact(
                    f"Tailscale API {method} {path}: no answer from {self.base_url}: "
                    f"{failure_reason(error, self._timeout)}. "
                    "Check the network, a proxy (HTTPS_PROXY) or TAILSCALE_BASE_URL"
                )
            ) from None
        except BodyTooLargeError as error:
            raise TailscaleApiError(f"Tailscale API {method} {path}: {error}") from None
        text = raw.decode("utf-8", "replace")
        if response.status_code >= 400:
            detail = _tailscale_message(text, response.reason)
            raise TailscaleApiError(
                self._redact(
                    f"Tailscale API {method} {path}: HTTP {response.status_code}: {detail}. "
                    f"Check: {self._hint(response.status_code, path)}"
                ),
                response.status_code,
            )
        if not text.strip():
            return {}
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise TailscaleApiError(
                f"Tailscale API {method} {path}: the answer is not JSON"
            ) from None

    def _hint(self, status: int, path: str) -> str:
        if path.endswith("/oauth/token"):
            return (
                f"the OAuth client {self._client_id} exists and {OAUTH_CLIENT_SECRET_ENV} is "
                "its current secret (admin console, Settings > OAuth clients)"
            )
        hints = {
            401: f"{self.credential} is valid and neither expired nor revoked",
            403: f"the scopes of the credential in {self.credential} (devices:core to list and "
            "delete devices, auth_keys to read keys, policy_file to read and validate the "
            "policy)",
            404: f"the tailnet name ecoma:tailscale.tailnet ({self.tailnet}) and the id asked for",
            429: "the rate limit: wait a minute and run again",
        }
        if status >= 500:
            return "https://status.tailscale.com and run again later"
        return hints.get(status, "the request's parameters")

    def _redact(self, text: str) -> str:
        for secret in (self._api_key, self._client_secret, self._token):
            if secret:
                text = text.replace(secret, "[secret]")
        return mask_secrets(text)


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _tailscale_message(text: str, reason: str | None) -> str:
    """Tailscale's own words from an error answer (`{"message": ...}`), else the reason; cut
    short, since a hostile server may send a page."""
    try:
        body = json.loads(text or "{}")
    except (json.JSONDecodeError, RecursionError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    shown = " ".join(str(message or reason or "no message").split())
    return shown if len(shown) <= 300 else shown[:297] + "..."
