"""The lab: real local Debian 12 hosts in network namespaces, for running the real playbook.

Each lab host is a set of namespaces on this machine, not a VM:

- a network namespace ``<lab_id>-<host>`` whose ``eth0`` is one end of a veth pair; the other end
  (``<lab_id>-v<i>``) sits on the bridge ``<lab_id>-br0`` that holds the gateway address;
- mount, uts and pid namespaces (``unshare``) whose root is an overlay of one cached debootstrap
  rootfs, with a private ``/dev`` that holds only this host's loop devices and the
  ``/dev/disk/by-id/<by_id>`` links to them (the proxmox row of docs/contracts.md);
- sshd as the only service, reachable with a lab key pair kept in the state dir.

Everything a lab makes is recorded in ``<state_dir>/lab.json`` as soon as it exists, and is also
found by name (netns/veth/bridge prefix, loop devices backed by files in the state dir), so
``lab_down`` cleans up after a crash or a half-made lab. Swap is kernel-global: a ``swapon`` in a
host shows in the machine's /proc/swaps, so teardown swaps off every lab loop device.

Only one lab may exist per machine (the bridge holds the gateway address); a marker under
/run/ecoma-infra names the state dir of the lab that is up.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ecoma_infra.errors import EcomaError

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the playbook needs on a host: python3 for Ansible, sshd, and the storage role's tools
# (blkid/wipefs/lsblk/findmnt/mount/swapon: util-linux + mount; mkfs.ext4: e2fsprogs;
# mkfs.xfs: xfsprogs; mkswap: util-linux); sudo for a non-root ansible_user; gdisk/parted so
# tests can put unexpected partition tables on a disk; iputils-ping for reachability checks.
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "openssh-server",
    "openssh-sftp-server",
    "e2fsprogs",
    "xfsprogs",
    "util-linux",
    "mount",
    "iproute2",
    "iputils-ping",
    "sudo",
    "procps",
    "udev",
    "gdisk",
    "parted",
)
# Bump when the image's post-build customisation changes, so cached images are rebuilt.
IMAGE_REVISION = 1

ASSETS_DIR = Path(__file__).with_name("lab_assets")
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

_HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_LAB_ID = re.compile(r"^[a-z][a-z0-9]{0,7}$")  # short: "<lab_id>-v<i>" must fit IFNAMSIZ (15)
_BY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


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
            *_ssh_options(self.private_key),
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


# --------------------------------------------------------------------------------------------
# Public functions


def lab_up(
    spec: LabSpec,
    state_dir: Path,
    *,
    cache_dir: Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    ready_timeout: float = READY_TIMEOUT_S,
) -> LabState:
    """Build the lab described by ``spec`` and return once sshd answers on every host.

    On any failure the half-made lab is torn down before the error is raised.
    """
    _require_root("lab up")
    _validate_spec(spec)
    state_dir = state_dir.resolve()
    base = ensure_base_image(cache_dir, mirror=mirror)
    _refuse_foreign_state_dir(state_dir)
    with _machine_lock():
        _refuse_if_a_lab_exists(spec.lab_id, state_dir)
        _teardown(state_dir, spec.lab_id)  # leftovers of an earlier crash in this state dir
        state = _new_state(spec, state_dir, base)
        _write_marker(state)
        try:
            _build(state, ready_timeout)
        except BaseException:
            _teardown(state_dir, spec.lab_id)
            raise
    return state


def lab_down(state_dir: Path, *, lab_id: str | None = None) -> None:
    """Remove every namespace, process, loop device, swap, veth and bridge of the lab.

    Idempotent; works from the recorded state and, where the record is missing or incomplete,
    from discovery by name prefix and by loop backing files inside ``state_dir``.
    """
    _require_root("lab down")
    state_dir = state_dir.resolve()
    with _machine_lock():
        _refuse_to_take_down_another_lab(state_dir)
        _teardown(state_dir, lab_id)


def lab_status(state_dir: Path) -> list[LabHostStatus]:
    """Per host of the recorded lab: running? ssh login works? each by-id disk present?"""
    # Without root every host would look down (other users cannot see into the namespaces).
    _require_root("lab status")
    state = load_state(state_dir)
    if state is None:
        return []
    return [_host_status(state, host) for host in state.hosts]


def current_lab() -> Path | None:
    """The state dir of the lab that is up on this machine, or None when no lab is up."""
    marker = _read_marker()
    if marker is None or not _present_lab_objects(str(marker.get("lab_id", DEFAULT_LAB_ID))):
        return None
    return Path(marker["state_dir"]) if marker.get("state_dir") else None


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


def lab_inventory_overrides(state: LabState) -> dict[str, dict[str, str]]:
    """Hostvars that point the real inventory at the lab hosts; merge them per host."""
    return {
        host.name: {
            "ansible_host": host.ip,
            "ansible_user": state.user,
            "ansible_ssh_private_key_file": state.private_key,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        }
        for host in state.hosts
    }


def default_cache_dir() -> Path:
    """Where the base image lives: $ECOMA_LAB_CACHE, else /var/cache/ecoma-infra/lab for root,
    else $XDG_CACHE_HOME/ecoma-infra/lab."""
    if env := os.environ.get("ECOMA_LAB_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/ecoma-infra/lab")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ecoma-infra" / "lab"


def base_image_path(cache_dir: Path | None = None, *, mirror: str = DEFAULT_MIRROR) -> Path:
    """The rootfs path ``ensure_base_image`` builds for these settings (it may not exist yet)."""
    key = json.dumps([SUITE, mirror, sorted(BASE_PACKAGES), IMAGE_REVISION]).encode()
    name = f"{SUITE}-minbase-{hashlib.sha256(key).hexdigest()[:12]}"
    return (cache_dir or default_cache_dir()).resolve() / name / "rootfs"


def ensure_base_image(cache_dir: Path | None = None, *, mirror: str = DEFAULT_MIRROR) -> Path:
    """Return the cached Debian 12 rootfs, building it with debootstrap the first time.

    The build goes to a temporary directory beside the cache entry and is renamed into place
    only when complete, so an interrupted build never leaves a cache entry that looks valid.
    """
    rootfs = base_image_path(cache_dir, mirror=mirror)
    if (rootfs.parent / "image.json").is_file():
        return rootfs
    _require_root("building the lab base image")
    if shutil.which("debootstrap") is None:
        raise LabError(
            "debootstrap is not installed; install it with `apt-get install debootstrap`"
        )
    entry = rootfs.parent
    entry.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(entry.parent / ".build.lock", "lab base image build"):
        if (entry / "image.json").is_file():  # another process built it while we waited
            return rootfs
        _remove_stale_builds(entry.parent)
        build = Path(tempfile.mkdtemp(prefix=f".build-{entry.name}-", dir=entry.parent))
        try:
            _debootstrap(build / "rootfs", mirror)
            _customise_image(build / "rootfs")
            manifest = {
                "suite": SUITE,
                "mirror": mirror,
                "packages": list(BASE_PACKAGES),
                "revision": IMAGE_REVISION,
                "built_at": time.time(),
            }
            (build / "image.json").write_text(json.dumps(manifest, indent=2) + "\n")
            build.chmod(0o755)
            build.rename(entry)
        except BaseException:
            _remove_tree(build)
            raise
    return rootfs


# --------------------------------------------------------------------------------------------
# Base image


def _debootstrap(target: Path, mirror: str) -> None:
    # Its own mount namespace: debootstrap mounts /proc and /sys in the target, and an
    # interrupted run would otherwise leave them mounted under the cache.
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        SUITE, str(target), mirror,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        log = target / "debootstrap" / "debootstrap.log"
        raise LabError(
            f"debootstrap of {SUITE} from {mirror} failed (exit {result.returncode}); "
            f"check that the mirror is reachable (see {log} if it exists):\n{tail}"
        )


def _customise_image(rootfs: Path) -> None:
    # Host keys are made per host at lab up: hosts must not share them.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # No init system runs in a lab host: package scripts must not try to start services.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# ecoma lab: no init system, never start services\nexit 101\n")
    policy.chmod(0o755)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _remove_stale_builds(cache_root: Path) -> None:
    for stale in cache_root.glob(".build-*"):
        _remove_tree(stale)


# --------------------------------------------------------------------------------------------
# Building a lab


def _validate_spec(spec: LabSpec) -> None:
    problems: list[str] = []
    if not _LAB_ID.match(spec.lab_id):
        problems.append(f"lab_id {spec.lab_id!r}: use 1-8 lowercase letters/digits")
    if not _USER.match(spec.user):
        problems.append(f"user {spec.user!r}: not a valid Linux user name")
    try:
        subnet = ipaddress.ip_network(spec.subnet)
        gateway = ipaddress.ip_address(spec.gateway)
    except ValueError as error:
        raise LabError(f"lab spec: {error}; fix subnet/gateway") from error
    if gateway not in subnet:
        problems.append(f"gateway {gateway} is outside subnet {subnet}")
    if not spec.hosts:
        problems.append("no hosts: give at least one LabHost")
    names: set[str] = set()
    ips: set[str] = set()
    for host in spec.hosts:
        problems.extend(_host_problems(host, subnet, gateway, names, ips))
    if problems:
        raise LabError("invalid lab spec:\n  " + "\n  ".join(problems))


def _host_problems(
    host: LabHost,
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address,
    names: set[str],
    ips: set[str],
) -> list[str]:
    problems: list[str] = []
    where = f"host {host.name!r}"
    if not _HOST_NAME.match(host.name):
        problems.append(f"{where}: name must be lowercase letters, digits, '-' (max 32)")
    if host.name in names:
        problems.append(f"{where}: duplicate name")
    names.add(host.name)
    try:
        ip = ipaddress.ip_address(host.ip)
    except ValueError:
        return [*problems, f"{where}: ip {host.ip!r} is not an IP address"]
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address, gateway):
        problems.append(f"{where}: ip {ip} must be a free host address in {subnet}, not {gateway}")
    if host.ip in ips:
        problems.append(f"{where}: ip {ip} is used twice")
    ips.add(host.ip)
    by_ids = [d.by_id for d in host.disks]
    for disk in host.disks:
        if not _BY_ID.match(disk.by_id):
            problems.append(f"{where}: by_id {disk.by_id!r} is not a valid link name")
        if disk.size_mb <= 0:
            problems.append(f"{where}: disk {disk.by_id!r} needs size_mb > 0")
    if len(set(by_ids)) != len(by_ids):
        problems.append(f"{where}: by_id values must be unique ({by_ids})")
    return problems


def _refuse_foreign_state_dir(state_dir: Path) -> None:
    if not state_dir.exists() or (state_dir / SENTINEL_FILE).exists():
        return
    if not state_dir.is_dir() or any(state_dir.iterdir()):
        raise LabError(
            f"state dir {state_dir} exists and was not made by the lab (no {SENTINEL_FILE}); "
            "lab down deletes files in its state dir, so give a new or empty directory"
        )


def _refuse_if_a_lab_exists(lab_id: str, state_dir: Path) -> None:
    marker = _read_marker() or {}
    # The marked lab may use another lab_id; either one holding the gateway blocks this one.
    lab_ids = sorted({lab_id, marker.get("lab_id", lab_id)})
    present = [found for i in lab_ids for found in _present_lab_objects(i)]
    if not present:
        return
    owner = marker.get("state_dir")
    where = f"its state dir is {owner}" if owner else "its state dir is unknown"
    fix_dir = owner or str(state_dir)
    raise LabError(
        f"a lab is already up on this machine ({', '.join(present[:4])}); {where}. "
        f"Only one lab can run at a time: tear it down with "
        f"`ecoma-infra lab down --state-dir {fix_dir}` "
        f"(or ecoma_infra.lab.lab_down(Path({fix_dir!r})))"
    )


def _refuse_to_take_down_another_lab(state_dir: Path) -> None:
    # Discovery by name prefix would find the lab that is up, whoever owns it: a down of some
    # other (stale or mistyped) state dir must not destroy it.
    marker = _read_marker()
    if marker is None or marker.get("state_dir") == str(state_dir):
        return
    if load_state(state_dir) is not None:
        return  # this state dir has a lab of its own on record: clean that up
    owner = marker.get("state_dir")
    if _present_lab_objects(str(marker.get("lab_id", DEFAULT_LAB_ID))):
        raise LabError(
            f"{state_dir} holds no lab, and the lab that is up belongs to {owner}; "
            f"to tear that one down run `ecoma-infra lab down --state-dir {owner}`"
        )


def _new_state(spec: LabSpec, state_dir: Path, base: Path) -> LabState:
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)  # holds the lab's private key
    (state_dir / SENTINEL_FILE).write_text("ecoma-infra lab state dir\n")
    hosts = [
        LabHostState(
            name=host.name,
            ip=host.ip,
            netns=f"{spec.lab_id}-{host.name}",
            veth=f"{spec.lab_id}-v{index}",
            disks=[
                LabDiskState(
                    tier=d.tier,
                    by_id=d.by_id,
                    size_mb=d.size_mb,
                    backing_file=str(state_dir / "hosts" / host.name / "disks" / f"{d.by_id}.img"),
                )
                for d in host.disks
            ],
        )
        for index, host in enumerate(spec.hosts)
    ]
    state = LabState(
        state_dir=str(state_dir),
        lab_id=spec.lab_id,
        subnet=spec.subnet,
        gateway=spec.gateway,
        bridge=f"{spec.lab_id}-br0",
        user=spec.user,
        private_key=str(state_dir / "ssh" / "id_ed25519"),
        base_image=str(base),
        hosts=hosts,
    )
    _save_state(state)
    return state


def _build(state: LabState, ready_timeout: float) -> None:
    _make_ssh_key(Path(state.private_key))
    _make_bridge(state)
    for host in state.hosts:
        _make_netns(state, host)
        _attach_disks(state, host)
        _prepare_upper(state, host)
    for host in state.hosts:
        _start_host(state, host)
    _wait_ready(state, ready_timeout)
    state.up = True
    _save_state(state)


def _make_ssh_key(private_key: Path) -> None:
    private_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in (private_key, private_key.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ecoma-lab", "-f",
          str(private_key)])  # fmt: skip
    private_key.chmod(0o600)


def _make_bridge(state: LabState) -> None:
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    _run(["ip", "link", "add", state.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{state.gateway}/{prefix}", "dev", state.bridge])
    _run(["ip", "link", "set", state.bridge, "up"])


def _make_netns(state: LabState, host: LabHostState) -> None:
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    ns = host.netns
    _run(["ip", "netns", "add", ns])
    _run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    _run(["ip", "link", "set", host.veth, "master", state.bridge, "up"])
    batch = (
        "link set lo up\n"
        f"addr add {host.ip}/{prefix} dev eth0\n"
        "link set eth0 up\n"
        f"route add default via {state.gateway}\n"
    )
    _run(["ip", "-netns", ns, "-batch", "-"], stdin=batch)


def _attach_disks(state: LabState, host: LabHostState) -> None:
    for disk in host.disks:
        backing = Path(disk.backing_file)
        backing.parent.mkdir(parents=True, exist_ok=True)
        with backing.open("wb") as handle:  # sparse: costs no space until written
            handle.truncate(disk.size_mb * 1024 * 1024)
        # `losetup -f`: the next free device, never a fixed number that another user may hold.
        disk.loop_device = _run(["losetup", "--find", "--show", str(backing)]).strip()
        _save_state(state)


def _prepare_upper(state: LabState, host: LabHostState) -> None:
    """Write the host's identity into its overlay upper dir before the overlay is mounted."""
    host_dir = Path(state.state_dir) / "hosts" / host.name
    upper = host_dir / "upper"
    for sub in ("upper", "work", "root"):
        (host_dir / sub).mkdir(mode=0o755, parents=True, exist_ok=True)
    etc = _mkdirs(upper, "etc")
    (etc / "hostname").write_text(f"{host.name}\n")
    (etc / "hosts").write_text(_etc_hosts(state))
    # Hosts have no way out of the bridge, so no nameserver can answer: the machine's resolver
    # (copied by debootstrap) made every lookup outside /etc/hosts (even getent's AAAA query
    # for its own name) wait 10 s. Loopback with nothing listening fails at once.
    (etc / "resolv.conf").write_text(
        "# ecoma lab: no DNS inside the lab\nnameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
    )
    (etc / "machine-id").write_text(
        hashlib.md5(  # noqa: S324 - an id, not a secret
            f"{state.lab_id}/{host.name}/{time.time()}".encode()
        ).hexdigest()
        + "\n"
    )
    ssh_dir = _mkdirs(upper, "etc/ssh")
    (ssh_dir / "sshd_config").write_text(_sshd_config(host))
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}",
          "-f", str(ssh_dir / "ssh_host_ed25519_key")])  # fmt: skip
    # In the upper layer, not the cached image: a change to it needs no image rebuild.
    init = _mkdirs(upper, "usr/local/sbin") / "ecoma-lab-init"
    shutil.copyfile(ASSETS_DIR / "pid1.py", init)
    init.chmod(0o755)
    lab_dir = _mkdirs(upper, "etc/ecoma-lab")
    shutil.copyfile(f"{state.private_key}.pub", lab_dir / "authorized_keys")
    (lab_dir / "authorized_keys").chmod(0o644)
    if state.user != "root":
        sudoers = _mkdirs(upper, "etc/sudoers.d") / "ecoma-lab"
        sudoers.write_text(f"{state.user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        sudoers.chmod(0o440)


def _mkdirs(upper: Path, relative: str) -> Path:
    # Directories in the upper layer override the lower one's mode: keep Debian's 0755.
    path = upper
    for part in Path(relative).parts:
        path = path / part
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)
    return path


def _etc_hosts(state: LabState) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{h.ip}\t{h.name}" for h in state.hosts]
    return "\n".join(lines) + "\n"


def _sshd_config(host: LabHostState) -> str:
    # Key login only, for root and the lab user, from one root-owned key file. No PAM: no
    # logind or audit in a namespace host, and PAM sessions would only slow logins down.
    return "\n".join([
        "# ecoma lab host: written by ecoma_infra.lab",
        f"ListenAddress {host.ip}:{SSH_PORT}",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "AuthorizedKeysFile /etc/ecoma-lab/authorized_keys .ssh/authorized_keys",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "PidFile /run/sshd.pid",
        "AcceptEnv LANG LC_*",
        "MaxStartups 100:30:200",
        "MaxSessions 50",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ])  # fmt: skip


def _start_host(state: LabState, host: LabHostState) -> None:
    host_dir = Path(state.state_dir) / "hosts" / host.name
    log_path = _log_path(state, host)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    disks = []
    for disk in host.disks:
        rdev = Path(disk.loop_device).stat().st_rdev
        disks.append(f"{disk.by_id}:{Path(disk.loop_device).name}:"
                     f"{os.major(rdev)}:{os.minor(rdev)}")  # fmt: skip
    argv = [
        # setsid --fork: the host outlives this process and is nobody's child here, so no
        # Popen object is left to wait for it. Teardown finds its processes through the netns.
        "setsid", "--fork",
        "nsenter", f"--net={NETNS_DIR / host.netns}", "--",
        "unshare", "--mount", "--uts", "--pid", "--fork", "--propagation", "private", "--",
        "/bin/sh", str(ASSETS_DIR / "host-init.sh"),
        host.name, state.base_image, str(host_dir), state.user, *disks,
    ]  # fmt: skip
    with log_path.open("ab") as log:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)


def _log_path(state: LabState, host: LabHostState) -> Path:
    return Path(state.state_dir) / "logs" / f"{host.name}.log"


def _wait_ready(state: LabState, timeout: float) -> None:
    """Wait until every host's sshd sends its banner; fail fast when a host died."""
    deadline = time.monotonic() + timeout
    pending = {h.name: h for h in state.hosts}
    next_liveness_check = time.monotonic() + 0.5
    while pending:
        for name, host in list(pending.items()):
            if _ssh_banner(host.ip, timeout=0.2):
                host.pid = _host_pid1(host.netns)
                del pending[name]
        if not pending:
            break
        now = time.monotonic()
        if now >= next_liveness_check:
            next_liveness_check = now + 0.5
            for host in pending.values():
                if not _netns_pids(host.netns):
                    raise LabError(_host_failed_message(state, host, "its init exited"))
        if now >= deadline:
            host = next(iter(pending.values()))
            raise LabError(_host_failed_message(state, host, f"no ssh banner after {timeout}s"))
        time.sleep(0.02)
    _save_state(state)


def _host_failed_message(state: LabState, host: LabHostState, why: str) -> str:
    log = _log_path(state, host)
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        tail = "(no log)"
    return f"lab host {host.name} ({host.ip}) did not come up: {why}. Log {log}:\n{tail}"


def _ssh_banner(ip: str, timeout: float) -> bool:
    try:
        with socket.create_connection((ip, SSH_PORT), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Status


def _host_status(state: LabState, host: LabHostState) -> LabHostStatus:
    running = bool(_netns_pids(host.netns)) if (NETNS_DIR / host.netns).exists() else False
    pid = _host_pid1(host.netns) if running else 0
    disks: dict[str, bool] = {}
    for disk in host.disks:
        # The host's /dev seen through its PID 1: the link must resolve to a block device.
        link = Path(f"/proc/{pid}/root{disk.path}")
        disks[disk.by_id] = bool(pid) and _is_block_device(link)
    return LabHostStatus(
        name=host.name,
        ip=host.ip,
        running=running,
        ssh_reachable=running and _ssh_login_works(state, host.name),
        disks_present=disks,
    )


def _is_block_device(path: Path) -> bool:
    try:
        return stat.S_ISBLK(path.stat().st_mode)
    except OSError:
        return False


def _ssh_login_works(state: LabState, name: str) -> bool:
    argv = state.ssh_argv(name, "true")
    try:
        result = subprocess.run(argv, capture_output=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def _ssh_options(private_key: str) -> list[str]:
    return [
        "-i", private_key,
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
    ]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Teardown


def _teardown(state_dir: Path, lab_id: str | None) -> None:
    state = load_state(state_dir)
    lab_id = lab_id or (state.lab_id if state else DEFAULT_LAB_ID)
    namespaces = _lab_netns(lab_id, state)
    loops = _lab_loops(state_dir)
    # Swap first: a loop device in use as swap can never be detached.
    _swapoff(loops)
    _kill_processes(namespaces)
    _swapoff(loops)  # a host may have swapped on between the first pass and its death
    _unmount_under(state_dir)
    _detach_loops(state_dir, loops)
    for ns in namespaces:
        _run(["ip", "netns", "delete", ns], check=False)
    for link in _links_with_prefix(f"{lab_id}-"):
        _run(["ip", "link", "delete", link], check=False)
    if (state_dir / SENTINEL_FILE).exists():  # never delete in a directory the lab did not make
        _remove_tree(state_dir / "hosts")
        _remove_tree(state_dir / "ssh")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    _clear_marker(state_dir)
    _verify_gone(state_dir, lab_id)


def _lab_netns(lab_id: str, state: LabState | None) -> list[str]:
    found = {ns for ns in _list_netns() if ns.startswith(f"{lab_id}-")}
    if state is not None:
        found.update(h.netns for h in state.hosts if (NETNS_DIR / h.netns).exists())
    return sorted(found)


def _list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def _netns_pids(netns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def _host_pid1(netns: str) -> int:
    """The machine-side pid of the host's PID 1 (the process whose inner pid is 1)."""
    for pid in _netns_pids(netns):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[1:] == [str(pid), "1"]:
                return pid
    return 0


def _kill_processes(namespaces: Sequence[str]) -> None:
    # Every process of a host is in its netns (unshare's parent and the whole pid namespace):
    # killing by netns also catches processes of a lab whose recorded pids are lost.
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while True:
        pids = [pid for ns in namespaces for pid in _netns_pids(ns)]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(
                f"lab processes {pids} survived SIGKILL for {DOWN_TIMEOUT_S}s "
                "(stuck in the kernel, e.g. on I/O); check `ps -o pid,stat,wchan -p <pid>` "
                "and run lab down again"
            )
        time.sleep(0.05)


@dataclass(frozen=True)
class _Loop:
    device: str
    backing_file: str


def _lab_loops(state_dir: Path) -> list[_Loop]:
    """Loop devices backed by a file in ``state_dir``, found by asking the kernel."""
    found: list[_Loop] = []
    prefix = f"{state_dir}/"
    for sys_loop in sorted(Path("/sys/block").glob("loop*")):
        try:
            backing = (sys_loop / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue  # not attached
        if backing.startswith(prefix):
            found.append(_Loop(f"/dev/{sys_loop.name}", backing))
    return found


def _swapoff(loops: Sequence[_Loop]) -> None:
    active = _active_swap_devices()
    for loop in loops:
        if loop.device in active:
            _run(["swapoff", loop.device])


def _active_swap_devices() -> set[str]:
    """Block devices in /proc/swaps, as machine paths.

    A host swaps on through its private /dev, so /proc/swaps may name a path the machine cannot
    open; match by device number instead of by name.
    """
    numbers: set[int] = set()
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    for line in lines:
        name = line.split()[0].replace("\\040", " ")
        if name.endswith("(deleted)"):
            name = name.removesuffix("(deleted)")
        with contextlib.suppress(OSError):
            numbers.add(Path(name).stat().st_rdev)
    devices = {
        f"/dev/{p.name}" for p in Path("/sys/block").glob("loop*") if _sys_dev_number(p) in numbers
    }
    if len(numbers) < len(lines):
        # Some swap names are not resolvable from here (the host's /dev is gone); fall back to
        # every attached loop device, swapoff on a non-swap device is refused harmlessly.
        devices |= {f"/dev/{p.name}" for p in Path("/sys/block").glob("loop*")}
    return devices


def _sys_dev_number(sys_block: Path) -> int:
    try:
        major, minor = (sys_block / "dev").read_text().strip().split(":")
    except (OSError, ValueError):
        return -1
    return os.makedev(int(major), int(minor))


def _detach_loops(state_dir: Path, loops: Sequence[_Loop]) -> None:
    for loop in loops:
        # Fails (busy) while a dying mount namespace still holds a filesystem on it; with
        # --detach the kernel then clears it once released ("autoclear"), so we wait below.
        _run(["losetup", "--detach", loop.device], check=False)
    deadline = time.monotonic() + DOWN_TIMEOUT_S
    while remaining := _lab_loops(state_dir):
        if time.monotonic() > deadline:
            devices = [loop.device for loop in remaining]
            raise LabError(
                f"loop devices {devices} backed by files in {state_dir} "
                "are still attached (mounted or swapped on somewhere?); check "
                "`losetup -l`, /proc/swaps and `grep loop /proc/*/mountinfo`, then run lab down "
                "again"
            )
        for loop in remaining:
            _run(["losetup", "--detach", loop.device], check=False)
        time.sleep(0.05)


def _links_with_prefix(prefix: str) -> list[str]:
    out = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        # "12: ecoma-v0@if2: <...>": the name ends at "@" for veths.
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            names.append(name)
    return names


def _unmount_under(path: Path) -> None:
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        _run(["umount", "--lazy", target], check=False)


def _mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == str(path) or target.startswith(prefix):
            targets.append(target)
    return targets


def _present_lab_objects(lab_id: str) -> list[str]:
    present = [f"netns {ns}" for ns in _list_netns() if ns.startswith(f"{lab_id}-")]
    present += [f"link {name}" for name in _links_with_prefix(f"{lab_id}-")]
    return present


def _verify_gone(state_dir: Path, lab_id: str) -> None:
    leftovers = _present_lab_objects(lab_id)
    leftovers += [f"loop {loop.device}" for loop in _lab_loops(state_dir)]
    leftovers += [f"mount {m}" for m in _mounts_under(state_dir)]
    if leftovers:
        raise LabError(
            f"lab teardown of {state_dir} left {', '.join(leftovers)}; run lab down again, "
            "and if they stay, remove them by hand (ip netns delete / ip link delete / "
            "losetup -d / umount)"
        )


# --------------------------------------------------------------------------------------------
# Machine-wide lock and marker


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"{action} needs root (network namespaces, loop devices, mounts); run it as root, "
            "e.g. `sudo ecoma-infra lab ...`"
        )


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    with _file_lock(LOCK_FILE, "lab up/down"):
        yield


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
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


def _read_marker() -> dict[str, str] | None:
    try:
        data = json.loads(MARKER_FILE.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_marker(state: LabState) -> None:
    RUN_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    _atomic_write(MARKER_FILE, json.dumps({"state_dir": state.state_dir,
                                           "lab_id": state.lab_id}) + "\n")  # fmt: skip


def _clear_marker(state_dir: Path) -> None:
    marker = _read_marker()
    if marker is not None and marker.get("state_dir") == str(state_dir):
        MARKER_FILE.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Small helpers


def _save_state(state: LabState) -> None:
    _atomic_write(Path(state.state_dir) / STATE_FILE, json.dumps(asdict(state), indent=2) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    # Never recurse into something still mounted (a /proc left by an interrupted build).
    _unmount_under(path)
    shutil.rmtree(path, ignore_errors=False)


def _run(argv: Sequence[str], *, check: bool = True, stdin: str | None = None) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed (exit {result.returncode}): "
            f"{(result.stderr or result.stdout).strip()}"
        )
    return result.stdout
