"""Run a command on a leash: it and everything it starts die when the process that started the
leash dies, even by `kill -9`.

ansible-runner starts `ansible-playbook` through pexpect, in a session and process group of its
own (setsid) and with SIGHUP ignored, so when `configure` is killed outright the playbook used to
run on, orphaned. `configure` starts this script in that place instead, with its own pid:

    python -I leash.py <parent pid> -- ansible-playbook ...

The leash asks the kernel for a signal when its parent dies (Linux `PR_SET_PDEATHSIG`), starts the
command, passes on its exit status, and on its parent's death (or a SIGTERM: `configure`'s
cancel sends one before ansible-runner kills the leash's process group) kills every process
below it. A process group is not enough: since ansible-core 2.19 every worker calls `setsid()`
(ansible/executor/process/worker.py, `_detach`), so the workers and the commands they run are
in sessions of their own, out of reach of the group the leash leads. The leash is therefore a
child subreaper (`PR_SET_CHILD_SUBREAPER`): a process whose parent it killed is handed to the
leash, not to init, and the next pass over /proc finds it.

Standard library only, run with `-I`: it must start without the caller's environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
_KILL_PASSES = 200  # each pass kills what the last one orphaned; a fork bomb is not expected


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: no leash, the command runs as before
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def living_children() -> dict[int, list[int]]:
    """Parent pid -> pids of its children that have not exited (zombies left out), from /proc."""
    children: dict[int, list[int]] = {}
    try:
        entries = list(Path("/proc").iterdir())
    except OSError:  # no /proc (not Linux): nothing to find, the process group kill remains
        return children
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8", errors="replace")
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after it.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) < 2 or fields[0] in ("Z", "X"):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    """Every living process below `root`, parents before their children."""
    children = living_children()
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def kill_descendants(settle: float = 5.0) -> None:
    """SIGKILL every process below this one, then wait (up to `settle` seconds) until they are
    gone. Each pass signals the processes the last one had not seen: what a process forked
    before it was killed is handed to this process (a subreaper) and found by the next pass.
    A process that ignores nothing still takes a moment to exit on a loaded machine; the wait
    is for that, so that whoever waits for this process finds the tree gone."""
    signalled: set[int] = set()
    for _ in range(_KILL_PASSES):
        fresh = [pid for pid in descendants(os.getpid()) if pid not in signalled]
        if not fresh:
            break
        for pid in fresh:
            signalled.add(pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # exited meanwhile
                continue
    deadline = time.monotonic() + settle
    while signalled & set(descendants(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.02)


def _kill_all(signum: int, frame: object) -> None:
    del signum, frame
    try:
        kill_descendants()  # the command, its workers in their own sessions, what they run
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # and the leash itself, whatever happened


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: leash.py <parent pid> -- command ...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    signal.signal(signal.SIGTERM, _kill_all)
    _die_with_parent(parent)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            os.execvp(command[0], command)  # noqa: S606 (the command ansible-runner built)
        except OSError as error:
            print(f"leash: cannot run {command[0]}: {error.strerror}", file=sys.stderr)
            os._exit(127)
    while True:
        try:
            _, status = os.waitpid(child, 0)
        except InterruptedError:  # pragma: no cover - PEP 475 retries waitpid itself
            continue
        return os.waitstatus_to_exitcode(status) if status >= 0 else 1


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.exit(code if code >= 0 else 128 - code)
