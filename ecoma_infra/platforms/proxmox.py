"""The Proxmox VE API: the few calls that token checks and rotation need.

Token values live in `Secret` objects and reach nothing but the HTTP `Authorization` header."""

from __future__ import annotations

import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import (
    ProxmoxSettings,
)

PROXMOX_TOKEN_ENV = "PROXMOX_VE_API_TOKEN"  # noqa: S105 (a variable name, no secret)


# --------------------------------------------------------------------------- Proxmox API


class Secret:
    """A secret value that prints as `[secret]`; `reveal()` is the only way to its text."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "[secret]"

    __str__ = __repr__


_TOKEN_ID = re.compile(r"^(?P<user>[^@\s!=]+@[^@\s!=]+)!(?P<token>[A-Za-z][A-Za-z0-9._-]*)$")


@dataclass(frozen=True)
class TokenId:
    """A Proxmox API token's id: `USER@REALM!TOKENID` (no secret in it)."""

    userid: str
    tokenid: str

    @property
    def full(self) -> str:
        return f"{self.userid}!{self.tokenid}"

    def __str__(self) -> str:
        return self.full

    @classmethod
    def parse(cls, text: str, where: str) -> TokenId:
        match = _TOKEN_ID.match(text)
        if match is None:
            raise EcomaError(
                f"{where}: {text!r} is not a Proxmox token id; use USER@REALM!TOKENID, "
                "e.g. ci@pve!ci-20250101"
            )
        return cls(match["user"], match["token"])


@dataclass(frozen=True)
class AclEntry:
    path: str
    roleid: str
    propagate: bool


class ProxmoxApiError(EcomaError):
    """A Proxmox API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        self.status = status
        super().__init__(message)


def parse_api_token(value: str, where: str = PROXMOX_TOKEN_ENV) -> tuple[TokenId, Secret]:
    """`USER@REALM!TOKENID=SECRET` -> (its id, its secret); the value is never echoed."""
    token_id, sep, secret = value.strip().partition("=")
    if not sep or not secret or _TOKEN_ID.match(token_id) is None:
        raise EcomaError(
            f"{where} is not of the form USER@REALM!TOKENID=SECRET (the value is not shown)"
        )
    return TokenId.parse(token_id, where), Secret(secret)


class ProxmoxApi:
    """The few calls of the Proxmox VE API that token checks and rotation need, authenticated
    with `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`."""

    def __init__(
        self,
        endpoint: str,
        token_id: TokenId,
        secret: Secret,
        *,
        insecure: bool = False,
        timeout: float = 30.0,
        credential: str = PROXMOX_TOKEN_ENV,
    ) -> None:
        if urllib.parse.urlsplit(endpoint).scheme not in ("https", "http"):
            raise EcomaError(f"Proxmox endpoint {endpoint!r}: use an https:// URL")
        self.endpoint = endpoint.rstrip("/")
        self.token_id = token_id
        self.insecure = insecure
        self.credential = credential
        self._secret = secret
        self._timeout = timeout
        self._context = ssl.create_default_context()
        if insecure:  # ecoma:proxmox.insecure: a self-signed PVE certificate
            self._context.check_hostname = False
            self._context.verify_mode = ssl.CERT_NONE

    @classmethod
    def from_environment(
        cls, settings: ProxmoxSettings, environ: Mapping[str, str], *, timeout: float = 30.0
    ) -> ProxmoxApi:
        """Authenticated with `PROXMOX_VE_API_TOKEN`, at ecoma:proxmox.endpoint."""
        value = environ.get(PROXMOX_TOKEN_ENV)
        if not value:
            raise EcomaError(
                f"{PROXMOX_TOKEN_ENV} is not set: export the Proxmox API token "
                "(USER@REALM!TOKENID=SECRET), e.g. from `pulumi config get ecoma:proxmox_api_token`"
            )
        token_id, secret = parse_api_token(value)
        return cls(settings.endpoint, token_id, secret, insecure=settings.insecure, timeout=timeout)

    def with_token(self, token_id: TokenId, secret: Secret, credential: str) -> ProxmoxApi:
        """The same endpoint and TLS settings, another token."""
        return ProxmoxApi(
            self.endpoint,
            token_id,
            secret,
            insecure=self.insecure,
            timeout=self._timeout,
            credential=credential,
        )

    def __repr__(self) -> str:
        return f"ProxmoxApi(endpoint={self.endpoint!r}, token_id={self.token_id.full!r})"

    def token_info(self, token_id: TokenId) -> dict[str, Any]:
        data = self._call("GET", _token_path(token_id))
        return data if isinstance(data, dict) else {}

    def token_ids(self, userid: str) -> set[str]:
        data = self._call("GET", f"/access/users/{_segment(userid)}/token")
        return {str(item.get("tokenid")) for item in data or [] if isinstance(item, dict)}

    def create_token(self, token_id: TokenId, *, expire: int, comment: str) -> Secret:
        """A new privilege-separated token; its secret is only ever in the answer."""
        data = self._call(
            "POST",
            _token_path(token_id),
            {"privsep": "1", "expire": str(expire), "comment": comment},
        )
        value = data.get("value") if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise ProxmoxApiError(
                f"Proxmox API POST {_shown(_token_path(token_id))}: the answer has no token value"
            )
        return Secret(value)

    def delete_token(self, token_id: TokenId) -> None:
        self._call("DELETE", _token_path(token_id))

    def token_acl(self, token_id: TokenId) -> list[AclEntry]:
        """The ACL entries given to the token itself."""
        data = self._call("GET", "/access/acl")
        return [
            AclEntry(str(item["path"]), str(item["roleid"]), bool(int(item.get("propagate", 1))))
            for item in data or []
            if isinstance(item, dict)
            and item.get("type") == "token"
            and item.get("ugid") == token_id.full
        ]

    def grant(self, entry: AclEntry, token_id: TokenId) -> None:
        self._call(
            "PUT",
            "/access/acl",
            {
                "path": entry.path,
                "roles": entry.roleid,
                "tokens": token_id.full,
                "propagate": "1" if entry.propagate else "0",
            },
        )

    def version(self) -> str:
        data = self._call("GET", "/version")
        return str(data.get("version", "")) if isinstance(data, dict) else ""

    def permissions(self) -> dict[str, dict[str, Any]]:
        """The effective privileges of this client's own token, by path."""
        data = self._call("GET", "/access/permissions")
        return data if isinstance(data, dict) else {}

    def _call(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        url = f"{self.endpoint}/api2/json{path}"
        body = urllib.parse.urlencode(params).encode() if params is not None else None
        request = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (scheme checked)
        request.add_header("Authorization", f"PVEAPIToken={self.token_id.full}={self._reveal()}")
        request.add_header("Accept", "application/json")
        if body is not None:
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
        shown = f"Proxmox API {method} {_shown(path)}"
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=self._timeout, context=self._context
            ) as response:
                text = response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            raise ProxmoxApiError(
                self._redact(
                    f"{shown}: HTTP {error.code}: {_proxmox_message(error)}. "
                    f"Check: {self._hint(error.code)}"
                ),
                error.code,
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            tls = (
                " (self-signed certificate? see ecoma:proxmox.insecure)"
                if isinstance(reason, ssl.SSLError)
                else ""
            )
            raise ProxmoxApiError(
                self._redact(
                    f"{shown}: no answer from {self.endpoint}: {reason}{tls}. Check "
                    "ecoma:proxmox.endpoint and the network"
                )
            ) from None
        try:
            document = json.loads(text or "{}")
        except json.JSONDecodeError:
            raise ProxmoxApiError(f"{shown}: the answer is not JSON") from None
        return document.get("data") if isinstance(document, dict) else None

    def _hint(self, status: int) -> str:
        if status == 401:
            return f"{self.credential} ({self.token_id.full}) is a valid token, not expired"
        if status == 403:
            return (
                f"the privileges of {self.token_id.full}: tokens of {self.token_id.userid} need "
                f"User.Modify on /access/users/{self.token_id.userid}; copying ACLs needs "
                "Permissions.Modify on their paths; listing ACLs needs Sys.Audit on /access"
            )
        if status >= 500:
            return "the message above and the PVE node (journalctl -u pvedaemon -u pveproxy)"
        return "the parameters named above"

    def _reveal(self) -> str:
        return self._secret.reveal()

    def _redact(self, text: str) -> str:
        secret = self._reveal()
        return text.replace(secret, "[secret]") if secret else text


def _segment(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _token_path(token_id: TokenId) -> str:
    return f"/access/users/{_segment(token_id.userid)}/token/{_segment(token_id.tokenid)}"


def _shown(path: str) -> str:
    return urllib.parse.unquote(path)


def _proxmox_message(error: urllib.error.HTTPError) -> str:
    """Proxmox puts its message in the status line, parameter errors in `errors`."""
    message = str(error.reason or "no message")
    try:
        body = json.loads(error.read().decode("utf-8", "replace") or "{}")
    except (json.JSONDecodeError, OSError):
        body = {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, dict) and errors:
        message += " (" + "; ".join(f"{k}: {str(v).strip()}" for k, v in errors.items()) + ")"
    return message


_EPOCH_SECONDS = re.compile(r"[0-9]{1,12}")


def token_expiry(info: Mapping[str, Any], token_id: TokenId) -> datetime | None:
    """When a token expires, from its info's `expire` (seconds since the epoch; 0 or absent:
    never). Anything else is an error that does not repeat the value: an answer that puts
    something unexpected there may carry a secret."""
    raw = info.get("expire")
    if raw in (None, 0, "", "0"):
        return None
    text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
    if not isinstance(text, str) or _EPOCH_SECONDS.fullmatch(text) is None:
        raise ProxmoxApiError(
            f"Proxmox API: the `expire` of token {token_id} is not a number of seconds "
            "(the value is not shown). Check the PVE version and the token in the GUI"
        )
    try:
        return datetime.fromtimestamp(int(text), UTC)
    except (OverflowError, OSError, ValueError):
        raise ProxmoxApiError(
            f"Proxmox API: the `expire` of token {token_id} is out of range"
        ) from None
