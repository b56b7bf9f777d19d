"""Simulated Tailscale and Proxmox VE APIs: real HTTP servers on 127.0.0.1 (Proxmox over TLS
with a self-signed certificate made at runtime) that check the Authorization header and answer
with the JSON shapes of the real APIs. Secrets are generated per run; nothing key-like is a
literal here.

Use as context managers (`with SimulatedTailscale() as api: ...`); fixtures in the test modules
wrap them so that every server is shut down after its test.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import secrets
import ssl
import tempfile
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

Answer = tuple[int, str, Any]  # status, reason phrase, JSON body (None: empty body)


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it (the Authorization header is kept only as a kind)."""

    method: str
    path: str
    auth: str


class SimulatedApi:
    """A ThreadingHTTPServer on a free port that hands every request to `handle`."""

    tls = False

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.throttle: list[tuple[int, dict[str, str]]] = []
        """(status, headers) answered, in order, before any request reaches `handle`."""
        self.requests_served = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}"

    def __enter__(self) -> Self:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers: dict[str, str] = {}
                with api._lock:
                    api.requests_served += 1
                    if api.throttle:  # a rate limit or an outage answers first
                        status, headers = api.throttle.pop(0)
                        reason, payload = "Throttled", {"message": "slow down"}
                    else:
                        status, reason, payload = api.handle(
                            self.command, self.path, self.headers.get("Authorization", ""), body
                        )
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status, reason)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def do_PUT(self) -> None:
                self._serve()

            def do_DELETE(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test output stays the command's own."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_self_signed_certificate(Path(self._tmp.name)))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    def handle(self, method: str, target: str, auth: str, body: bytes) -> Answer:
        raise NotImplementedError


def _self_signed_certificate(directory: Path) -> tuple[str, str]:
    """A throw-away certificate for 127.0.0.1, as PVE's own self-signed one would be."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve-simulated")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "pve.pem", directory / "pve.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


# --------------------------------------------------------------------------- Tailscale


def tailscale_api_key(key_id: str) -> str:
    """A fresh API access token of Tailscale's form, built at runtime."""
    return "-".join(["tskey", "api", key_id, secrets.token_hex(16)])


class SimulatedTailscale(SimulatedApi):
    """The Tailscale API v2: devices, device deletion, keys and the OAuth token endpoint."""

    def __init__(self, tailnet: str = "ecoma.io") -> None:
        super().__init__()
        self.tailnet = tailnet
        self.api_key_id = "k" + secrets.token_hex(5) + "CNTRL"
        self.api_key = tailscale_api_key(self.api_key_id)
        self.client_id = "k" + secrets.token_hex(5) + "CNTRL"
        self.client_secret = "-".join(["tskey", "client", self.client_id, secrets.token_hex(16)])
        self.token_lifetime = 3600
        self.access_tokens: set[str] = set()
        self.exchanges = 0
        self.devices: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, dict[str, Any]] = {}

    def add_device(self, hostname: str) -> str:
        node_id = "n" + secrets.token_hex(6) + "CNTRL"
        self.devices[node_id] = {
            "addresses": [f"100.64.0.{len(self.devices) + 1}"],
            "id": str(secrets.randbelow(10**15)),
            "nodeId": node_id,
            "user": "ci@ecoma.io",
            "name": f"{hostname}.tail4e2c1.ts.net",
            "hostname": hostname,
            "clientVersion": "1.80.2-t8f3b7c1d4",
            "os": "linux",
            "created": "2025-05-01T08:00:00Z",
            "lastSeen": "2025-06-01T11:59:00Z",
            "tags": ["tag:ecoma-wkr"],
            "authorized": True,
            "isExternal": False,
            "keyExpiryDisabled": True,
        }
        return node_id

    def add_key(self, key_id: str, expires: dt.datetime | None) -> None:
        self.keys[key_id] = {
            "id": key_id,
            "keyType": "api",
            "description": "ecoma CI",
            "created": "2025-03-01T10:00:00Z",
            "expires": expires.isoformat().replace("+00:00", "Z") if expires else None,
            "revoked": None,
            "invalid": False,
            "userId": "u" + secrets.token_hex(5) + "CNTRL",
        }

    def _authorized(self, auth: str) -> bool:
        scheme, _, credential = auth.partition(" ")
        if scheme == "Basic":  # the API also takes the key as the basic-auth user name
            credential = base64.b64decode(credential).decode().partition(":")[0]
        elif scheme != "Bearer":
            return False
        return credential == self.api_key or credential in self.access_tokens

    def handle(self, method: str, target: str, auth: str, body: bytes) -> Answer:  # noqa: PLR0911 (a router)
        path = urllib.parse.urlsplit(target).path
        kind = "bearer" if auth.startswith("Bearer ") else ("none" if not auth else "other")
        self.seen.append(Seen(method, path, kind))
        if method == "POST" and path == "/api/v2/oauth/token":
            return self._token(body)
        if not self._authorized(auth):
            return 401, "Unauthorized", {"message": "API token invalid"}
        prefix = f"/api/v2/tailnet/{urllib.parse.quote(self.tailnet, safe='')}"
        if method == "GET" and path == f"{prefix}/devices":
            return 200, "OK", {"devices": list(self.devices.values())}
        if method == "GET" and path.startswith(f"{prefix}/keys/"):
            key = self.keys.get(path.rsplit("/", 1)[1])
            if key is None:
                return 404, "Not Found", {"message": "not found"}
            return 200, "OK", key
        if method == "DELETE" and path.startswith("/api/v2/device/"):
            device_id = path.rsplit("/", 1)[1]
            match = next((k for k, d in self.devices.items() if device_id in (k, d["id"])), None)
            if match is None:
                return 404, "Not Found", {"message": "device not found"}
            del self.devices[match]
            return 200, "OK", None
        return 404, "Not Found", {"message": "not found"}

    def _token(self, body: bytes) -> Answer:
        form = urllib.parse.parse_qs(body.decode())
        client_id = form.get("client_id", [""])[0]
        secret = form.get("client_secret", [""])[0]
        if client_id != self.client_id or secret != self.client_secret:
            return 401, "Unauthorized", {"message": "invalid client credentials"}
        self.exchanges += 1
        token = "tskey-" + "api-access-" + secrets.token_hex(20)
        self.access_tokens.add(token)
        return (
            200,
            "OK",
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "scope": "devices:core auth_keys",
            },
        )


# --------------------------------------------------------------------------- Proxmox VE


@dataclass
class PveToken:
    value: str
    expire: int = 0
    privsep: int = 1
    comment: str = ""


ROLES: dict[str, list[str]] = {
    "PVEVMAdmin": ["VM.Allocate", "VM.Audit", "VM.Clone", "VM.Config.Disk", "VM.PowerMgmt"],
    "PVEDatastoreUser": ["Datastore.AllocateSpace", "Datastore.Audit"],
    "PVESDNAdmin": ["SDN.Allocate", "SDN.Audit"],
}


class SimulatedProxmox(SimulatedApi):
    """The Proxmox VE API (`/api2/json`) over TLS: token read, list, create and delete, ACLs,
    the version and the caller's effective permissions. `events` records every change in
    order; tests may share that list with a simulated stack to check the order across both."""

    tls = True

    def __init__(self, userid: str = "ci@pve", events: list[str] | None = None) -> None:
        super().__init__()
        self.userid = userid
        self.events: list[str] = [] if events is None else events
        self.tokens: dict[tuple[str, str], PveToken] = {}
        self.acl: list[dict[str, Any]] = []
        self.created: set[str] = set()
        self.issued: list[str] = []
        """Every token value this server ever handed out or was seeded with."""
        self.reject_new_tokens = False
        """Tokens created through the API fail to authenticate (a broken rotation)."""
        self.fail: Callable[[str, str], Answer | None] | None = None
        """Called with (method, path) first; an answer it returns is sent instead."""

    def add_token(self, tokenid: str, *, expire: int = 0, privsep: int = 1) -> str:
        """A token with its own ACLs; returns `USER@REALM!TOKENID=SECRET`."""
        value = str(uuid.uuid4())
        self.issued.append(value)
        self.tokens[(self.userid, tokenid)] = PveToken(value, expire, privsep, "made by hand")
        full = f"{self.userid}!{tokenid}"
        self.acl += [
            {"path": "/", "type": "token", "ugid": full, "roleid": "PVEVMAdmin", "propagate": 1},
            {
                "path": "/storage",
                "type": "token",
                "ugid": full,
                "roleid": "PVEDatastoreUser",
                "propagate": 1,
            },
        ]
        return f"{full}={value}"

    def _caller(self, auth: str) -> str | None:
        """The full token id the header authenticates, or None."""
        prefix = "PVEAPIToken="
        if not auth.startswith(prefix):
            return None
        full, _, value = auth[len(prefix) :].partition("=")
        userid, _, tokenid = full.partition("!")
        token = self.tokens.get((userid, tokenid))
        if token is None or not secrets.compare_digest(token.value, value):
            return None
        if self.reject_new_tokens and full in self.created:
            return None
        if token.expire and token.expire < dt.datetime.now(dt.UTC).timestamp():
            return None
        return full

    def handle(self, method: str, target: str, auth: str, body: bytes) -> Answer:  # noqa: PLR0911 (a router)
        split = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(split.path).removeprefix("/api2/json")
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        caller = self._caller(auth)
        self.seen.append(Seen(method, path, caller or "anonymous"))
        if caller is None:
            return 401, "authentication failure", {"data": None}
        if self.fail is not None and (answer := self.fail(method, path)) is not None:
            return answer
        parts = path.strip("/").split("/")
        if method == "GET" and path == "/version":
            return 200, "OK", {"data": {"version": "8.3.2", "release": "8.3", "repoid": "3e76eec2"}}
        if method == "GET" and path == "/access/permissions":
            return 200, "OK", {"data": self._permissions(caller)}
        if path == "/access/acl":
            return self._acl(method, caller, params)
        if parts[:2] == ["access", "users"] and len(parts) >= 4 and parts[3] == "token":
            return self._token(method, parts[2], parts[4] if len(parts) > 4 else None, params)
        return 501, f"Method '{method} {path}' not implemented", {"data": None}

    def _permissions(self, caller: str) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for entry in self.acl:
            if entry["ugid"] == caller:
                privileges = found.setdefault(entry["path"], {})
                privileges.update(dict.fromkeys(ROLES.get(entry["roleid"], []), 1))
        return found

    def _acl(self, method: str, caller: str, params: dict[str, str]) -> Answer:
        if method == "GET":
            return 200, "OK", {"data": [dict(entry) for entry in self.acl]}
        if method == "PUT":
            if params.get("roles") not in ROLES:
                return (
                    400,
                    "Parameter verification failed.",
                    {
                        "data": None,
                        "errors": {"roles": "role does not exist"},
                    },
                )
            self.acl.append(
                {
                    "path": params["path"],
                    "type": "token",
                    "ugid": params["tokens"],
                    "roleid": params["roles"],
                    "propagate": int(params.get("propagate", "1")),
                }
            )
            self.events.append(
                f"proxmox: grant {params['roles']} on {params['path']} to "
                f"{params['tokens']} (by {caller})"
            )
            return 200, "OK", {"data": None}
        return 501, "not implemented", {"data": None}

    def _token(  # noqa: PLR0911 (a router)
        self, method: str, userid: str, tokenid: str | None, params: dict[str, str]
    ) -> Answer:
        if tokenid is None:
            if method != "GET":
                return 501, "not implemented", {"data": None}
            listed = [
                {"tokenid": t, "expire": tok.expire, "privsep": tok.privsep, "comment": tok.comment}
                for (u, t), tok in self.tokens.items()
                if u == userid
            ]
            return 200, "OK", {"data": listed}
        token = self.tokens.get((userid, tokenid))
        full = f"{userid}!{tokenid}"
        if method == "GET":
            if token is None:
                return 500, f"no such token '{tokenid}' for user '{userid}'", {"data": None}
            info = {"expire": token.expire, "privsep": token.privsep, "comment": token.comment}
            return 200, "OK", {"data": info}
        if method == "POST":
            if token is not None:
                return (
                    400,
                    "Parameter verification failed.",
                    {
                        "data": None,
                        "errors": {"tokenid": "Token already exists."},
                    },
                )
            value = str(uuid.uuid4())
            self.issued.append(value)
            privsep = int(params.get("privsep", "1"))
            expire = int(params.get("expire", "0"))
            self.tokens[(userid, tokenid)] = PveToken(
                value, expire, privsep, params.get("comment", "")
            )
            self.created.add(full)
            self.events.append(f"proxmox: create {full}")
            info = {"expire": expire, "privsep": privsep, "comment": params.get("comment", "")}
            return 200, "OK", {"data": {"full-tokenid": full, "info": info, "value": value}}
        if method == "DELETE":
            if token is None:
                return 500, f"no such token '{tokenid}' for user '{userid}'", {"data": None}
            del self.tokens[(userid, tokenid)]
            self.acl = [entry for entry in self.acl if entry["ugid"] != full]
            self.events.append(f"proxmox: delete {full}")
            return 200, "OK", {"data": None}
        return 501, "not implemented", {"data": None}
