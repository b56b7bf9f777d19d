"""Cloud-init user data for every node: user and keys, hostname, Tailscale install and join.

Pure functions of plain values: the program applies them inside `Output.apply` so the Tailscale
key stays a secret, and tests read the result as YAML.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ecoma_infra import yaml_io

TAILSCALE_KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
TAILSCALE_REPO = "https://pkgs.tailscale.com/stable/debian"
AUTH_KEY_FILE = "/run/ecoma/tailscale-auth-key"
GUEST_AGENT = "qemu-guest-agent"


@dataclass(frozen=True)
class NodeBoot:
    hostname: str
    domain: str
    user: str
    authorized_keys: tuple[str, ...]
    tailscale_up_args: tuple[str, ...]
    ip_forwarding: bool = False
    packages: tuple[str, ...] = field(default=(GUEST_AGENT,))


def tailscale_up_args(
    hostname: str, *, advertise_routes: list[str], accept_routes: bool
) -> tuple[str, ...]:
    args = [f"--hostname={hostname}", f"--auth-key=file:{AUTH_KEY_FILE}"]
    if advertise_routes:
        args.append(f"--advertise-routes={','.join(advertise_routes)}")
    if accept_routes:
        args.append("--accept-routes")
    return tuple(args)


def render_user_data(boot: NodeBoot, tailscale_auth_key: str) -> str:
    """The #cloud-config document. The auth key is single-use and short-lived (see README)."""
    runcmd: list[list[str]] = [
        ["sh", "-c", f"curl -fsSL {TAILSCALE_REPO}/bookworm.noarmor.gpg -o {TAILSCALE_KEYRING}"],
        [
            "sh",
            "-c",
            f"echo 'deb [signed-by={TAILSCALE_KEYRING}] {TAILSCALE_REPO} bookworm main' "
            "> /etc/apt/sources.list.d/tailscale.list",
        ],
        ["sh", "-c", "apt-get update -q && apt-get install -y -q tailscale"],
        ["systemctl", "enable", "--now", "tailscaled"],
        ["tailscale", "up", *boot.tailscale_up_args],
        ["rm", "-f", AUTH_KEY_FILE],
    ]
    write_files: list[dict[str, str]] = [
        {
            "path": AUTH_KEY_FILE,
            "permissions": "0600",
            "owner": "root:root",
            "content": tailscale_auth_key,
        }
    ]
    if boot.ip_forwarding:
        # A subnet router forwards between the overlay and the SDN subnet.
        write_files.append(
            {
                "path": "/etc/sysctl.d/90-ecoma-tailscale-router.conf",
                "content": "net.ipv4.ip_forward = 1\n",
            }
        )
        runcmd.insert(0, ["sysctl", "--system"])
    if GUEST_AGENT in boot.packages:
        # Debian's qemu-guest-agent unit is static (no [Install]; udev starts it at boot) and
        # its postinst does not start static units, so on first boot nothing would run it and
        # Proxmox would wait out the agent timeout on every create and refresh. cloud-init
        # installs `packages` before `runcmd`; later boots are udev's.
        runcmd.insert(0, ["systemctl", "start", GUEST_AGENT])
    document: dict[str, object] = {
        "hostname": boot.hostname,
        "fqdn": f"{boot.hostname}.{boot.domain}",
        "prefer_fqdn_over_hostname": False,
        "users": [
            {
                "name": boot.user,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": list(boot.authorized_keys),
            }
        ],
        "ssh_pwauth": False,
        "disable_root": True,
        "package_update": True,
        "packages": ["curl", "ca-certificates", *boot.packages],
        "write_files": write_files,
        "runcmd": runcmd,
    }
    return "#cloud-config\n" + yaml_io.safe_dump(document, sort_keys=False, width=200)


def render_startup_script(boot: NodeBoot, tailscale_auth_key: str) -> str:
    """The same setup as `render_user_data`, as a shell script for images without cloud-init.

    Google's Debian images run the guest agent's `startup-script` at every boot instead of
    cloud-init, so the script is idempotent: once the node is in the tailnet it only makes sure
    the user and its keys are there.
    """
    q = shlex.quote
    user, home = boot.user, f"/home/{boot.user}"
    keys = "\n".join(boot.authorized_keys)
    up = " ".join(q(arg) for arg in ("tailscale", "up", *boot.tailscale_up_args))
    lines = [
        "#!/bin/bash",
        "# ecoma node bootstrap: user, SSH keys, Tailscale. Runs at every boot; idempotent.",
        "set -euo pipefail",
        f"hostnamectl set-hostname {q(boot.hostname)}",
        f"id -u {q(user)} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "
        f"--groups sudo {q(user)}",
        f"install -d -m 0700 -o {q(user)} -g {q(user)} {q(home + '/.ssh')}",
        f"printf '%s\\n' {q(keys)} > {q(home + '/.ssh/authorized_keys')}",
        f"chown {q(user)}: {q(home + '/.ssh/authorized_keys')}",
        f"chmod 0600 {q(home + '/.ssh/authorized_keys')}",
        f"echo {q(f'{user} ALL=(ALL) NOPASSWD:ALL')} > /etc/sudoers.d/90-ecoma",
        "chmod 0440 /etc/sudoers.d/90-ecoma",
    ]
    if boot.ip_forwarding:
        lines.append(
            "echo 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-ecoma-tailscale-router.conf"
            " && sysctl --system >/dev/null"
        )
    lines += [
        "if ! command -v tailscale >/dev/null; then",
        f"  curl -fsSL {TAILSCALE_REPO}/bookworm.noarmor.gpg -o {TAILSCALE_KEYRING}",
        f"  echo 'deb [signed-by={TAILSCALE_KEYRING}] {TAILSCALE_REPO} bookworm main'"
        " > /etc/apt/sources.list.d/tailscale.list",
        "  apt-get update -q && apt-get install -y -q tailscale",
        "fi",
        "systemctl enable --now tailscaled",
        "if tailscale status --peers=false >/dev/null 2>&1; then exit 0; fi",
        f"install -d -m 0700 {q(AUTH_KEY_FILE.rsplit('/', 1)[0])}",
        f"(umask 077 && printf '%s' {q(tailscale_auth_key)} > {q(AUTH_KEY_FILE)})",
        f"{up} || {{ rm -f {q(AUTH_KEY_FILE)}; exit 1; }}",
        f"rm -f {q(AUTH_KEY_FILE)}",
    ]
    return "\n".join(lines) + "\n"
