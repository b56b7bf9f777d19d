"""One finding of `doctor` and the report of them all: ok, warn, fail or not checked, each with
what was seen and, where something is to be done, the fix."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "not checked"]
STATUSES: tuple[Status, ...] = ("ok", "warn", "fail", "not checked")
_LABELS: dict[Status, str] = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "not checked": "--"}


@dataclass(frozen=True)
class Check:
    """One check: `area` (proxmox, tailscale, aws, gcp, oci, dns), what was checked, the
    outcome, what was seen, and the fix. "not checked" says why in `detail`: never "ok" for
    something nobody looked at."""

    area: str
    name: str
    status: Status
    detail: str
    fix: str = ""

    def renamed(self, name: str) -> Check:
        return Check(self.area, name, self.status, self.detail, self.fix)

    def to_json(self) -> dict[str, Any]:
        return {
            "area": self.area,
            "check": self.name,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix or None,
        }


def ok(area: str, name: str, detail: str) -> Check:
    return Check(area, name, "ok", detail)


def warn(area: str, name: str, detail: str, fix: str = "") -> Check:
    return Check(area, name, "warn", detail, fix)


def fail(area: str, name: str, detail: str, fix: str) -> Check:
    return Check(area, name, "fail", detail, fix)


def not_checked(area: str, name: str, why: str, fix: str = "") -> Check:
    return Check(area, name, "not checked", why, fix)


@dataclass(frozen=True)
class DoctorReport:
    stack: str
    source: str
    checks: tuple[Check, ...]

    def counts(self) -> dict[Status, int]:
        found = Counter(check.status for check in self.checks)
        return {status: found.get(status, 0) for status in STATUSES}

    def passed(self, *, strict: bool = False) -> bool:
        """No check failed; with `strict`, also none warned or went unchecked."""
        bad: tuple[Status, ...] = ("fail", "warn", "not checked") if strict else ("fail",)
        return not any(check.status in bad for check in self.checks)

    def to_json(self, *, strict: bool = False) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "source": self.source,
            "ok": self.passed(strict=strict),
            "strict": strict,
            "counts": self.counts(),
            "checks": [check.to_json() for check in self.checks],
        }


def render_report(report: DoctorReport, *, strict: bool = False) -> str:
    """The checks by area, each line `STATUS  name  detail`, its fix below it; then the count."""
    width = max((len(check.name) for check in report.checks), default=0)
    lines = [f"doctor {report.stack} ({report.source})"]
    area = None
    for check in report.checks:
        if check.area != area:
            area = check.area
            lines.append("")
            lines.append(area)
        lines.append(f"  {_LABELS[check.status]:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {check.fix}")
    counts = report.counts()
    lines.append("")
    summary = ", ".join(f"{counts[status]} {status}" for status in STATUSES)
    verdict = "ready" if report.passed(strict=strict) else "not ready"
    lines.append(f"{summary}: {verdict}" + (" (--strict)" if strict else ""))
    return "\n".join(lines)
