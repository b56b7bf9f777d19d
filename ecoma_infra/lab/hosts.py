"""Building the lab's hosts (bridge, network namespaces, loop disks at their by-id links, an
overlay root, sshd) and inspecting them."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

from ecoma_infra.lab.state import (
    ASSETS_DIR,
    BY_ID,
    DEFAULT_LAB_ID,
    HOST_NAME,
    LAB_ID,
    NETNS_DIR,
    SENTINEL_FILE,
    SSH_PORT,
    USER,
    LabDiskState,
    LabError,
    LabHost,
    LabHostState,
    LabHostStatus,
    LabSpec,
    LabState,
    load_state,
    read_marker,
    run_command,
    save_state,
)
from ecoma_infra.lab.teardown import host_pid1, netns_pids, present_lab_objects

# --------------------------------------------------------------------------------------------
# Building a lab


def validate_spec(spec: LabSpec) -> None:
    problems: list[str] = []
    if not LAB_ID.match(spec.lab_id):
        problems.append(f"lab_id {spec.lab_id!r}: use 1-8 lowercase letters/digits")
    if not USER.match(spec.user):
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
    if not HOST_NAME.match(host.name):
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
        if not BY_ID.match(disk.by_id):
            problems.append(f"{where}: by_id {disk.by_id!r} is not a valid link name")
        if disk.size_mb <= 0:
            problems.append(f"{where}: disk {disk.by_id!r} needs size_mb > 0")
    if len(set(by_ids)) != len(by_ids):
        problems.append(f"{where}: by_id values must be unique ({by_ids})")
    return problems


def refuse_foreign_state_dir(state_dir: Path) -> None:
    if not state_dir.exists() or (state_dir / SENTINEL_FILE).exists():
        return
    if not state_dir.is_dir() or any(state_dir.iterdir()):
        raise LabError(
            f"state dir {state_dir} exists and was not made by the lab (no {SENTINEL_FILE}); "
            "lab down deletes files in its state dir, so give a new or empty directory"
        )


def refuse_if_a_lab_exists(lab_id: str, state_dir: Path) -> None:
    marker = read_marker() or {}
    # The marked lab may use another lab_id; either one holding the gateway blocks this one.
    lab_ids = sorted({lab_id, marker.get("lab_id", lab_id)})
    present = [found for i in lab_ids for found in present_lab_objects(i)]
    if not present:
        return
    owner = marker.get("state_dir")
    where = f"its state dir is {owner}" if owner else "its state dir is unknown"
    fix_dir = owner or str(state_dir)
    raise LabError(
        f"a lab is already up on this machine ({', '.join(present[:4])}); {where}. "
        f"Only one lab can run at a time: tear it down with "
        f"`ecoma-infra lab down --state-dir {fix_dir}` "
        f"(or ecoma_infra.lab.engine.lab_down(Path({fix_dir!r})))"
    )


def refuse_to_take_down_another_lab(state_dir: Path) -> None:
    # Discovery by name prefix would find the lab that is up, whoever owns it: a down of some
    # other (stale or mistyped) state dir must not destroy it.
    marker = read_marker()
    if marker is None or marker.get("state_dir") == str(state_dir):
        return
    if load_state(state_dir) is not None:
        return  # this state dir has a lab of its own on record: clean that up
    owner = marker.get("state_dir")
    if present_lab_objects(str(marker.get("lab_id", DEFAULT_LAB_ID))):
        raise LabError(
            f"{state_dir} holds no lab, and the lab that is up belongs to {owner}; "
            f"to tear that one down run `ecoma-infra lab down --state-dir {owner}`"
        )


def new_state(spec: LabSpec, state_dir: Path, base: Path) -> LabState:
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
    save_state(state)
    return state


def build_hosts(state: LabState, ready_timeout: float) -> None:
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
    save_state(state)


def _make_ssh_key(private_key: Path) -> None:
    private_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for stale in (private_key, private_key.with_suffix(".pub")):
        stale.unlink(missing_ok=True)
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ecoma-lab", "-f",
          str(private_key)])  # fmt: skip
    private_key.chmod(0o600)


def _make_bridge(state: LabState) -> None:
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    run_command(["ip", "link", "add", state.bridge, "type", "bridge"])
    run_command(["ip", "addr", "add", f"{state.gateway}/{prefix}", "dev", state.bridge])
    run_command(["ip", "link", "set", state.bridge, "up"])


def _make_netns(state: LabState, host: LabHostState) -> None:
    prefix = ipaddress.ip_network(state.subnet).prefixlen
    ns = host.netns
    run_command(["ip", "netns", "add", ns])
    run_command(
        ["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns]
    )
    run_command(["ip", "link", "set", host.veth, "master", state.bridge, "up"])
    batch = (
        "link set lo up\n"
        f"addr add {host.ip}/{prefix} dev eth0\n"
        "link set eth0 up\n"
        f"route add default via {state.gateway}\n"
    )
    run_command(["ip", "-netns", ns, "-batch", "-"], stdin=batch)


def _attach_disks(state: LabState, host: LabHostState) -> None:
    for disk in host.disks:
        backing = Path(disk.backing_file)
        backing.parent.mkdir(parents=True, exist_ok=True)
        with backing.open("wb") as handle:  # sparse: costs no space until written
            handle.truncate(disk.size_mb * 1024 * 1024)
        # `losetup -f`: the next free device, never a fixed number that another user may hold.
        disk.loop_device = run_command(["losetup", "--find", "--show", str(backing)]).strip()
        save_state(state)


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
    run_command(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}",
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
        "# ecoma lab host: written by ecoma_infra.lab.engine",
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
                host.pid = host_pid1(host.netns)
                del pending[name]
        if not pending:
            break
        now = time.monotonic()
        if now >= next_liveness_check:
            next_liveness_check = now + 0.5
            for host in pending.values():
                if not netns_pids(host.netns):
                    raise LabError(_host_failed_message(state, host, "its init exited"))
        if now >= deadline:
            host = next(iter(pending.values()))
            raise LabError(_host_failed_message(state, host, f"no ssh banner after {timeout}s"))
        time.sleep(0.02)
    save_state(state)


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


def host_status(state: LabState, host: LabHostState) -> LabHostStatus:
    running = bool(netns_pids(host.netns)) if (NETNS_DIR / host.netns).exists() else False
    pid = host_pid1(host.netns) if running else 0
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
