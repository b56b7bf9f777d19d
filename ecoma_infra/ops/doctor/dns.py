"""The resolver checks of `doctor`: each of `ecoma:network.dns_servers` asked directly for the
names the nodes need on first boot (apt's Debian mirror, Tailscale's package repository)."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

from ecoma_infra.ops.doctor.report import Check, fail, not_checked, ok, warn
from ecoma_infra.platforms.dns import ResolverAnswer, ask
from ecoma_infra.stack.model import NAMESPACE, StackConfig

AREA = "dns"
# What cloud-init fetches on first boot: Debian's packages and Tailscale's (cloudinit.py).
FIRST_BOOT_NAMES = ("deb.debian.org", "pkgs.tailscale.com")
Asker = Callable[[str, str], ResolverAnswer]


def dns_checks(config: StackConfig, *, asker: Asker | None = None) -> list[Check]:
    query: Asker = asker or ask
    checks: list[Check] = []
    subnet = config.network.sdn_subnet
    for server in config.network.dns_servers:
        name = f"resolver {server}"
        if server in subnet:
            checks.append(
                not_checked(
                    AREA,
                    name,
                    f"{server} is inside the SDN subnet {subnet}: only the nodes reach it, not "
                    "this machine",
                    "make sure a DNS service runs there before `up` (Proxmox runs none in the "
                    "zone)",
                )
            )
            continue
        answers = [query(str(server), host) for host in FIRST_BOOT_NAMES]
        checks.append(_verdict(name, server, answers))
    return checks


def _verdict(name: str, server: IPv4Address, answers: list[ResolverAnswer]) -> Check:
    fix_where = f"{NAMESPACE}:network.dns_servers"
    silent = [a for a in answers if a.outcome == "timeout"]
    if silent:
        detail = f"no answer from {server} ({silent[0].detail}), asked from this machine"
        if server.is_private:
            return warn(
                AREA,
                name,
                detail + "; a private address may answer only on the site's network",
                f"check from a machine on the SDN's network (`dig @{server} deb.debian.org`), "
                f"or change {fix_where}",
            )
        return fail(
            AREA,
            name,
            detail + "; the nodes' apt and Tailscale install need it on first boot",
            f"name resolvers that answer in {fix_where}",
        )
    refused = [a for a in answers if a.outcome == "refused"]
    if refused:
        return fail(
            AREA,
            name,
            f"{server} refuses or fails the query for {refused[0].name} (SERVFAIL/REFUSED): "
            "not a recursive resolver for these clients",
            f"name recursive resolvers that serve the SDN subnet in {fix_where}",
        )
    missing = [a for a in answers if a.outcome != "answer"]
    if missing:
        return fail(
            AREA,
            name,
            f"{server} answers but says {missing[0].name} has no address ({missing[0].outcome})"
            ": a filtering or split-horizon resolver",
            f"name resolvers that resolve public names in {fix_where}",
        )
    shown = "; ".join(f"{a.name} -> {', '.join(a.addresses)}" for a in answers)
    return ok(AREA, name, f"answers: {shown}")
