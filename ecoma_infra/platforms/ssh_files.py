"""Files of the stack's machines, read over SSH: the k3s servers' certificates.

Only certificates (`*.crt`: public material) are read, never a key. The servers keep them under
/var/lib/rancher/k3s/server/tls (root only), so the remote side runs `sudo -n`: the SSH user is
the stack's cloud-init user, which cloud-init gives passwordless sudo. `ssh` itself does the
connecting, so the caller's ssh config, agent and known hosts apply (`-F` names another
config); BatchMode never prompts.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ecoma_infra.errors import EcomaError

K3S_SERVER_CERTIFICATES: tuple[str, ...] = (
    "/var/lib/rancher/k3s/server/tls/*.crt",
    "/var/lib/rancher/k3s/server/tls/etcd/*.crt",
)
_MARK = "==> ecoma-file "

Runner = Callable[..., subprocess.CompletedProcess[bytes]]


class SshFiles:
    """Reads files of a machine with `ssh USER@ADDRESS sudo -n sh -c ...`."""

    def __init__(
        self,
        user: str,
        *,
        ssh_config: Path | None = None,
        timeout: float = 60.0,
        run: Runner = subprocess.run,
    ) -> None:
        self.user = user
        self.ssh_config = ssh_config
        self.timeout = timeout
        self._run = run

    def read(self, address: str, patterns: Sequence[str]) -> dict[str, bytes]:
        """Every file matching the shell `patterns` on the machine, by path; {} when none."""
        script = (
            "for f in "
            + " ".join(patterns)
            + f'; do [ -f "$f" ] || continue; printf \'%s%s\\n\' {shlex.quote(_MARK)} "$f"; '
            'cat "$f"; echo; done'
        )
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        argv += [f"{self.user}@{address}", "sudo", "-n", "sh", "-c", shlex.quote(script)]
        try:
            result = self._run(argv, capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise EcomaError(f"ssh {self.user}@{address}: {error}") from None
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise EcomaError(
                f"ssh {self.user}@{address} exited {result.returncode}: "
                f"{detail[-1] if detail else 'no message'} (reachable over the tailnet? "
                "passwordless sudo for the user? --ssh-config for another key or user)"
            )
        return _split(result.stdout)


def _split(output: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    current: str | None = None
    lines: list[bytes] = []
    for line in output.splitlines(keepends=True):
        text = line.decode("utf-8", "replace")
        if text.startswith(_MARK):
            if current is not None:
                files[current] = b"".join(lines)
            current, lines = text[len(_MARK) :].strip(), []
        elif current is not None:
            lines.append(line)
    if current is not None:
        files[current] = b"".join(lines)
    return files
