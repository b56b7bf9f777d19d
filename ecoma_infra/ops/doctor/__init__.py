"""`ecoma-infra doctor`: read-only checks of the live environment a stack assumes, before the
first `up` (and any time after): Proxmox, Tailscale, the clouds of the burst pools, the
resolvers. Each finding is ok, warn, fail or not checked, with the fix; credentials come from the
environment, and a check without them says "not checked" and why, never "ok"."""

from __future__ import annotations

from collections.abc import Mapping

from ecoma_infra.ops.doctor import clouds, dns, proxmox, tailscale
from ecoma_infra.ops.doctor.report import Check, DoctorReport, Status, render_report
from ecoma_infra.stack.model import StackConfig

__all__ = ["Check", "DoctorReport", "Status", "render_report", "run_doctor"]


def run_doctor(
    stack: str,
    config: StackConfig,
    environ: Mapping[str, str],
    *,
    source: str,
    proxmox_api: proxmox.ApiFactory = proxmox.from_environment,
    tailscale_api: tailscale.ApiFactory = tailscale.from_environment,
    dns_asker: dns.Asker | None = None,
) -> DoctorReport:
    """Every check, area by area (the factories and the asker are seams for tests)."""
    checks = [
        *proxmox.proxmox_checks(config, environ, stack=stack, api_factory=proxmox_api),
        *tailscale.tailscale_checks(config, environ, api_factory=tailscale_api),
        *clouds.cloud_checks(config, environ, stack=stack),
        *dns.dns_checks(config, asker=dns_asker),
    ]
    return DoctorReport(stack, source, tuple(checks))
