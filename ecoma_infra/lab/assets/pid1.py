"""PID 1 of a lab host: run sshd in the foreground and reap every orphan.

Processes that ssh sessions leave behind (daemonized helpers, async tasks) are re-parented to
PID 1; sshd would not reap them, so they would pile up as zombies. When sshd exits the host ends:
the kernel then kills everything else in the pid namespace.
"""

import os
import signal
import sys


def main() -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    sshd = os.fork()
    if sshd == 0:
        os.execv("/usr/sbin/sshd", ["/usr/sbin/sshd", "-D", "-e"])
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 1
        if pid == sshd:
            print(f"ecoma-lab: sshd exited with status {status}", file=sys.stderr, flush=True)
            return 1


if __name__ == "__main__":
    sys.exit(main())
