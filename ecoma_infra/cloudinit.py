"""Cloud-init user data for every node: user and keys, hostname, Tailscale install and join.

Pure functions of plain values: the program applies them inside `Output.apply` so the Tailscale
key stays a secret, and tests read the result as YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

TAILSCALE_KEYRING = "/usr/share/keyrings/tailscale-archive-keyring.gpg"
TAILSCALE_REPO = "https://pkgs.tailscale.com/stable/debian"
AUTH_KEY_FILE = "/run/ecoma/tailscale-auth-key"


@dataclass(frozen=True)
class NodeBoot:
    hostname: str
    domain: str
    user: str
    authorized_keys: tuple[str, ...]
    tailscale_up_args: tuple[str, ...]
    ip_forwarding: bool = False
    packages: tuple[str, ...] = field(default=("qemu-guest-agent",))


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
    return "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=200)
