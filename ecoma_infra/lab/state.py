"""The lab's record and the machine-wide rules around it: the model, the state file, the marker of
the lab that is up, the lock, root, and running commands."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ecoma_infra.errors import EcomaError

IMAGE_REVISION = 1


ASSETS_DIR = Path(__file__).with_name("assets")
RUN_DIR = Path("/run/ecoma-infra")
MARKER_FILE = RUN_DIR / "lab.json"
LOCK_FILE = RUN_DIR / "lab.lock"
NETNS_DIR = Path("/run/netns")
STATE_FILE = "lab.json"
# Marks a directory as a lab state dir: teardown deletes subdirectories only where it exists.
SENTINEL_FILE = ".ecoma-lab"
SSH_PORT = 22
DEFAULT_USER = "ecoma"
DEFAULT_LAB_ID = "ecoma"
READY_TIMEOUT_S = 20.0
DOWN_TIMEOUT_S = 15.0
LOCK_TIMEOUT_S = 300.0

HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
LAB_ID = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: "<lab_id>-v<i>" must fit IFNAMSIZ (15)
BY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


class LabError(EcomaError):
    """The lab could not be built, inspected or torn down."""


# --------------------------------------------------------------------------------------------
# Public model


@dataclass(frozen=True)
class LabDisk:
    """One disk of a lab host: a loop device linked at ``/dev/disk/by-id/<by_id>``."""

    tier: str
    by_id: str
    size_mb: int

    @property
    def path(self) -> str:
        """The stable path the inventory carries for this disk."""
        return f"/dev/disk/by-id/{self.by_id}"


@dataclass(frozen=True)
class LabHost:
    name: str
    ip: str
    disks: list[LabDisk] = field(default_factory=list)


@dataclass(frozen=True)
class LabSpec:
    hosts: list[LabHost]
    subnet: str = "10.41.1.0/24"
    gateway: str = "10.41.1.1"
    lab_id: str = DEFAULT_LAB_ID
    user: str = DEFAULT_USER


@dataclass
class LabDiskState:
    tier: str
    by_id: str
    size_mb: int
    backing_file: str
    loop_device: str = ""  # set once losetup attached it

    @property
    def path(self) -> str:
        return f"/dev/disk/by-id/{self.by_id}"


@dataclass
class LabHostState:
    name: str
    ip: str
    netns: str
    veth: str
    disks: list[LabDiskState]
    pid: int = 0  # the host's PID 1 as the machine sees it; 0 until the host is up


@dataclass
class LabState:
    """What a caller needs to reach the hosts; also the record ``lab_down`` works from."""

    state_dir: str
    lab_id: str
    subnet: str
    gateway: str
    bridge: str
    user: str
    private_key: str
    base_image: str
    hosts: list[LabHostState]
    up: bool = False

    def host(self, name: str) -> LabHostState:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise LabError(f"lab has no host {name!r} (hosts: {known})")

    def ssh_argv(self, name: str, *command: str, user: str | None = None) -> list[str]:
        """An ``ssh`` command line that runs ``command`` on host ``name``."""
        host = self.host(name)
        return [
            "ssh",
            *ssh_options(self.private_key),
            f"{user or self.user}@{host.ip}",
            *command,
        ]


@dataclass(frozen=True)
class LabHostStatus:
    name: str
    ip: str
    running: bool
    ssh_reachable: bool
    disks_present: dict[str, bool]

    @property
    def healthy(self) -> bool:
        return self.running and self.ssh_reachable and all(self.disks_present.values())


def load_state(state_dir: Path) -> LabState | None:
    """The recorded lab in ``state_dir``, or None when there is none."""
    path = state_dir.resolve() / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise LabError(f"cannot read lab state {path}: {error}; fix or delete the file") from error
    hosts = [
        LabHostState(**{**h, "disks": [LabDiskState(**d) for d in h["disks"]]})
        for h in raw.pop("hosts")
    ]
    return LabState(**raw, hosts=hosts)


# --------------------------------------------------------------------------------------------
# Machine-wide lock and marker


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"{action} needs root (network namespaces, loop devices, mounts); run it as root, "
            "e.g. `sudo ecoma-infra lab ...`"
        )


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with file_lock(LOCK_FILE, "lab up/down"):
        yield


@contextlib.contextmanager
def file_lock(path: Path, what: str) -> Iterator[None]:
    """An exclusive flock on ``path``; waits up to LOCK_TIMEOUT_S for another process."""
    with path.open("a") as handle:
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError(
                        f"another process holds {path} ({what}) for over {LOCK_TIMEOUT_S}s; "
                        f"wait for it or find it with `fuser {path}`"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_marker() -> dict[str, str] | None:
    try:
        data = json.loads(MARKER_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_marker(state: LabState) -> None:
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    _atomic_write(MARKER_FILE, json.dumps({"state_dir": state.state_dir,
                                           "lab_id": state.lab_id}) + "\n")  # fmt: skip


def clear_marker(state_dir: Path) -> None:
    marker = read_marker()
    if marker is not None and marker.get("state_dir") == str(state_dir):
        MARKER_FILE.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Small helpers


def save_state(state: LabState) -> None:
    _atomic_write(Path(state.state_dir) / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_command(argv: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout


def ssh_options(private_key: str) -> list[str]:
    return [
        "-i", private_key,
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
    ]  # fmt: skip
