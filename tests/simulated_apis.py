"""Simulated Tailscale and Proxmox VE APIs: real HTTP servers on 127.0.0.1 (Proxmox over TLS
with a self-signed certificate made at runtime) that check the Authorization header and answer
with the JSON shapes of the real APIs. Secrets are generated per run; nothing key-like is a
literal here.

Use as context managers (`with SimulatedTailscale() as api: ...`); fixtures in the test modules
wrap them so that every server is shut down after its test.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import ipaddress
import json
import re
import secrets
import socket
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
        self.certificate: str | None = None
        """With TLS: the PEM of the server's self-signed certificate (a CA bundle for clients)."""

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
            cert_file, key_file = _self_signed_certificate(Path(self._tmp.name))
            context.load_cert_chain(cert_file, key_file)
            self.certificate = cert_file
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


# A fresh tailnet's policy: everyone reaches everything, Tailscale SSH to one's own devices.
DEFAULT_TAILNET_POLICY: dict[str, Any] = {
    "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
    "ssh": [
        {
            "action": "check",
            "src": ["autogroup:member"],
            "dst": ["autogroup:self"],
            "users": ["autogroup:nonroot", "root"],
        }
    ],
}


class SimulatedTailscale(SimulatedApi):
    """The Tailscale API v2: devices (routes with `fields=all`), device deletion, keys, the
    policy file (read as JSON, validated without applying) and the OAuth token endpoint, whose
    access tokens carry the client's scopes and are refused (403) outside them."""

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
        self.client_scopes = "devices:core auth_keys"
        """The scopes of the OAuth client (space-separated), granted to each access token."""
        self.say_scopes = True
        """The token answer carries `scope`."""
        self._token_scopes: dict[str, frozenset[str]] = {}
        self.policy: dict[str, Any] = copy.deepcopy(DEFAULT_TAILNET_POLICY)
        self.validate_message = ""
        """What POST /acl/validate says (empty: the policy is valid)."""
        self.validated: list[dict[str, Any]] = []

    def add_device(
        self,
        hostname: str,
        *,
        tags: tuple[str, ...] = ("tag:ecoma-wkr",),
        routes: tuple[str, ...] = (),
    ) -> str:
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
            "tags": list(tags),
            "authorized": True,
            "isExternal": False,
            "keyExpiryDisabled": True,
            "advertisedRoutes": list(routes),
            "enabledRoutes": list(routes),
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

    def _scopes(self, auth: str) -> frozenset[str] | None:
        """The scopes of the caller's credential (an API key: all); None: not authorized."""
        scheme, _, credential = auth.partition(" ")
        if scheme == "Basic":  # the API also takes the key as the basic-auth user name
            credential = base64.b64decode(credential).decode().partition(":")[0]
        elif scheme != "Bearer":
            return None
        if credential == self.api_key:
            return frozenset({"all"})
        if credential in self.access_tokens:
            return self._token_scopes.get(credential, frozenset())
        return None

    @staticmethod
    def _allows(scopes: frozenset[str], scope: str, method: str) -> bool:
        if "all" in scopes or scope in scopes:
            return True
        return method == "GET" and ("all:read" in scopes or f"{scope}:read" in scopes)

    def handle(self, method: str, target: str, auth: str, body: bytes) -> Answer:  # noqa: PLR0911, PLR0912 (a router)
        split = urllib.parse.urlsplit(target)
        path, query = split.path, urllib.parse.parse_qs(split.query)
        kind = "bearer" if auth.startswith("Bearer ") else ("none" if not auth else "other")
        self.seen.append(Seen(method, path, kind))
        if method == "POST" and path == "/api/v2/oauth/token":
            return self._token(body)
        scopes = self._scopes(auth)
        if scopes is None:
            return 401, "Unauthorized", {"message": "API token invalid"}
        prefix = f"/api/v2/tailnet/{urllib.parse.quote(self.tailnet, safe='')}"
        needed = (
            "policy_file"
            if path.startswith(f"{prefix}/acl")
            else "auth_keys"
            if path.startswith(f"{prefix}/keys")
            else "devices:core"
        )
        if not self._allows(scopes, needed, method if not path.endswith("/validate") else "GET"):
            return 403, "Forbidden", {"message": "calling actor does not have enough permissions"}
        if method == "GET" and path == f"{prefix}/devices":
            devices = [dict(d) for d in self.devices.values()]
            if query.get("fields") != ["all"]:  # the default listing omits the routes
                for device in devices:
                    device.pop("advertisedRoutes", None)
                    device.pop("enabledRoutes", None)
            return 200, "OK", {"devices": devices}
        if method == "GET" and path == f"{prefix}/keys":
            return 200, "OK", {"keys": [{"id": key} for key in self.keys]}
        if method == "GET" and path == f"{prefix}/acl":
            return 200, "OK", copy.deepcopy(self.policy)
        if method == "POST" and path == f"{prefix}/acl/validate":
            self.validated.append(json.loads(body or b"{}"))
            if self.validate_message:
                data = [{"user": "tag:ecoma-wkr", "errors": ["test failed"]}]
                return 200, "OK", {"message": self.validate_message, "data": data}
            return 200, "OK", {}
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
        self._token_scopes[token] = frozenset(self.client_scopes.split())
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
        }
        if self.say_scopes:
            answer["scope"] = self.client_scopes
        return 200, "OK", answer


# --------------------------------------------------------------------------- Proxmox VE


@dataclass
class PveToken:
    value: str
    expire: int = 0
    privsep: int = 1
    comment: str = ""


# Every privilege of PVE 8/9 that this project's checks name (pve-access-control's list).
ALL_PRIVILEGES = [
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
]

ROLES: dict[str, list[str]] = {
    "PVEVMAdmin": ["VM.Allocate", "VM.Audit", "VM.Clone", "VM.Config.Disk", "VM.PowerMgmt"],
    "PVEDatastoreUser": ["Datastore.AllocateSpace", "Datastore.Audit"],
    "PVESDNAdmin": ["SDN.Allocate", "SDN.Audit"],
    "Administrator": ALL_PRIVILEGES,
}
# Paths PVE always reports effective permissions for (pve-access-control
# `get_effective_permissions`), besides every path that has an ACL.
DEFAULT_PERMISSION_PATHS = ("/", "/access", "/nodes", "/pool", "/sdn", "/storage", "/vms")


@dataclass
class PveVm:
    """A QEMU VM: its config (disk slots -> drive strings like
    `local-lvm:vm-5301-disk-1,serial=warm,size=500G`) and whether it runs."""

    node: str
    vmid: int
    name: str
    config: dict[str, str]
    running: bool = False
    agent: bool = True  # its guest agent answers once it runs
    tags: str = ""  # "a;b", as /cluster/resources lists them
    template: bool = False

    def resource(self) -> dict[str, Any]:
        """The VM as `/cluster/resources?type=vm` lists it."""
        return {
            "id": f"qemu/{self.vmid}",
            "type": "qemu",
            "vmid": self.vmid,
            "node": self.node,
            "name": self.name,
            "status": "running" if self.running else "stopped",
            "template": 1 if self.template else 0,
            "tags": self.tags,
        }


_DRIVE_SLOT = re.compile(r"^(virtio|scsi|sata|ide)[0-9]+$")


class SimulatedProxmox(SimulatedApi):
    """The Proxmox VE API (`/api2/json`) over TLS: token read, list, create and delete, ACLs,
    the version and the caller's effective permissions; and the cluster as `doctor` reads it:
    nodes, their datastores and bridges, VMs (`/cluster/resources`, `/cluster/nextid`, a VM's
    config), SDN zones and vnets. GET parameters come in the query string, POST and PUT ones in
    the form body, as proxmoxer sends them. `events` records every change in order; tests may
    share that list with a simulated stack to check the order across both.

    VMs and their volumes, with the checks qemu-server makes (PVE/API2/Qemu.pm): a disk moves to
    another VM (`move_disk` with `target-vmid`) only between stopped VMs on one node into a free
    slot, renamed to the target's id with its drive options kept; a protected VM is not
    deleted; a delete with `destroy-unreferenced-disks` also destroys every volume named after
    the VM id. `volumes` holds each volume's content, so tests see what survives."""

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
        self.version = {"version": "8.3.2", "release": "8.3", "repoid": "3e76eec2"}
        self.nodes: dict[str, str] = {}
        """Hypervisor -> status (online, offline, unknown)."""
        self.storage: dict[str, dict[str, dict[str, Any]]] = {}
        """Hypervisor -> datastore -> its entry as `/nodes/{node}/storage` lists it."""
        self.bridges: dict[str, list[str]] = {}
        self.bridges_need_audit = False
        """Listing a node's network answers 403 (the token lacks Sys.Audit on /nodes/<node>)."""
        self.hidden: set[int] = set()
        """VM ids that exist but that the token may not audit (absent from listings)."""
        self.zones: dict[str, dict[str, Any]] = {}
        self.vnets: dict[str, dict[str, Any]] = {}
        self.sdn_available = True
        self.vms: dict[int, PveVm] = {}
        self.volumes: dict[str, str] = {}  # volume id -> its content
        self._tasks = 0

    def add_vm(
        self,
        vmid: int,
        node: str,
        name: str,
        *,
        tags: str = "",
        template: bool = False,
        config: dict[str, Any] | None = None,
        disks: dict[str, tuple[str, str]] | None = None,
        running: bool = False,
    ) -> PveVm:
        """A VM with its config and disks `{slot: (options, content)}` (volumes are named
        vm-<id>-disk-<n>)."""
        vm = PveVm(
            node,
            vmid,
            name,
            {"name": name, **(config or {})},
            running=running,
            tags=tags,
            template=template,
        )
        for slot, (options, content) in sorted((disks or {}).items()):
            volume = self._new_volume(vmid)
            self.volumes[volume] = content
            vm.config[slot] = f"{volume},{options}" if options else volume
        self.vms[vmid] = vm
        return vm

    def destroy_vm(self, vmid: int, *, unreferenced: bool) -> None:
        """What deleting a VM does (the Pulumi provider deletes with
        destroy-unreferenced-disks, its default)."""
        vm = self.vms.pop(vmid)
        for slot, drive in vm.config.items():
            if _DRIVE_SLOT.match(slot) or slot.startswith("unused"):
                self.volumes.pop(drive.split(",", 1)[0], None)
        if unreferenced:
            for volume in [v for v in self.volumes if f":vm-{vmid}-disk-" in v]:
                del self.volumes[volume]
        self.events.append(f"proxmox: destroy VM {vmid}")

    def slot_contents(self, vmid: int) -> dict[str, str]:
        """What each disk slot of the VM holds now."""
        vm = self.vms[vmid]
        return {
            slot: self.volumes.get(drive.split(",", 1)[0], "<missing volume>")
            for slot, drive in vm.config.items()
            if _DRIVE_SLOT.match(slot)
        }

    def _new_volume(self, vmid: int, storage: str = "local-lvm") -> str:
        index = 0
        while f"{storage}:vm-{vmid}-disk-{index}" in self.volumes:
            index += 1
        return f"{storage}:vm-{vmid}-disk-{index}"

    def _task(self, node: str) -> Answer:
        self._tasks += 1
        return (
            200,
            "OK",
            {"data": f"UPID:{node}:{self._tasks:08X}:00000000:6650A1B2:qm:ecoma:ci@pve!:"},
        )

    def _vm_call(  # noqa: PLR0911 (a router)
        self, method: str, parts: list[str], params: dict[str, str], query: dict[str, str]
    ) -> Answer:
        node, vmid = parts[1], int(parts[3])
        vm = self.vms.get(vmid)
        if vm is None or vm.node != node:
            return (
                500,
                f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist",
                {"data": None},
            )
        action = "/".join(parts[4:])
        if method == "GET" and action == "config":
            return 200, "OK", {"data": dict(vm.config)}
        if method == "PUT" and action == "config":
            vm.config.update({k: v for k, v in params.items() if k == "protection"})
            return 200, "OK", {"data": None}
        if method == "GET" and action == "status/current":
            return 200, "OK", {"data": {"status": "running" if vm.running else "stopped"}}
        if method == "POST" and action in ("status/shutdown", "status/start"):
            vm.running = action == "status/start"
            self.events.append(f"proxmox: {action.split('/')[1]} VM {vmid}")
            return self._task(node)
        if method == "POST" and action == "agent/ping":
            if vm.running and vm.agent:
                return 200, "OK", {"data": {"result": {}}}
            return 500, "QEMU guest agent is not running", {"data": None}
        if method == "POST" and action == "move_disk":
            return self._move_disk(vm, params)
        if method == "DELETE" and action == "":
            if vm.config.get("protection") == "1":
                return 500, f"can't remove VM {vmid} - protection mode enabled", {"data": None}
            self.destroy_vm(vmid, unreferenced=query.get("destroy-unreferenced-disks") == "1")
            return self._task(node)
        return 501, f"Method '{method} {action}' not implemented", {"data": None}

    def _move_disk(self, vm: PveVm, params: dict[str, str]) -> Answer:
        disk = params["disk"]
        target = self.vms.get(int(params["target-vmid"]))
        slot = params.get("target-disk", disk)
        problem = (
            "could not find target VM" if target is None
            else f"Both VMs need to be on the same node ({vm.node} != {target.node})"
            if vm.node != target.node
            else f"Disk '{disk}' for VM '{vm.vmid}' does not exist" if disk not in vm.config
            else f"Target disk key '{slot}' is already in use for VM '{target.vmid}'"
            if slot in target.config
            else "Cannot move disk to another VM while the source VM is running - detach first"
            if vm.running
            else ""
        )  # fmt: skip
        if problem or target is None:
            return 500, problem, {"data": None}
        volume, _, options = vm.config.pop(disk).partition(",")
        renamed = self._new_volume(target.vmid, volume.split(":", 1)[0])
        self.volumes[renamed] = self.volumes.pop(volume)
        target.config[slot] = f"{renamed},{options}" if options else renamed
        self.events.append(f"proxmox: move {disk} of VM {vm.vmid} to VM {target.vmid} as {slot}")
        return self._task(vm.node)

    def add_node(self, name: str, status: str = "online") -> None:
        self.nodes[name] = status
        self.storage.setdefault(name, {})
        self.bridges.setdefault(name, ["vmbr0"])

    def add_storage(
        self, node: str, storage: str, content: str, *, kind: str = "dir", **extra: Any
    ) -> None:
        self.storage.setdefault(node, {})[storage] = {
            "storage": storage,
            "type": kind,
            "content": content,
            "enabled": 1,
            "active": 1,
            "shared": 0,
            "avail": 500 * 2**30,
            "total": 1000 * 2**30,
            **extra,
        }

    def add_token(
        self,
        tokenid: str,
        *,
        expire: int = 0,
        privsep: int = 1,
        grants: tuple[tuple[str, str], ...] = (
            ("/", "PVEVMAdmin"),
            ("/storage", "PVEDatastoreUser"),
        ),
    ) -> str:
        """A token with its own ACLs (propagated `(path, role)` grants); returns
        `USER@REALM!TOKENID=SECRET`."""
        value = str(uuid.uuid4())
        self.issued.append(value)
        self.tokens[(self.userid, tokenid)] = PveToken(value, expire, privsep, "made by hand")
        full = f"{self.userid}!{tokenid}"
        self.acl += [
            {"path": path, "type": "token", "ugid": full, "roleid": role, "propagate": 1}
            for path, role in grants
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
        params = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
        params.update({k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()})
        caller = self._caller(auth)
        self.seen.append(Seen(method, path, caller or "anonymous"))
        if caller is None:
            return 401, "authentication failure", {"data": None}
        if self.fail is not None and (answer := self.fail(method, path)) is not None:
            return answer
        parts = path.strip("/").split("/")
        query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
        if parts[:1] == ["nodes"] and len(parts) >= 4 and parts[2] == "qemu":
            return self._vm_call(method, parts, params, query)
        if parts[:1] == ["nodes"] and len(parts) == 5 and parts[2] == "tasks":
            return 200, "OK", {"data": {"status": "stopped", "exitstatus": "OK"}}
        if method == "POST" and parts[:1] == ["nodes"] and parts[2:] == ["qemu"]:
            vmid = int(params["vmid"])
            if vmid in self.vms:
                return 500, f"VM {vmid} already exists", {"data": None}
            vm = PveVm(parts[1], vmid, params["name"], {"name": params["name"]})
            vm.config.update({k: params[k] for k in ("description", "protection") if k in params})
            self.vms[vmid] = vm
            self.events.append(f"proxmox: create VM {vmid} {params['name']}")
            return self._task(parts[1])
        if method == "GET" and path == "/version":
            return 200, "OK", {"data": dict(self.version)}
        if method == "GET" and path == "/access/permissions":
            return 200, "OK", {"data": self._permissions(caller)}
        if path == "/access/acl":
            return self._acl(method, caller, params)
        if parts[:2] == ["access", "users"] and len(parts) >= 4 and parts[3] == "token":
            return self._token(method, parts[2], parts[4] if len(parts) > 4 else None, params)
        if method == "GET" and (parts[0] == "nodes" or parts[0] == "cluster"):
            return self._cluster(path, parts, params)
        return 501, f"Method '{method} {path}' not implemented", {"data": None}

    def _cluster(  # noqa: PLR0911 (a router)
        self, path: str, parts: list[str], params: dict[str, str]
    ) -> Answer:
        """The read-only calls `doctor` makes."""
        if parts == ["nodes"]:
            listed = [{"node": n, "status": s, "level": ""} for n, s in self.nodes.items()]
            return 200, "OK", {"data": listed}
        if len(parts) >= 3 and parts[0] == "nodes" and parts[1] not in self.nodes:
            return 595, f"no such cluster node '{parts[1]}'", {"data": None}
        if len(parts) == 3 and parts[2] == "storage":
            return 200, "OK", {"data": list(self.storage.get(parts[1], {}).values())}
        if len(parts) == 3 and parts[2] == "network":
            if self.bridges_need_audit:
                return (
                    403,
                    f"Permission check failed (/nodes/{parts[1]}, Sys.Audit)",
                    {"data": None},
                )
            bridges = [{"iface": b, "type": "bridge"} for b in self.bridges.get(parts[1], [])]
            return 200, "OK", {"data": bridges}
        if parts == ["cluster", "resources"]:
            visible = [
                vm.resource()
                for vmid, vm in sorted(self.vms.items())
                if vmid not in self.hidden and params.get("type") in (None, "vm")
            ]
            return 200, "OK", {"data": visible}
        if parts == ["cluster", "nextid"]:
            if "vmid" not in params:
                free = next(i for i in range(100, 10**6) if i not in self.vms)
                return 200, "OK", {"data": str(free)}
            vmid = int(params["vmid"])
            if vmid in self.vms:
                return (
                    400,
                    "Parameter verification failed.",
                    {"data": None, "errors": {"vmid": f"VM {vmid} already exists"}},
                )
            return 200, "OK", {"data": str(vmid)}
        if parts[:2] == ["cluster", "sdn"] and not self.sdn_available:
            return 501, f"Method 'GET {path}' not implemented", {"data": None}
        if parts == ["cluster", "sdn", "zones"]:
            return 200, "OK", {"data": list(self.zones.values())}
        if parts == ["cluster", "sdn", "vnets"]:
            return 200, "OK", {"data": list(self.vnets.values())}
        return 501, f"Method 'GET {path}' not implemented", {"data": None}

    def _permissions(self, caller: str) -> dict[str, dict[str, int]]:
        """The effective privileges at every default path and every path with an ACL, each
        with its propagate flag: walking from / down, a deeper ACL replaces what a propagated
        one above gave (pve-access-control `permissions`, `get_effective_permissions`)."""
        mine = [entry for entry in self.acl if entry["ugid"] == caller]
        paths = set(DEFAULT_PERMISSION_PATHS) | {entry["path"] for entry in mine}
        found: dict[str, dict[str, int]] = {}
        for path in sorted(paths):
            privileges: dict[str, int] = {}
            for ancestor in _ancestors(path):
                for entry in mine:
                    if entry["path"] != ancestor:
                        continue
                    propagate = int(entry.get("propagate", 1))
                    if ancestor != path and not propagate:
                        continue
                    privileges.update(dict.fromkeys(ROLES.get(entry["roleid"], []), propagate))
            if privileges:
                found[path] = privileges
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


def _ancestors(path: str) -> list[str]:
    """`/vms/100` -> `/`, `/vms`, `/vms/100`."""
    parts = [part for part in path.split("/") if part]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


# --------------------------------------------------------------------------- DNS


class SimulatedResolver:
    """A DNS server on 127.0.0.1 (UDP, a free port) built with dnspython: `mode` "answer" gives
    an A record for the names in `records` and NXDOMAIN for others, "refuse" answers REFUSED,
    "silent" reads queries and never answers."""

    def __init__(self, records: dict[str, str] | None = None, mode: str = "answer") -> None:
        self.records = dict(records or {})
        self.mode = mode
        self.asked: list[str] = []
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        assert self._socket is not None, "server not started"
        return int(self._socket.getsockname()[1])

    def __enter__(self) -> Self:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._socket is not None:
            self._socket.close()

    def _serve(self) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        assert self._socket is not None
        while not self._stop.is_set():
            try:
                data, client = self._socket.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(data)
            name = query.question[0].name.to_text(omit_final_dot=True)
            self.asked.append(name)
            if self.mode == "silent":
                continue
            response = dns.message.make_response(query)
            if self.mode == "refuse":
                response.set_rcode(dns.rcode.REFUSED)
            elif name in self.records:
                response.answer.append(
                    dns.rrset.from_text(name + ".", 60, "IN", "A", self.records[name])
                )
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._socket.sendto(response.to_wire(), client)
