"""Taking a lab down from its record and, where the record is missing, by discovery: processes,
swap, mounts, loop devices, namespaces, links."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ecoma_infra.lab.state import (
    DEFAULT_LAB_ID,
    DOWN_TIMEOUT_S,
    NETNS_DIR,
    SENTINEL_FILE,
    STATE_FILE,
    LabError,
    LabState,
    clear_marker,
    load_state,
    run_command,
)

# --------------------------------------------------------------------------------------------
# Teardown


def teardown_lab(state_dir: Path, lab_id: str | None) -> None:
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
        run_command(["ip", "netns", "delete", ns], check=False)
    for link in _links_with_prefix(f"{lab_id}-"):
        run_command(["ip", "link", "delete", link], check=False)
    if (state_dir / SENTINEL_FILE).exists():  # never delete in a directory the lab did not make
        remove_tree(state_dir / "hosts")
        remove_tree(state_dir / "ssh")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    clear_marker(state_dir)
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


def netns_pids(netns: str) -> list[int]:
    out = run_command(["ip", "netns", "pids", netns], check=False)
    return [int(pid) for pid in out.split() if pid.isdigit()]


def host_pid1(netns: str) -> int:
    """The machine-side pid of the host's PID 1 (the process whose inner pid is 1)."""
    for pid in netns_pids(netns):
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
        pids = [pid for ns in namespaces for pid in netns_pids(ns)]
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
            run_command(["swapoff", loop.device])


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
        run_command(["losetup", "--detach", loop.device], check=False)
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
            run_command(["losetup", "--detach", loop.device], check=False)
        time.sleep(0.05)


def _links_with_prefix(prefix: str) -> list[str]:
    out = run_command(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        # "12: ecoma-v0@if2: <...>": the name ends at "@" for veths.
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name.startswith(prefix):
            names.append(name)
    return names


def _unmount_under(path: Path) -> None:
    for target in sorted(_mounts_under(path), key=len, reverse=True):
        run_command(["umount", "--lazy", target], check=False)


def _mounts_under(path: Path) -> list[str]:
    prefix = f"{path}/"
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target == str(path) or target.startswith(prefix):
            targets.append(target)
    return targets


def present_lab_objects(lab_id: str) -> list[str]:
    present = [f"netns {ns}" for ns in _list_netns() if ns.startswith(f"{lab_id}-")]
    present += [f"link {name}" for name in _links_with_prefix(f"{lab_id}-")]
    return present


def _verify_gone(state_dir: Path, lab_id: str) -> None:
    leftovers = present_lab_objects(lab_id)
    leftovers += [f"loop {loop.device}" for loop in _lab_loops(state_dir)]
    leftovers += [f"mount {m}" for m in _mounts_under(state_dir)]
    if leftovers:
        raise LabError(
            f"lab teardown of {state_dir} left {', '.join(leftovers)}; run lab down again, "
            "and if they stay, remove them by hand (ip netns delete / ip link delete / "
            "losetup -d / umount)"
        )


def remove_tree(path: Path) -> None:
    if not path.exists():
        return
    # Never recurse into something still mounted (a /proc left by an interrupted build).
    _unmount_under(path)
    shutil.rmtree(path, ignore_errors=False)
