"""Run a command on a leash: it and everything it starts die when the process that started the
leash dies, even by `kill -9`.

ansible-runner starts `ansible-playbook` through pexpect, in a session and process group of its
own (setsid) and with SIGHUP ignored, so when `configure` is killed outright the playbook used to
run on, orphaned. `configure` starts this script in that place instead, with its own pid:

    python -I leash.py <parent pid> -- ansible-playbook ...

The leash asks the kernel for a signal when its parent dies (Linux `PR_SET_PDEATHSIG`), starts the
command in its own process group (which Ansible's forked workers and the commands they run
share), passes on its exit status, and on its parent's death kills that whole group. A cancel by
ansible-runner (Ctrl-C, SIGTERM of `configure`) already kills the group the leash leads.

Standard library only, run with `-I`: it must start without the caller's environment.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: no leash, the command runs as before
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        sys.exit(1)


def _kill_group(signum: int, frame: object) -> None:
    del signum, frame
    os.killpg(os.getpgrp(), signal.SIGKILL)  # the command, its workers, and this process


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--" or not argv[0].isdigit():
        print("usage: leash.py <parent pid> -- command ...", file=sys.stderr)
        return 2
    parent, command = int(argv[0]), argv[2:]
    signal.signal(signal.SIGTERM, _kill_group)
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
