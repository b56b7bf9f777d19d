"""Credential expiry and the scripted rotation of the Proxmox API token.

`check_credentials` reports, for every secret a stack's CI uses (`config.required_secrets`),
when it is due: the earlier of the provider's own expiry (Tailscale keys, Proxmox API tokens),
read only when the environment holds a credential to ask with, and the stack's rotation record
(`ecoma:credentials.<key>: {rotated_at, max_age, key_id}`). `expiry_metrics` turns the report
into gauges.

`k3s_certificate_statuses` adds the k3s servers' own certificates to the report: read from each
server's /var/lib/rancher/k3s/server/tls (certificates only, never keys), due when the first leaf
certificate expires (CA certificates last ten years and are left out), with the gauge
`ecoma_k3s_certificate_expiry_timestamp_seconds{stack, node}`.

`rotate_proxmox_token` replaces the stack's Proxmox API token with a new privilege-separated
token holding the same ACLs, and deletes the old token only once the new one works and is stored.
Token values live in `Secret` objects and reach nothing but the HTTP header and
`StackBackend.set_secret`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.proxmox import (
    PROXMOX_TOKEN_ENV,
    AclEntry,
    ProxmoxApi,
    ProxmoxApiError,
    TokenId,
    token_expiry,
)
from ecoma_infra.platforms.seams import StackBackend
from ecoma_infra.platforms.tailscale import (
    API_KEY_ENV,
    OAUTH_CLIENT_SECRET_ENV,
    TailscaleApi,
)
from ecoma_infra.stack.model import (
    NAMESPACE,
    CredentialPolicy,
    StackConfig,
    duration_seconds,
    required_secrets,
)

Status = Literal["ok", "expiring", "expired", "unknown"]

EXPIRY_METRIC = "ecoma_credential_expiry_timestamp_seconds"
K3S_CERTIFICATE_METRIC = "ecoma_k3s_certificate_expiry_timestamp_seconds"
# k3s renews every certificate that is expired or within this many days of it each time it
# starts (docs.k3s.io/cli/certificate; 90 days before the May 2025 releases v1.33.1, v1.32.5,
# v1.31.9, v1.30.13). Client and server certificates last 365 days.
K3S_RENEWAL_DAYS = 120
K3S_CERTIFICATE_PREFIX = "k3s_certificates:"
README_SECTION = 'docs/credentials.md, section "Rotating credentials"'
SOURCE_PROVIDER = "provider metadata"
SOURCE_RECORD = "rotation record"
SOURCE_NONE = "none"
SOURCE_OIDC = "OIDC"
DEFAULT_MAX_AGE = "90d"

KINDS: dict[str, str] = {
    "k3s_token": "k3s server token",
    "k3s_agent_token": "k3s agent token",
    "proxmox_api_token": "Proxmox API token",
    "proxmox_ssh_private_key": "SSH key (Proxmox snippets)",
    "tailscale_oauth_client_secret": "Tailscale OAuth client",
    "tailscale_api_key": "Tailscale API key",
    "gcp_credentials": "GCP credentials",
    "oci_private_key": "OCI API signing key",
    "aws_web_identity_token": "AWS OIDC role",
    "aws_access_key_id": "AWS access key",
    "aws_secret_access_key": "AWS access key",
    "etcd_s3_access_key_id": "etcd snapshots' S3 key",
    "etcd_s3_secret_access_key": "etcd snapshots' S3 key",
}

_DEPLOY = "`ecoma-infra deploy --stack {stack}`"  # the one way a stack changes
_ROTATION_HINTS: dict[str, str] = {
    "k3s_token": "`k3s token rotate` on one server, set ecoma:k3s_token, "
    + _DEPLOY
    + ", `ecoma-infra configure --stack {stack} --tags k3s`",
    "k3s_agent_token": "set ecoma:k3s_agent_token, "
    + _DEPLOY
    + ", `ecoma-infra configure --stack {stack} --tags k3s` (servers first)",
    "proxmox_api_token": "`ecoma-infra credentials rotate --stack {stack} "
    "--credential proxmox_api_token`",
    "proxmox_ssh_private_key": "new key pair, add the public key on every hypervisor, set "
    "ecoma:proxmox_ssh_private_key, " + _DEPLOY + ", remove the old public key",
    "tailscale_oauth_client_secret": "new OAuth client in the admin console, set "
    "ecoma:tailscale_oauth_client_secret and ecoma:tailscale.oauth_client_id, "
    + _DEPLOY
    + ", revoke the old",
    "tailscale_api_key": "new API access token in the admin console, set "
    "ecoma:tailscale_api_key, " + _DEPLOY + ", revoke the old",
    "gcp_credentials": "new key or federation config, set ecoma:gcp_credentials, "
    + _DEPLOY
    + ", delete the old",
    "oci_private_key": "upload a new API key, set ecoma:oci_private_key and "
    "ecoma:burst.oci.fingerprint, " + _DEPLOY + ", delete the old",
    "aws_web_identity_token": "nothing to rotate; review the role's trust policy",
    "aws_access_key_id": "new access key, set both AWS secrets, "
    + _DEPLOY
    + ", deactivate then delete the old",
    "aws_secret_access_key": "new access key, set both AWS secrets, "
    + _DEPLOY
    + ", deactivate then delete the old",
    "etcd_s3_access_key_id": "new key at the S3 provider, set both etcd_s3 secrets, "
    + _DEPLOY
    + ", `ecoma-infra configure --stack {stack} --tags k3s --limit ecoma_cpl`, revoke the old",
    "etcd_s3_secret_access_key": "new key at the S3 provider, set both etcd_s3 secrets, "
    + _DEPLOY
    + ", `ecoma-infra configure --stack {stack} --tags k3s --limit ecoma_cpl`, revoke the old",
}

_OIDC_KEYS = frozenset({"aws_web_identity_token"})
_TAILSCALE_KEYS = frozenset({"tailscale_api_key", "tailscale_oauth_client_secret"})
# An API access token reads `tskey` + `-api-<key id>-<secret>`; the id is what the API takes.
_TAILSCALE_API_KEY_ID = re.compile(r"^tskey" r"-api-([A-Za-z0-9]+)-")


def rotation_hint(key: str, stack: str) -> str:
    """How to rotate `key`, in one line."""
    hint = _ROTATION_HINTS.get(
        key, "create a new one, set ecoma:{key}, " + _DEPLOY + ", revoke the old"
    )
    return hint.format(stack=stack, key=key) + f" ({README_SECTION})"


# --------------------------------------------------------------------------- provider metadata


@dataclass(frozen=True)
class Metadata:
    """What a provider said about a credential's expiry: `expires` None when it sets none or
    was not asked (`note` says which), `error` when the lookup failed."""

    expires: datetime | None = None
    note: str = ""
    error: str = ""


class MetadataSource(Protocol):
    def lookup(self, key: str, record: CredentialPolicy | None) -> Metadata: ...


class EnvironmentMetadata:
    """Provider metadata read with the credentials found in the environment: the Tailscale API
    (`TAILSCALE_API_KEY` or `TAILSCALE_OAUTH_CLIENT_SECRET`) and the Proxmox API
    (`PROXMOX_VE_API_TOKEN`)."""

    def __init__(self, config: StackConfig, environ: Mapping[str, str]) -> None:
        self._config = config
        self._environ = environ

    def lookup(self, key: str, record: CredentialPolicy | None) -> Metadata:
        if key in _TAILSCALE_KEYS:
            return self._tailscale(key, record)
        if key == "proxmox_api_token":
            return self._proxmox(record)
        return Metadata()

    def _tailscale(self, key: str, record: CredentialPolicy | None) -> Metadata:
        if not (self._environ.get(API_KEY_ENV) or self._environ.get(OAUTH_CLIENT_SECRET_ENV)):
            return Metadata(
                note=f"neither {API_KEY_ENV} nor {OAUTH_CLIENT_SECRET_ENV} is set: "
                "Tailscale not asked, the rotation record decides"
            )
        key_id = record.key_id if record and record.key_id else None
        if key_id is None and key == "tailscale_oauth_client_secret":
            key_id = self._config.tailscale.oauth_client_id
        if key_id is None and key == "tailscale_api_key":
            match = _TAILSCALE_API_KEY_ID.match(self._environ.get(API_KEY_ENV, ""))
            key_id = match.group(1) if match else None
        if key_id is None:
            return Metadata(
                note=f"no key_id in ecoma:credentials.{key}: add the key's id (admin console, "
                "Settings > Keys) to read its expiry from Tailscale"
            )
        try:
            api = TailscaleApi.from_environment(self._config.tailscale, self._environ)
            expires = api.key(key_id)
        except EcomaError as error:
            return Metadata(error=str(error))
        note = "" if expires else f"Tailscale sets no expiry for key {key_id}"
        return Metadata(expires=expires, note=note)

    def _proxmox(self, record: CredentialPolicy | None) -> Metadata:
        if not self._environ.get(PROXMOX_TOKEN_ENV):
            return Metadata(
                note=f"{PROXMOX_TOKEN_ENV} is not set: Proxmox not asked, the rotation record "
                "decides"
            )
        try:
            api = ProxmoxApi.from_environment(self._config.proxmox, self._environ)
            token_id = (
                TokenId.parse(record.key_id, "ecoma:credentials.proxmox_api_token.key_id")
                if record and record.key_id
                else api.token_id
            )
            expires = token_expiry(api.token_info(token_id), token_id)
        except EcomaError as error:
            return Metadata(error=str(error))
        if expires is None:
            return Metadata(note=f"Proxmox: token {token_id} never expires (expire=0)")
        return Metadata(expires=expires)


# --------------------------------------------------------------------------- the check


@dataclass(frozen=True)
class CredentialStatus:
    """One credential of the report."""

    key: str
    kind: str
    status: Status
    source: str
    due: datetime | None
    days_left: int | None
    hint: str
    fix: str = ""
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "credential": self.key,
            "kind": self.kind,
            "status": self.status,
            "source": self.source,
            "due": _iso(self.due) if self.due else None,
            "days_left": self.days_left,
            "rotate": self.hint,
            "fix": self.fix or None,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CredentialReport:
    """Every credential of a stack, most urgent first."""

    stack: str
    source: str
    checked_at: datetime
    within_days: int
    credentials: tuple[CredentialStatus, ...] = field(default_factory=tuple)

    @property
    def findings(self) -> list[CredentialStatus]:
        return [item for item in self.credentials if item.status != "ok"]

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "source": self.source,
            "checked_at": _iso(self.checked_at),
            "within_days": self.within_days,
            "ok": self.ok,
            "credentials": [item.to_json() for item in self.credentials],
        }


def check_credentials(
    stack: str,
    config: StackConfig,
    *,
    now: datetime,
    within_days: int,
    metadata: MetadataSource,
    source: str = "",
) -> CredentialReport:
    """The report for every credential `pulumi up` of this stack needs."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    source = source or f"Pulumi.{stack}.yaml"
    items = [
        assess(
            key,
            config.credentials.get(key),
            None if key in _OIDC_KEYS else metadata.lookup(key, config.credentials.get(key)),
            stack=stack,
            now=now,
            within_days=within_days,
            source=source,
        )
        for key in required_secrets(config)
    ]
    return CredentialReport(stack, source, now, within_days, tuple(sorted(items, key=_urgency)))


def assess(
    key: str,
    record: CredentialPolicy | None,
    metadata: Metadata | None,
    *,
    stack: str,
    now: datetime,
    within_days: int,
    source: str,
) -> CredentialStatus:
    """One credential's status: due = the earlier of the provider's expiry and
    rotated_at + max_age."""
    kind = KINDS.get(key, key)
    hint = rotation_hint(key, stack)
    if key in _OIDC_KEYS:
        return CredentialStatus(
            key, kind, "ok", SOURCE_OIDC, None, None, hint, notes=("OIDC: no long-lived key",)
        )
    metadata = metadata or Metadata()
    notes = [text for text in (metadata.note,) if text]
    candidates: list[tuple[datetime, str]] = []
    if metadata.expires is not None:
        candidates.append((metadata.expires, SOURCE_PROVIDER))
    if record is not None:
        candidates.append(
            (record.rotated_at + timedelta(seconds=record.max_age_seconds), SOURCE_RECORD)
        )
    due, due_source = min(candidates, key=lambda c: c[0]) if candidates else (None, SOURCE_NONE)
    days_left = None if due is None else math.floor((due - now).total_seconds() / 86400)
    record_fix = (
        f"add `{NAMESPACE}:credentials.{key}: {{rotated_at: YYYY-MM-DDT00:00:00Z, "
        f"max_age: {DEFAULT_MAX_AGE}}}` to {source}, rotated_at being when it was created or "
        "last rotated"
    )
    if metadata.error:
        return CredentialStatus(
            key,
            kind,
            "unknown",
            due_source,
            due,
            days_left,
            hint,
            fix=f"the provider lookup failed: {metadata.error}",
            notes=tuple(notes),
        )
    if due is None:
        return CredentialStatus(
            key,
            kind,
            "unknown",
            SOURCE_NONE,
            None,
            None,
            hint,
            fix=f"no rotation record and no expiry from the provider: {record_fix}",
            notes=tuple(notes),
        )
    if due <= now:
        status: Status = "expired"
        fix = f"expired on {due:%Y-%m-%d}: rotate now"
    elif due - now <= timedelta(days=within_days):
        status = "expiring"
        fix = f"due on {due:%Y-%m-%d}, within {within_days} days: rotate"
    else:
        status, fix = "ok", ""
    if due_source == SOURCE_RECORD and record is not None and record.rotated_at > now:
        notes.append(f"rotated_at {_iso(record.rotated_at)} is in the future")
    return CredentialStatus(key, kind, status, due_source, due, days_left, hint, fix, tuple(notes))


def _urgency(item: CredentialStatus) -> tuple[int, float, str]:
    if item.status == "unknown" and item.days_left is None:
        return (0, 0.0, item.key)
    if item.days_left is None:
        return (2, 0.0, item.key)
    return (1, float(item.days_left), item.key)


def expiry_metrics(report: CredentialReport) -> list[tuple[str, dict[str, str], float]]:
    """`ecoma_credential_expiry_timestamp_seconds{stack, credential}` = the due date as a Unix
    timestamp, for every credential that has one; the k3s servers' rows give
    `ecoma_k3s_certificate_expiry_timestamp_seconds{stack, node}`."""
    metrics: list[tuple[str, dict[str, str], float]] = []
    for item in report.credentials:
        if item.due is None:
            continue
        if item.key.startswith(K3S_CERTIFICATE_PREFIX):
            node = item.key.removeprefix(K3S_CERTIFICATE_PREFIX)
            labels = {"stack": report.stack, "node": node}
            metrics.append((K3S_CERTIFICATE_METRIC, labels, item.due.timestamp()))
        else:
            labels = {"stack": report.stack, "credential": item.key}
            metrics.append((EXPIRY_METRIC, labels, item.due.timestamp()))
    return metrics


# --------------------------------------------------------------------------- k3s certificates


@dataclass(frozen=True)
class ServerCertificate:
    """One leaf certificate of a k3s server."""

    node: str
    path: str
    subject: str
    not_after: datetime


def leaf_certificates(node: str, files: Mapping[str, bytes]) -> list[ServerCertificate]:
    """The leaf certificates in `files` (PEM bundles by path): each file holds its certificate
    and the chain up to its CA; CA certificates (BasicConstraints ca) are left out. A file that
    is not PEM raises `EcomaError` naming it."""
    from cryptography import x509  # noqa: PLC0415  (only when certificates are checked)

    found: list[ServerCertificate] = []
    for path, data in sorted(files.items()):
        try:
            certificates = x509.load_pem_x509_certificates(data)
        except ValueError as error:
            raise EcomaError(f"{node}:{path} is not a PEM certificate file: {error}") from None
        for certificate in certificates:
            try:
                is_ca = certificate.extensions.get_extension_for_class(
                    x509.BasicConstraints
                ).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            if not is_ca:
                subject = certificate.subject.rfc4514_string()
                found.append(
                    ServerCertificate(node, path, subject, certificate.not_valid_after_utc)
                )
    return found


def k3s_certificate_statuses(
    servers: Mapping[str, Mapping[str, bytes] | EcomaError],
    *,
    stack: str,
    now: datetime,
    within_days: int,
) -> list[CredentialStatus]:
    """A report row per server: due when its first leaf certificate expires. `servers` holds
    each server's certificate files, or the error that reading them gave."""
    rows = []
    for node, files in sorted(servers.items()):
        key = f"{K3S_CERTIFICATE_PREFIX}{node}"
        kind = "k3s server certificates"
        hint = (
            f"restart k3s on {node} (`systemctl restart k3s`, one server at a time; an "
            f"`ecoma-infra upgrade` does): k3s renews every certificate within "
            f"{K3S_RENEWAL_DAYS} days of expiry when it starts; expired: `k3s certificate "
            "rotate` with k3s stopped (docs/day2.md, 'Certificates')"
        )
        if isinstance(files, EcomaError):
            rows.append(
                CredentialStatus(
                    key, kind, "unknown", SOURCE_NONE, None, None, hint, fix=f"{files}"
                )
            )
            continue
        try:
            leaves = leaf_certificates(node, files)
        except EcomaError as error:
            rows.append(
                CredentialStatus(
                    key, kind, "unknown", SOURCE_NONE, None, None, hint, fix=str(error)
                )
            )
            continue
        if not leaves:
            rows.append(
                CredentialStatus(
                    key,
                    kind,
                    "unknown",
                    SOURCE_NONE,
                    None,
                    None,
                    hint,
                    fix=f"no certificate found under /var/lib/rancher/k3s/server/tls on {node}: "
                    "is it a k3s server?",
                )
            )
            continue
        first = min(leaves, key=lambda leaf: leaf.not_after)
        due = first.not_after
        days_left = math.floor((due - now).total_seconds() / 86400)
        notes = [f"first to expire: {first.path.rsplit('/', 1)[-1]} ({first.subject})"]
        if due <= now:
            status: Status = "expired"
            fix = f"expired on {due:%Y-%m-%d}: `k3s certificate rotate` on {node} (docs/day2.md)"
        elif due - now <= timedelta(days=within_days):
            status, fix = (
                "expiring",
                f"due on {due:%Y-%m-%d}, within {within_days} days: restart k3s",
            )
        else:
            status, fix = "ok", ""
        if status == "ok" and due - now <= timedelta(days=K3S_RENEWAL_DAYS):
            notes.append(f"inside k3s's {K3S_RENEWAL_DAYS}-day window: its next restart renews it")
        rows.append(
            CredentialStatus(
                key, kind, status, "server files", due, days_left, hint, fix, tuple(notes)
            )
        )
    return rows


def with_rows(report: CredentialReport, rows: Sequence[CredentialStatus]) -> CredentialReport:
    """The report with more rows, most urgent first again."""
    items = sorted([*report.credentials, *rows], key=_urgency)
    return CredentialReport(
        report.stack, report.source, report.checked_at, report.within_days, tuple(items)
    )


def render_report(report: CredentialReport) -> str:
    """The report as a plain-text table, then what to do and the notes."""
    headers = ("CREDENTIAL", "KIND", "STATUS", "DAYS LEFT", "DUE (UTC)", "SOURCE")
    rows = [
        (
            item.key,
            item.kind,
            item.status,
            "-" if item.days_left is None else str(item.days_left),
            f"{item.due.astimezone(UTC):%Y-%m-%d %H:%M}" if item.due else "-",
            item.source,
        )
        for item in report.credentials
    ]
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    lines = [
        f"{report.stack}: {len(rows)} credentials, checked {report.checked_at:%Y-%m-%d %H:%M} "
        f"UTC, due within {report.within_days} days counts as expiring",
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        *("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows),
    ]
    if report.findings:
        lines.append("")
        lines.append(f"{len(report.findings)} to act on:")
        for item in report.findings:
            lines.append(f"  - {NAMESPACE}:{item.key} ({item.status}): {item.fix}")
            if item.status != "unknown" or item.days_left is not None:
                lines.append(f"    rotate: {item.hint}")
    notes = [(item.key, note) for item in report.credentials for note in item.notes]
    if notes:
        lines.append("")
        lines.append("notes:")
        lines.extend(f"  - {key}: {note}" for key, note in notes)
    lines.append("")
    lines.append("ok: nothing due" if report.ok else "not ok: see above")
    return "\n".join(lines)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------- rotation


class RotationError(EcomaError):
    """Rotation stopped; the message says what state the tokens and the stack are in."""


@dataclass(frozen=True)
class RotationPlan:
    """What `rotate` will do for the Proxmox API token."""

    stack: str
    old: TokenId
    new: TokenId
    expires: datetime
    max_age: str
    acl: tuple[AclEntry, ...]

    def describe(self) -> list[str]:
        grants = ", ".join(f"{e.roleid} on {e.path}" for e in self.acl)
        return [
            f"stack {self.stack}: rotate the Proxmox API token {self.old}",
            f"  1. create {self.new} (privilege-separated, expires {self.expires:%Y-%m-%d}, "
            f"max_age {self.max_age})",
            f"  2. grant it the old token's ACLs: {grants}",
            "  3. check that it works (API version, effective permissions)",
            f"  4. store it as {NAMESPACE}:proxmox_api_token and update "
            f"{NAMESPACE}:credentials.proxmox_api_token",
            f"  5. delete {self.old}",
        ]


def plan_proxmox_rotation(
    stack: str, config: StackConfig, api: ProxmoxApi, *, now: datetime
) -> RotationPlan:
    """Read the old token and its ACLs and pick the new token's id; changes nothing."""
    record = config.credentials.get("proxmox_api_token")
    where = f"{NAMESPACE}:credentials.proxmox_api_token.key_id"
    old = TokenId.parse(record.key_id, where) if record and record.key_id else api.token_id
    max_age = record.max_age if record else DEFAULT_MAX_AGE
    info = api.token_info(old)
    if str(info.get("privsep", 1)) in ("0", "False", "false"):
        raise RotationError(
            f"{old} has privsep=0 (all privileges of {old.userid}); `rotate` makes "
            "privilege-separated tokens and copies the old token's own ACLs, which it has none "
            f"of. Nothing was changed. Fix: give {old} its own ACLs and privsep=1 in PVE, or "
            f"rotate by hand ({README_SECTION})"
        )
    acl = api.token_acl(old)
    if not acl:
        raise RotationError(
            f"no ACL entry names {old}: the new token would be allowed nothing. Nothing was "
            f"changed. Fix: check that {api.token_id} may list ACLs (Sys.Audit on /access) and "
            f"that {old} has its own ACLs (Datacenter > Permissions)"
        )
    taken = api.token_ids(old.userid) | {old.tokenid}
    base = f"ci-{now:%Y%m%d}"
    tokenid = base
    suffix = 2
    while tokenid in taken:
        tokenid = f"{base}-{suffix}"
        suffix += 1
    return RotationPlan(
        stack,
        old,
        TokenId(old.userid, tokenid),
        now + timedelta(seconds=duration_seconds(max_age)),
        max_age,
        tuple(acl),
    )


def rotate_proxmox_token(
    backend: StackBackend,
    plan: RotationPlan,
    api: ProxmoxApi,
    *,
    now: datetime,
    say: Callable[[str], None],
) -> None:
    """Carry out `plan`: create, grant, verify, store, record, and only then delete the old
    token. A failure before the delete leaves the old token valid and in the stack (a new token
    not yet stored is deleted again); `RotationError` says where things stand."""
    old, new = plan.old, plan.new
    untouched = f"the old token {old} is untouched: still valid and still in stack {plan.stack}"
    comment = f"ecoma-infra stack {plan.stack}, replaces {old.tokenid}"
    try:
        secret = api.create_token(new, expire=int(plan.expires.timestamp()), comment=comment)
    except EcomaError as error:
        raise RotationError(
            f"creating {new} failed: {error}. State: nothing was changed, {untouched}"
        ) from None
    say(f"created {new} (expires {plan.expires:%Y-%m-%d})")

    def abandon(step: str, error: EcomaError) -> RotationError:
        try:
            api.delete_token(new)
            cleanup = f"the new token {new} was deleted again"
        except EcomaError as cleanup_error:
            cleanup = (
                f"the new token {new} could not be deleted ({cleanup_error}): delete it with "
                f"`pveum user token remove {new.userid} {new.tokenid}`"
            )
        return RotationError(f"{step} failed: {error}. State: {untouched}; {cleanup}")

    try:
        for entry in plan.acl:
            api.grant(entry, new)
    except EcomaError as error:
        raise abandon(f"granting the ACLs to {new}", error) from None
    say(f"granted {len(plan.acl)} ACL entr{'y' if len(plan.acl) == 1 else 'ies'} to {new}")

    try:
        verify_token(api.with_token(new, secret, "the token just created"), plan.acl)
    except EcomaError as error:
        raise abandon(f"verifying {new}", error) from None
    say(f"verified {new}: it authenticates and holds the old token's permissions")

    try:
        backend.set_secret(f"{NAMESPACE}:proxmox_api_token", f"{new.full}={secret.reveal()}")
    except EcomaError as error:
        raise abandon(f"storing {new} in stack {plan.stack}", error) from None
    say(f"stored {new} as {NAMESPACE}:proxmox_api_token")

    base = f"{NAMESPACE}:credentials.proxmox_api_token"
    try:
        backend.set_config(
            {
                f"{base}.rotated_at": _iso(now),
                f"{base}.max_age": plan.max_age,
                f"{base}.key_id": new.full,
            }
        )
    except EcomaError as error:
        raise RotationError(
            f"updating {base} failed: {error}. Stack {plan.stack} holds the new token {new}, "
            f"which works; the old token {old} still exists and was not deleted. Fix: "
            f"`pulumi config set --path {base}.rotated_at {_iso(now)}` (and .key_id {new}, "
            f".max_age {plan.max_age}), then `pveum user token remove {old.userid} {old.tokenid}`"
        ) from None
    say(f"updated {base}")

    try:
        api.delete_token(old)
    except EcomaError as error:
        raise RotationError(
            f"deleting the old token {old} failed: {error}. The rotation is otherwise done: stack "
            f"{plan.stack} holds {new}. Fix: `pveum user token remove {old.userid} {old.tokenid}`"
        ) from None
    say(f"deleted the old token {old}")


def verify_token(api: ProxmoxApi, acl: Sequence[AclEntry]) -> None:
    """The token authenticates, and has privileges on every path of `acl` (except NoAccess)."""
    api.version()
    permissions = api.permissions()
    missing = [
        entry.path
        for entry in acl
        if entry.roleid != "NoAccess" and not permissions.get(entry.path)
    ]
    if missing:
        raise ProxmoxApiError(
            f"{api.token_id} has no privileges on {', '.join(missing)} although it was granted "
            "the old token's roles there"
        )


def manual_rotation(key: str, stack: str) -> str:
    """Why `rotate` does not script `key`, and what to do instead."""
    reasons = {
        "tailscale_oauth_client_secret": "Tailscale OAuth clients can only be created in the "
        "admin console",
        "tailscale_api_key": "Tailscale API access tokens can only be created in the admin console",
        "aws_web_identity_token": "the AWS pool uses OIDC: there is no long-lived secret; review "
        "the role's trust policy instead",
        "k3s_token": "the k3s server token is rotated on the cluster (`k3s token rotate`)",
        "k3s_agent_token": "the k3s agent token is rolled out to every node by `configure`",
    }
    reason = reasons.get(key, f"{KINDS.get(key, key)} rotation is not scripted")
    return f"{key}: {reason}. Steps: {rotation_hint(key, stack)}"
