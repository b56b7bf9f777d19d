"""The Proxmox VE API through `proxmoxer`, the maintained Python client: token checks and
rotation (`credentials`), the read-only look at the cluster that `doctor` takes, and the VM calls
of `ecoma-infra replace` (`seams.Hypervisor`: stop and start a VM, keep a stateful node's data
disks on a holder VM while the node's VM is rebuilt).

Token values live in `Secret` objects and reach nothing but the HTTP `Authorization` header that
proxmoxer builds. (proxmoxer logs answers only at DEBUG and pins its own loggers to WARNING, so a
new token's value, which arrives in an answer, is never logged.)"""

from __future__ import annotations

import re
import time
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import urllib3
from proxmoxer import ProxmoxAPI, ResourceException

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import VmRef
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
    """The Proxmox VE API through `proxmoxer` (its `https` backend on `requests`), authenticated
    with `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`: what token checks, rotation and
    `doctor` need. Every failure is a `ProxmoxApiError` that names the call, PVE's own words and
    what to check, with the secret masked."""

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
        split = urllib.parse.urlsplit(endpoint)
        if split.scheme != "https" or not split.hostname:
            raise EcomaError(f"Proxmox endpoint {endpoint!r}: use an https:// URL")
        self.endpoint = endpoint.rstrip("/")
        self.token_id = token_id
        self.insecure = insecure
        self.credential = credential
        self._secret = secret
        self._timeout = timeout
        host = f"[{split.hostname}]" if ":" in split.hostname else split.hostname
        # proxmoxer hands `verify_ssl` to requests' `verify`: False skips verification
        # (ecoma:proxmox.insecure, a self-signed PVE); True verifies against the system CAs, or
        # the bundle in REQUESTS_CA_BUNDLE (requests reads it when `verify` is True).
        self._client = ProxmoxAPI(
            host,
            port=split.port or DEFAULT_PORT,
            user=token_id.userid,
            token_name=token_id.tokenid,
            token_value=secret.reveal(),
            verify_ssl=not insecure,
            timeout=timeout,
        )
        self._clock: Callable[[], float] = time.monotonic
        self._sleep: Callable[[float], None] = time.sleep

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

    # --- tokens and ACLs (credentials check and rotate) ---------------------------------------

    def token_info(self, token_id: TokenId) -> dict[str, Any]:
        data = self._call("GET", _token_path(token_id))
        return data if isinstance(data, dict) else {}

    def token_ids(self, userid: str) -> set[str]:
        data = self._call("GET", ("access", "users", userid, "token"))
        return {str(item.get("tokenid")) for item in _items(data)}

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
        return [
            AclEntry(str(item["path"]), str(item["roleid"]), bool(int(item.get("propagate", 1))))
            for item in _items(self._call("GET", ("access", "acl")))
            if item.get("type") == "token" and item.get("ugid") == token_id.full
        ]

    def grant(self, entry: AclEntry, token_id: TokenId) -> None:
        self._call(
            "PUT",
            ("access", "acl"),
            {
                "path": entry.path,
                "roles": entry.roleid,
                "tokens": token_id.full,
                "propagate": "1" if entry.propagate else "0",
            },
        )

    def version(self) -> str:
        return str(self.version_info().get("version", ""))

    def permissions(self) -> dict[str, dict[str, Any]]:
        """The effective privileges of this client's own token, by path."""
        data = self._call("GET", ("access", "permissions"))
        return data if isinstance(data, dict) else {}

    # --- the cluster as `doctor` reads it -----------------------------------------------------

    def version_info(self) -> dict[str, Any]:
        """`{version, release, repoid}` (any authenticated user may ask)."""
        data = self._call("GET", ("version",))
        return data if isinstance(data, dict) else {}

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's hypervisors: `{node, status: online|offline|unknown, ...}`."""
        return _items(self._call("GET", ("nodes",)))

    def node_storage(self, node: str) -> list[dict[str, Any]]:
        """The datastores `node` sees, only those the token may audit or allocate on:
        `{storage, type, content: "images,rootdir", enabled, active, shared, ...}`."""
        return _items(self._call("GET", ("nodes", node, "storage")))

    def node_bridges(self, node: str) -> list[dict[str, Any]]:
        """The Linux and OVS bridges of `node` (needs Sys.Audit on /nodes/<node>)."""
        return _items(self._call("GET", ("nodes", node, "network"), {"type": "any_bridge"}))

    def vm_resources(self) -> list[dict[str, Any]]:
        """Every VM the token may audit: `{vmid, node, name, tags: "a;b", template, ...}`."""
        return _items(self._call("GET", ("cluster", "resources"), {"type": "vm"}))

    def vm_id_free(self, vmid: int) -> bool:
        """Whether no VM or container has `vmid`, visible to this token or not: PVE answers
        `/cluster/nextid?vmid=N` with N when it is free and HTTP 400 when it is taken."""
        try:
            self._call("GET", ("cluster", "nextid"), {"vmid": str(vmid)})
        except ProxmoxApiError as error:
            if error.status == 400:
                return False
            raise
        return True

    def vm_config(self, node: str, vmid: int) -> dict[str, Any]:
        """The VM's current configuration (needs VM.Audit on /vms/<vmid>)."""
        data = self._call("GET", ("nodes", node, "qemu", str(vmid), "config"), {"current": "1"})
        return data if isinstance(data, dict) else {}

    def sdn_zones(self) -> list[dict[str, Any]]:
        """SDN zones the token may audit: `{zone, type: simple|vlan|vxlan|..., nodes, ...}`."""
        return _items(self._call("GET", ("cluster", "sdn", "zones")))

    def sdn_vnets(self) -> list[dict[str, Any]]:
        """SDN vnets the token may audit: `{vnet, zone, tag, ...}`."""
        return _items(self._call("GET", ("cluster", "sdn", "vnets")))

    # --- VMs (seams.Hypervisor) ---------------------------------------------------------------

    def vm(self, name: str) -> VmRef | None:
        """The VM of that name (`GET /cluster/resources?type=vm`), or None; templates are not
        VMs here."""
        found = [
            item
            for item in self.vm_resources()
            if item.get("type") == "qemu" and item.get("name") == name and not item.get("template")
        ]
        if len(found) > 1:
            listed = ", ".join(f"{item.get('node')}/{item.get('vmid')}" for item in found)
            raise ProxmoxApiError(f"Proxmox: more than one VM is named {name} ({listed})")
        return VmRef(str(found[0]["node"]), int(found[0]["vmid"])) if found else None

    def disks(self, vm: VmRef) -> dict[str, str]:
        config = self._call("GET", (*_vm_path(vm), "config"))
        return {
            str(key): str(value)
            for key, value in (config if isinstance(config, dict) else {}).items()
            if _DISK_SLOT.match(str(key)) and "media=cdrom" not in str(value)
        }

    def running(self, vm: VmRef) -> bool:
        data = self._call("GET", (*_vm_path(vm), "status", "current"))
        return isinstance(data, dict) and data.get("status") == "running"

    def stop(self, vm: VmRef, *, timeout: float = 180.0) -> None:
        """An ACPI shutdown (the guest flushes its filesystems), a hard stop after `timeout`."""
        if not self.running(vm):
            return
        task = self._call(
            "POST",
            (*_vm_path(vm), "status", "shutdown"),
            {"timeout": str(int(timeout)), "forceStop": "1"},
        )
        self.wait_task(vm.hypervisor, str(task), timeout=timeout + 60)

    def start(self, vm: VmRef, *, timeout: float) -> None:
        if not self.running(vm):
            task = self._call("POST", (*_vm_path(vm), "status", "start"))
            self.wait_task(vm.hypervisor, str(task))
        deadline = self._clock() + timeout
        while True:
            try:
                self._call("POST", (*_vm_path(vm), "agent", "ping"))
                return
            except ProxmoxApiError as error:
                if error.status not in (500, 596) or self._clock() >= deadline:
                    raise ProxmoxApiError(
                        f"VM {vm.vm_id} on {vm.hypervisor} started, but its guest agent did not "
                        f"answer within {timeout:.0f} s: {error}",
                        error.status,
                    ) from None
            self._sleep(5.0)

    def create_holder(self, hypervisor: str, name: str, description: str) -> VmRef:
        vm_id = int(str(self._call("GET", ("cluster", "nextid"))))
        holder = VmRef(hypervisor, vm_id)
        task = self._call(
            "POST",
            ("nodes", hypervisor, "qemu"),
            {
                "vmid": str(vm_id),
                "name": name,
                "description": description,
                # Nobody deletes it by accident while it keeps the disks (PVE refuses to remove
                # a protected VM and its disks).
                "protection": "1",
                "start": "0",
            },
        )
        self.wait_task(hypervisor, str(task))
        return holder

    def move_disk(self, vm: VmRef, slot: str, target: VmRef) -> None:
        # PVE's reassign (qemu-server PVE/API2/Qemu.pm, move_vm_disk with target-vmid): both
        # VMs on one node, the source stopped, the target slot free; it renames the volume to
        # the target's VM id and keeps the drive's options (serial=<tier> among them).
        task = self._call(
            "POST",
            (*_vm_path(vm), "move_disk"),
            {"disk": slot, "target-vmid": str(target.vm_id), "target-disk": slot},
        )
        self.wait_task(vm.hypervisor, str(task))

    def delete_holder(self, vm: VmRef) -> None:
        left = self.disks(vm)
        if left:
            raise ProxmoxApiError(
                f"VM {vm.vm_id} on {vm.hypervisor} still holds {', '.join(sorted(left))}: "
                "not deleted"
            )
        self._call("PUT", (*_vm_path(vm), "config"), {"protection": "0"})
        task = self._call("DELETE", _vm_path(vm), {"purge": "1", "destroy-unreferenced-disks": "0"})
        self.wait_task(vm.hypervisor, str(task))

    def wait_task(self, hypervisor: str, upid: str, *, timeout: float = 600.0) -> None:
        """Wait for a PVE task (`UPID:...`) to stop; `ProxmoxApiError` unless it ended OK."""
        path = ("nodes", hypervisor, "tasks", upid, "status")
        deadline = self._clock() + timeout
        while True:
            data = self._call("GET", path)
            status = data if isinstance(data, dict) else {}
            if status.get("status") == "stopped":
                if status.get("exitstatus") != "OK":
                    raise ProxmoxApiError(
                        f"Proxmox task {upid} on {hypervisor} failed: "
                        f"{status.get('exitstatus') or 'no exit status'}"
                    )
                return
            if self._clock() >= deadline:
                raise ProxmoxApiError(
                    f"Proxmox task {upid} on {hypervisor} still runs after {timeout:.0f} s"
                )
            self._sleep(1.0)

    # --- transport ----------------------------------------------------------------------------

    def _call(
        self, method: str, path: tuple[str, ...], params: Mapping[str, str] | None = None
    ) -> Any:
        # Each segment quoted whole: a user id may hold characters a path must not.
        resource = self._client([urllib.parse.quote(part, safe="") for part in path])
        shown = f"Proxmox API {method} {_shown(path)}"
        try:
            with warnings.catch_warnings():
                # ecoma:proxmox.insecure is the stack's own choice, reported by `doctor`; urllib3
                # would print a warning for every call.
                warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                data = _send(resource, method, dict(params or {}))
        except ResourceException as error:
            raise ProxmoxApiError(
                self._redact(
                    f"{shown}: HTTP {error.status_code}: {_proxmox_message(error)}. "
                    f"Check: {self._hint(error.status_code, path)}"
                ),
                error.status_code,
            ) from None
        except requests.exceptions.SSLError as error:
            raise ProxmoxApiError(
                self._redact(
                    f"{shown}: no answer from {self.endpoint}: the TLS handshake failed "
                    f"({_reason(error)}). Check: a self-signed PVE certificate (set "
                    "ecoma:proxmox.insecure: true, or export REQUESTS_CA_BUNDLE=<the PVE CA's "
                    "PEM file>)"
                )
            ) from None
        except (requests.exceptions.RequestException, OSError) as error:
            raise ProxmoxApiError(
                self._redact(
                    f"{shown}: no answer from {self.endpoint}: {_reason(error)}. Check "
                    "ecoma:proxmox.endpoint and the network"
                )
            ) from None
        if isinstance(data, dict) and isinstance(data.get("errors"), bytes):
            # proxmoxer's answer when a 2xx body is not JSON (a proxy's page, not PVE).
            raise ProxmoxApiError(f"{shown}: the answer is not JSON")
        return data

    def _hint(self, status: int, path: tuple[str, ...]) -> str:
        if status == 401:
            return f"{self.credential} ({self.token_id.full}) is a valid token, not expired"
        if status == 403 and path[:2] in (("access", "users"), ("access", "acl")):
            return (
                f"the privileges of {self.token_id.full}: tokens of {self.token_id.userid} need "
                f"User.Modify on /access/users/{self.token_id.userid}; copying ACLs needs "
                "Permissions.Modify on their paths; listing ACLs needs Sys.Audit on /access"
            )
        if status == 403:
            return (
                f"the privileges of {self.token_id.full} (PVE names the path and privilege "
                "above; a privilege-separated token needs them on itself and on its user)"
            )
        if status >= 500:
            return "the message above and the PVE node (journalctl -u pvedaemon -u pveproxy)"
        return "the parameters named above"

    def _redact(self, text: str) -> str:
        secret = self._secret.reveal()
        return text.replace(secret, "[secret]") if secret else text


DEFAULT_PORT = 8006  # pveproxy's port
# Disk slots of a QEMU VM's config (unusedN holds detached volumes, not counted here).
_DISK_SLOT = re.compile(r"^(virtio|scsi|sata|ide)[0-9]+$")


def _vm_path(vm: VmRef) -> tuple[str, ...]:
    return ("nodes", vm.hypervisor, "qemu", str(vm.vm_id))


def _send(resource: Any, method: str, params: dict[str, str]) -> Any:
    """GET and DELETE send `params` in the query string, POST and PUT as a form."""
    if method == "GET":
        return resource.get(**params)
    if method == "DELETE":
        return resource.delete(**params)
    if method == "POST":
        return resource.post(**params)
    return resource.put(**params)


def _items(data: Any) -> list[dict[str, Any]]:
    return [item for item in data or [] if isinstance(item, dict)] if isinstance(data, list) else []


def _token_path(token_id: TokenId) -> tuple[str, ...]:
    return ("access", "users", token_id.userid, "token", token_id.tokenid)


def _shown(path: tuple[str, ...]) -> str:
    return "/" + "/".join(path)


def _reason(error: BaseException) -> str:
    """The innermost cause that requests wraps (urllib3's reason), not the retry noise."""
    reason = error
    for _ in range(5):
        inner = getattr(reason, "reason", None)
        if inner is None and reason.args and isinstance(reason.args[0], BaseException):
            inner = reason.args[0]
        if not isinstance(inner, BaseException):
            break
        reason = inner
    return str(reason) or type(reason).__name__


def _proxmox_message(error: ResourceException) -> str:
    """Proxmox puts its message in the status line, parameter errors in `errors`."""
    message = str(error.content or error.status_message or "no message")
    errors = error.errors
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
