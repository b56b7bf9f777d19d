"""`ecoma-infra credentials check|rotate` against simulated Tailscale and Proxmox APIs (real
HTTP servers on 127.0.0.1; Proxmox over TLS with a self-signed certificate) and an in-memory
stack backend."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from simulated_apis import SimulatedProxmox, SimulatedTailscale
from stacks import ROOT, stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.cli.commands import credentials as command
from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.credentials import (
    EXPIRY_METRIC,
    EnvironmentMetadata,
    Metadata,
    RotationError,
    check_credentials,
    expiry_metrics,
    plan_proxmox_rotation,
    render_report,
)
from ecoma_infra.platforms.proxmox import ProxmoxApi, TokenId, parse_api_token
from ecoma_infra.platforms.seams import StackBackend, UpSummary
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import CredentialPolicy, StackConfig

FIXED_NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# Where a simulated server checks a token's expiry against the clock, tests use the real time.
NOW = datetime.now(UTC).replace(microsecond=0)
CREDENTIAL_ENV = (
    "TAILSCALE_API_KEY",
    "TAILSCALE_OAUTH_CLIENT_ID",
    "TAILSCALE_OAUTH_CLIENT_SECRET",
    "TAILSCALE_BASE_URL",
    "PROXMOX_VE_API_TOKEN",
)
STAGING_KEYS = {
    "k3s_token",
    "k3s_agent_token",
    "proxmox_api_token",
    "proxmox_ssh_private_key",
    "tailscale_oauth_client_secret",
    "gcp_credentials",
    "oci_private_key",
    "aws_web_identity_token",
}


@pytest.fixture
def tailscale(staging: StackConfig) -> Iterator[SimulatedTailscale]:
    with SimulatedTailscale(tailnet=staging.tailscale.tailnet) as api:
        yield api


@pytest.fixture
def proxmox() -> Iterator[SimulatedProxmox]:
    with SimulatedProxmox() as api:
        yield api


@pytest.fixture(autouse=True)
def _no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's own environment never decides a test."""
    for name in CREDENTIAL_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def staging() -> StackConfig:
    return load_stack_file(ROOT / "Pulumi.staging.yaml").config


def record(rotated_days_ago: float, now: datetime = FIXED_NOW, **extra: Any) -> CredentialPolicy:
    return CredentialPolicy(rotated_at=now - timedelta(days=rotated_days_ago), **extra)


def with_credentials(config: StackConfig, **records: CredentialPolicy) -> StackConfig:
    return config.model_copy(update={"credentials": records})


def pointed_at(
    config: StackConfig, tailscale: SimulatedTailscale | None, proxmox: SimulatedProxmox | None
) -> StackConfig:
    """The config with its Tailscale OAuth client and Proxmox endpoint those of the servers."""
    update: dict[str, Any] = {}
    if tailscale is not None:
        update["tailscale"] = config.tailscale.model_copy(
            update={"oauth_client_id": tailscale.client_id}
        )
    if proxmox is not None:
        update["proxmox"] = config.proxmox.model_copy(
            update={"endpoint": proxmox.url + "/", "insecure": True}
        )
    return config.model_copy(update=update)


class NoMetadata:
    def lookup(self, key: str, record: CredentialPolicy | None) -> Metadata:
        return Metadata()


def assert_no_secrets(texts: list[str], secrets: list[str]) -> None:
    assert secrets, "nothing to look for"
    for text in texts:
        for secret in secrets:
            assert secret not in text


# --------------------------------------------------------------------------- statuses


def test_statuses_ok_expiring_expired_unknown_with_a_fixed_now(staging: StackConfig) -> None:
    config = with_credentials(
        staging,
        k3s_token=record(10),  # due in 80 days
        k3s_agent_token=record(85),  # due in 5 days
        proxmox_ssh_private_key=record(100),  # 10 days ago
        proxmox_api_token=record(1, max_age="30d"),  # due in 29 days
        tailscale_oauth_client_secret=record(20),
        oci_private_key=record(0),
    )  # gcp_credentials: no record

    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=14, metadata=NoMetadata()
    )

    by_key = {item.key: item for item in report.credentials}
    assert set(by_key) == STAGING_KEYS
    assert {k: (v.status, v.days_left) for k, v in by_key.items()} == {
        "gcp_credentials": ("unknown", None),
        "proxmox_ssh_private_key": ("expired", -10),
        "k3s_agent_token": ("expiring", 5),
        "proxmox_api_token": ("ok", 29),
        "tailscale_oauth_client_secret": ("ok", 70),
        "k3s_token": ("ok", 80),
        "oci_private_key": ("ok", 90),
        "aws_web_identity_token": ("ok", None),
    }
    assert [item.key for item in report.credentials] == [
        "gcp_credentials",
        "proxmox_ssh_private_key",
        "k3s_agent_token",
        "proxmox_api_token",
        "tailscale_oauth_client_secret",
        "k3s_token",
        "oci_private_key",
        "aws_web_identity_token",
    ]
    assert not report.ok
    assert [item.key for item in report.findings] == [
        "gcp_credentials",
        "proxmox_ssh_private_key",
        "k3s_agent_token",
    ]
    unknown = by_key["gcp_credentials"]
    assert unknown.source == "none"
    assert unknown.fix == (
        "no rotation record and no expiry from the provider: add `ecoma:credentials."
        "gcp_credentials: {rotated_at: YYYY-MM-DDT00:00:00Z, max_age: 90d}` to Pulumi.staging.yaml"
        ", rotated_at being when it was created or last rotated"
    )
    assert by_key["k3s_agent_token"].due == FIXED_NOW + timedelta(days=5)
    assert by_key["k3s_agent_token"].source == "rotation record"
    oidc = by_key["aws_web_identity_token"]
    assert (oidc.source, oidc.notes) == ("OIDC", ("OIDC: no long-lived key",))
    assert "credentials rotate --stack staging --credential proxmox_api_token" in (
        by_key["proxmox_api_token"].hint
    )


@pytest.mark.parametrize(
    ("rotated_days_ago", "within", "status"),
    [
        (90, 14, "expired"),  # due exactly now
        (76, 14, "expiring"),  # due exactly at the end of the window
        (75.99, 14, "ok"),  # a little after it
        (90, 0, "expired"),
        (89, 0, "ok"),
    ],
)
def test_window_boundaries(
    staging: StackConfig, rotated_days_ago: float, within: int, status: str
) -> None:
    everything = {key: record(0) for key in STAGING_KEYS}
    everything["k3s_token"] = record(rotated_days_ago)
    config = with_credentials(staging, **everything)

    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=within, metadata=NoMetadata()
    )

    assert {i.key: i.status for i in report.credentials}["k3s_token"] == status
    assert report.ok is (status == "ok")


def test_an_all_fresh_stack_is_ok(staging: StackConfig) -> None:
    config = with_credentials(staging, **{key: record(1) for key in STAGING_KEYS})

    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=30, metadata=NoMetadata()
    )

    assert report.ok
    assert render_report(report).endswith("ok: nothing due")


# --------------------------------------------------------------------------- provider metadata


def test_simulated_tailscale_expiry_earlier_than_the_record_wins(
    staging: StackConfig, tailscale: SimulatedTailscale
) -> None:
    tailscale.add_key(tailscale.client_id, NOW + timedelta(days=3, hours=1))
    config = with_credentials(
        pointed_at(staging, tailscale, None), tailscale_oauth_client_secret=record(10, NOW)
    )
    environ = {
        "TAILSCALE_OAUTH_CLIENT_SECRET": tailscale.client_secret,
        "TAILSCALE_BASE_URL": tailscale.url,
    }

    report = check_credentials(
        "staging",
        config,
        now=NOW,
        within_days=14,
        metadata=EnvironmentMetadata(config, environ),
    )

    item = {i.key: i for i in report.credentials}["tailscale_oauth_client_secret"]
    assert (item.status, item.source, item.days_left) == ("expiring", "provider metadata", 3)
    assert item.due == NOW + timedelta(days=3, hours=1)
    assert tailscale.exchanges == 1


def test_simulated_record_earlier_than_the_provider_wins(
    staging: StackConfig, tailscale: SimulatedTailscale
) -> None:
    tailscale.add_key(tailscale.api_key_id, NOW + timedelta(days=60))
    settings = staging.tailscale.model_copy(update={"oauth_client_id": None})
    config = staging.model_copy(
        update={
            "tailscale": settings,
            "credentials": {"tailscale_api_key": record(88, NOW, max_age="90d")},
        }
    )
    # no key_id in the record: the id part of the key in TAILSCALE_API_KEY is used
    environ = {"TAILSCALE_API_KEY": tailscale.api_key, "TAILSCALE_BASE_URL": tailscale.url}

    report = check_credentials(
        "staging", config, now=NOW, within_days=7, metadata=EnvironmentMetadata(config, environ)
    )

    item = {i.key: i for i in report.credentials}["tailscale_api_key"]
    assert (item.status, item.source, item.days_left) == ("expiring", "rotation record", 2)
    assert any(s.path.endswith(f"/keys/{tailscale.api_key_id}") for s in tailscale.seen)


def test_simulated_proxmox_expire_zero_leaves_the_rotation_record_to_decide(
    staging: StackConfig, proxmox: SimulatedProxmox
) -> None:
    token = proxmox.add_token("ci-20250301", expire=0)
    config = with_credentials(
        pointed_at(staging, None, proxmox),
        proxmox_api_token=record(80, NOW, key_id="ci@pve!ci-20250301"),
    )

    report = check_credentials(
        "staging",
        config,
        now=NOW,
        within_days=14,
        metadata=EnvironmentMetadata(config, {"PROXMOX_VE_API_TOKEN": token}),
    )

    item = {i.key: i for i in report.credentials}["proxmox_api_token"]
    assert (item.status, item.source, item.days_left) == ("expiring", "rotation record", 10)
    assert item.notes == ("Proxmox: token ci@pve!ci-20250301 never expires (expire=0)",)
    assert proxmox.seen[-1].path == "/access/users/ci@pve/token/ci-20250301"


def test_simulated_proxmox_expiry_from_the_provider(
    staging: StackConfig, proxmox: SimulatedProxmox
) -> None:
    expire = NOW + timedelta(days=20)
    token = proxmox.add_token("ci-20250301", expire=int(expire.timestamp()))
    # no record at all: the provider's expiry alone decides, read for the token in the env
    config = with_credentials(pointed_at(staging, None, proxmox))

    report = check_credentials(
        "staging",
        config,
        now=NOW,
        within_days=14,
        metadata=EnvironmentMetadata(config, {"PROXMOX_VE_API_TOKEN": token}),
    )

    item = {i.key: i for i in report.credentials}["proxmox_api_token"]
    assert (item.status, item.source, item.due) == ("ok", "provider metadata", expire)


def test_simulated_proxmox_never_expiring_without_a_record_is_unknown(
    staging: StackConfig, proxmox: SimulatedProxmox
) -> None:
    token = proxmox.add_token("ci-20250301", expire=0)
    config = with_credentials(pointed_at(staging, None, proxmox))

    report = check_credentials(
        "staging",
        config,
        now=NOW,
        within_days=14,
        metadata=EnvironmentMetadata(config, {"PROXMOX_VE_API_TOKEN": token}),
    )

    item = {i.key: i for i in report.credentials}["proxmox_api_token"]
    assert item.status == "unknown"
    assert "ecoma:credentials.proxmox_api_token: {rotated_at:" in item.fix


def test_without_env_credentials_the_record_decides_and_says_so(staging: StackConfig) -> None:
    config = with_credentials(
        staging, proxmox_api_token=record(5), tailscale_oauth_client_secret=record(5)
    )

    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=14, metadata=EnvironmentMetadata(config, {})
    )

    by_key = {i.key: i for i in report.credentials}
    assert by_key["proxmox_api_token"].source == "rotation record"
    assert by_key["proxmox_api_token"].notes == (
        "PROXMOX_VE_API_TOKEN is not set: Proxmox not asked, the rotation record decides",
    )
    assert "Tailscale not asked" in by_key["tailscale_oauth_client_secret"].notes[0]


def test_simulated_failed_lookup_is_unknown_without_the_secret(
    staging: StackConfig, tailscale: SimulatedTailscale
) -> None:
    wrong = tailscale.client_secret[:-4] + "0000"
    config = with_credentials(
        pointed_at(staging, tailscale, None), tailscale_oauth_client_secret=record(1)
    )
    environ = {"TAILSCALE_OAUTH_CLIENT_SECRET": wrong, "TAILSCALE_BASE_URL": tailscale.url}

    report = check_credentials(
        "staging",
        config,
        now=FIXED_NOW,
        within_days=14,
        metadata=EnvironmentMetadata(config, environ),
    )

    item = {i.key: i for i in report.credentials}["tailscale_oauth_client_secret"]
    assert item.status == "unknown"
    assert item.fix.startswith("the provider lookup failed: Tailscale API POST")
    assert "HTTP 401" in item.fix
    assert_no_secrets([item.fix, json.dumps(report.to_json())], [wrong])


# --------------------------------------------------------------------------- output


def test_expiry_metrics_are_a_pure_function_of_the_report(staging: StackConfig) -> None:
    config = with_credentials(staging, k3s_token=record(10), k3s_agent_token=record(85))
    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=14, metadata=NoMetadata()
    )

    metrics = expiry_metrics(report)

    assert metrics == expiry_metrics(report)
    assert metrics == [
        (
            EXPIRY_METRIC,
            {"stack": "staging", "credential": "k3s_agent_token"},
            (FIXED_NOW + timedelta(days=5)).timestamp(),
        ),
        (
            EXPIRY_METRIC,
            {"stack": "staging", "credential": "k3s_token"},
            (FIXED_NOW + timedelta(days=80)).timestamp(),
        ),
    ]


def test_table_lists_every_credential_then_what_to_do(staging: StackConfig) -> None:
    config = with_credentials(staging, k3s_agent_token=record(85))
    report = check_credentials(
        "staging", config, now=FIXED_NOW, within_days=14, metadata=NoMetadata()
    )

    lines = render_report(report).splitlines()

    assert lines[1].split() == [
        "CREDENTIAL",
        "KIND",
        "STATUS",
        "DAYS",
        "LEFT",
        "DUE",
        "(UTC)",
        "SOURCE",
    ]
    assert lines[2].split()[0] == "gcp_credentials"
    row = next(line for line in lines if line.startswith("k3s_agent_token "))
    assert row.split()[-6:] == ["expiring", "5", "2025-06-06", "12:00", "rotation", "record"]
    assert (
        "  - ecoma:k3s_agent_token (expiring): due on 2025-06-06, within 14 days: rotate" in lines
    )
    assert lines[-1] == "not ok: see above"


# --------------------------------------------------------------------------- the CLI: check


def credentials_block(now: datetime, **days_ago: float) -> dict[str, Any]:
    return {
        key: {"rotated_at": (now - timedelta(days=days)).isoformat(), "max_age": "90d"}
        for key, days in days_ago.items()
    }


def stack_with(
    tmp_path: Path,
    credentials: dict[str, Any],
    tailscale: SimulatedTailscale | None = None,
    proxmox: SimulatedProxmox | None = None,
) -> Path:
    def change(config: dict[str, Any]) -> None:
        config["ecoma:credentials"] = credentials
        if tailscale is not None:
            config["ecoma:tailscale"]["oauth_client_id"] = tailscale.client_id
        if proxmox is not None:
            config["ecoma:proxmox"]["endpoint"] = proxmox.url + "/"
            config["ecoma:proxmox"]["insecure"] = True

    return stack_variant(tmp_path, "staging", change)


def test_simulated_cli_check_exits_0_when_nothing_is_due(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tailscale: SimulatedTailscale,
    proxmox: SimulatedProxmox,
) -> None:
    token = proxmox.add_token("ci-20250301", expire=int((NOW + timedelta(days=300)).timestamp()))
    tailscale.add_key(tailscale.client_id, None)
    fresh = dict.fromkeys(STAGING_KEYS - {"aws_web_identity_token"}, 3)
    path = stack_with(tmp_path, credentials_block(NOW, **fresh), tailscale, proxmox)
    monkeypatch.setattr(command, "now", lambda: NOW)
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", token)
    monkeypatch.setenv("TAILSCALE_OAUTH_CLIENT_SECRET", tailscale.client_secret)
    monkeypatch.setenv("TAILSCALE_BASE_URL", tailscale.url)

    code = cli.main(["credentials", "check", "--file", str(path), "--within-days", "30"])

    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert out.rstrip().endswith("ok: nothing due")
    assert "Tailscale sets no expiry for key" in out
    for key in STAGING_KEYS:
        assert f"\n{key} " in out
    assert {s.path for s in proxmox.seen} == {"/access/users/ci@pve/token/ci-20250301"}
    assert_no_secrets(
        [out, err], [token.partition("=")[2], tailscale.client_secret, *tailscale.access_tokens]
    )


def test_simulated_cli_check_exits_1_and_prints_json_when_something_is_due(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    proxmox: SimulatedProxmox,
) -> None:
    soon = NOW + timedelta(days=4)
    token = proxmox.add_token("ci-20250301", expire=int(soon.timestamp()))
    fresh = dict.fromkeys(STAGING_KEYS - {"aws_web_identity_token"}, 3)
    path = stack_with(tmp_path, credentials_block(NOW, **fresh), None, proxmox)
    monkeypatch.setattr(command, "now", lambda: NOW)
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", token)

    code = cli.main(["credentials", "check", "--file", str(path), "--within-days", "7", "--json"])

    out, err = capsys.readouterr()
    assert code == 1
    document = json.loads(out)
    assert document["ok"] is False
    assert document["stack"] == "staging"
    first = document["credentials"][0]
    assert first["credential"] == "proxmox_api_token"
    assert (first["status"], first["source"], first["days_left"]) == (
        "expiring",
        "provider metadata",
        4,
    )
    assert first["due"] == soon.isoformat().replace("+00:00", "Z")
    oauth = next(c for c in document["credentials"] if c["credential"].startswith("tailscale"))
    assert "neither TAILSCALE_API_KEY nor TAILSCALE_OAUTH_CLIENT_SECRET" in oauth["notes"][0]
    assert_no_secrets([out, err], [token.partition("=")[2]])


def test_cli_check_exits_1_for_a_credential_without_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack_with(tmp_path, credentials_block(NOW, k3s_token=1))

    code = cli.main(["credentials", "check", "--file", str(path), "--within-days", "14"])

    out, _ = capsys.readouterr()
    assert code == 1
    assert "ecoma:gcp_credentials (unknown): no rotation record" in out


def test_cli_check_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = stack_with(tmp_path, {})

    assert cli.main(["credentials", "check", "--file", str(path), "--within-days", "-1"]) == 2
    assert "--within-days -1: give 0 or more days" in capsys.readouterr().err
    missing = tmp_path / "Pulumi.nope.yaml"
    assert cli.main(["credentials", "check", "--file", str(missing), "--within-days", "1"]) == 2
    with pytest.raises(SystemExit) as exited:
        cli.main(["credentials", "check", "--file", str(path)])
    assert exited.value.code == 2


# --------------------------------------------------------------------------- rotation


class SimulatedStack:
    """An in-memory `StackBackend`: structured config set by path, secrets kept apart."""

    def __init__(self, name: str, config: Mapping[str, Any], events: list[str]) -> None:
        self.name = name
        self.values: dict[str, Any] = copy.deepcopy(dict(config))
        self.secrets: dict[str, str] = {}
        self.events = events
        self.fail_on: set[str] = set()

    def config(self) -> dict[str, Any]:
        result = copy.deepcopy(self.values)
        result.update({key: {"secure": "[secret]"} for key in self.secrets})
        return result

    def set_config(self, values: Mapping[str, Any]) -> None:
        self._maybe_fail("set_config")
        for path, value in values.items():
            head, *rest = path.split(".")
            node = self.values.setdefault(head, {})
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[rest[-1]] = value
        self.events.append(f"stack: set_config {', '.join(sorted(values))}")

    def set_secret(self, key: str, value: str) -> None:
        self._maybe_fail("set_secret")
        self.secrets[key] = value
        self.events.append(f"stack: set_secret {key}")

    def remove_config(self, paths: list[str]) -> None:
        raise NotImplementedError

    def up(self, on_output: Any) -> UpSummary:
        raise NotImplementedError

    def outputs(self) -> dict[str, Any]:
        raise NotImplementedError

    def _maybe_fail(self, step: str) -> None:
        if step in self.fail_on:
            raise EcomaError(f"stack {self.name}: pulumi failed: the backend is unreachable")


OLD = "ci-20250301"


@pytest.fixture
def rotation(
    proxmox: SimulatedProxmox, monkeypatch: pytest.MonkeyPatch
) -> tuple[SimulatedStack, str]:
    """The staging stack with its Proxmox token OLD, 80 days old, at the simulated PVE."""
    token = proxmox.add_token(OLD)
    document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    config = document["config"]
    config["ecoma:proxmox"]["endpoint"] = proxmox.url + "/"
    config["ecoma:proxmox"]["insecure"] = True
    config["ecoma:credentials"] = {
        "proxmox_api_token": {
            "rotated_at": (NOW - timedelta(days=80)).isoformat(),
            "max_age": "60d",
            "key_id": f"ci@pve!{OLD}",
        }
    }
    stack = SimulatedStack("staging", config, proxmox.events)
    stack.secrets["ecoma:proxmox_api_token"] = token
    monkeypatch.setattr(command, "open_stack", lambda name: stack)
    monkeypatch.setattr(command, "now", lambda: NOW)
    monkeypatch.setenv("PROXMOX_VE_API_TOKEN", token)
    return stack, token


def rotate(*extra: str) -> int:
    return cli.main(
        ["credentials", "rotate", "--stack", "staging", "--credential", "proxmox_api_token", *extra]
    )


def test_simulated_rotation_stores_the_new_token_and_deletes_the_old_after_verifying(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack, _ = rotation
    new = f"ci@pve!ci-{NOW:%Y%m%d}"

    code = rotate("--yes")

    out, err = capsys.readouterr()
    assert code == 0, err
    assert proxmox.events == [
        f"proxmox: create {new}",
        f"proxmox: grant PVEVMAdmin on / to {new} (by ci@pve!{OLD})",
        f"proxmox: grant PVEDatastoreUser on /storage to {new} (by ci@pve!{OLD})",
        "stack: set_secret ecoma:proxmox_api_token",
        "stack: set_config ecoma:credentials.proxmox_api_token.key_id, "
        "ecoma:credentials.proxmox_api_token.max_age, "
        "ecoma:credentials.proxmox_api_token.rotated_at",
        f"proxmox: delete ci@pve!{OLD}",
    ]
    calls = [(s.method, s.path, s.auth) for s in proxmox.seen]
    verified = calls.index(("GET", "/version", new))
    assert ("GET", "/access/permissions", new) in calls[verified:]
    assert calls.index(("DELETE", f"/access/users/ci@pve/token/{OLD}", f"ci@pve!{OLD}")) > verified
    created = proxmox.tokens[("ci@pve", f"ci-{NOW:%Y%m%d}")]
    assert (created.privsep, created.expire) == (1, int((NOW + timedelta(days=60)).timestamp()))
    assert ("ci@pve", OLD) not in proxmox.tokens
    assert stack.secrets["ecoma:proxmox_api_token"] == f"{new}={created.value}"
    assert stack.values["ecoma:credentials"]["proxmox_api_token"] == {
        "rotated_at": NOW.isoformat().replace("+00:00", "Z"),
        "max_age": "60d",
        "key_id": new,
    }
    assert f"deleted the old token ci@pve!{OLD}" in out
    assert_no_secrets([out, err, caplog.text], proxmox.issued)


def test_simulated_rotation_keeps_the_old_token_when_the_new_one_fails_verification(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack, token = rotation
    proxmox.reject_new_tokens = True
    new = f"ci@pve!ci-{NOW:%Y%m%d}"

    code = rotate("--yes")

    out, err = capsys.readouterr()
    assert code == 1
    assert f"verifying {new} failed: Proxmox API GET /version: HTTP 401" in err
    assert f"the old token ci@pve!{OLD} is untouched: still valid and still in stack staging" in err
    assert f"the new token {new} was deleted again" in err
    assert ("ci@pve", OLD) in proxmox.tokens
    assert proxmox.events[-1] == f"proxmox: delete {new}"
    assert not any(event.startswith("stack:") for event in proxmox.events)
    assert stack.secrets["ecoma:proxmox_api_token"] == token
    assert_no_secrets([out, err, caplog.text], proxmox.issued)


def test_simulated_rotation_keeps_the_old_token_when_storing_fails(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, token = rotation
    stack.fail_on.add("set_secret")

    code = rotate("--yes")

    out, err = capsys.readouterr()
    assert code == 1
    assert "storing ci@pve!ci-" in err
    assert "the backend is unreachable" in err
    assert ("ci@pve", OLD) in proxmox.tokens
    assert list(proxmox.tokens) == [("ci@pve", OLD)]  # the unstored new token was deleted
    assert stack.secrets["ecoma:proxmox_api_token"] == token
    assert_no_secrets([out, err], proxmox.issued)


def test_simulated_rotation_reports_an_old_token_it_could_not_delete(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, _ = rotation

    def refuse_old_delete(method: str, path: str) -> tuple[int, str, Any] | None:
        if method == "DELETE" and path.endswith(f"/token/{OLD}"):
            return 500, "cfs-lock 'file-user_cfg' error: got lock request timeout", {"data": None}
        return None

    proxmox.fail = refuse_old_delete

    code = rotate("--yes")

    _, err = capsys.readouterr()
    assert code == 1
    assert f"deleting the old token ci@pve!{OLD} failed" in err
    assert "got lock request timeout" in err
    assert f"`pveum user token remove ci@pve {OLD}`" in err
    assert stack.secrets["ecoma:proxmox_api_token"].startswith(f"ci@pve!ci-{NOW:%Y%m%d}=")


def test_simulated_rotation_without_yes_and_no_terminal_changes_nothing(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = rotate()

    out, err = capsys.readouterr()
    assert code == 2
    assert "pass --yes" in err
    assert f"1. create ci@pve!ci-{NOW:%Y%m%d}" in out
    assert proxmox.events == []


def test_simulated_rotation_refuses_a_token_without_privilege_separation(
    proxmox: SimulatedProxmox,
    rotation: tuple[SimulatedStack, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxmox.tokens[("ci@pve", OLD)].privsep = 0

    code = rotate("--yes")

    assert code == 1
    assert "has privsep=0" in capsys.readouterr().err
    assert proxmox.events == []


def test_simulated_second_rotation_of_a_day_takes_a_new_token_id(
    staging: StackConfig, proxmox: SimulatedProxmox
) -> None:
    token = proxmox.add_token(f"ci-{NOW:%Y%m%d}")
    config = pointed_at(staging, None, proxmox)
    api = ProxmoxApi.from_environment(config.proxmox, {"PROXMOX_VE_API_TOKEN": token})

    plan = plan_proxmox_rotation("staging", config, api, now=NOW)

    assert plan.old == TokenId("ci@pve", f"ci-{NOW:%Y%m%d}")
    assert plan.new == TokenId("ci@pve", f"ci-{NOW:%Y%m%d}-2")
    assert plan.expires == NOW + timedelta(days=90)
    assert [entry.roleid for entry in plan.acl] == ["PVEVMAdmin", "PVEDatastoreUser"]


def test_simulated_rotation_of_a_token_without_acls_is_refused(
    staging: StackConfig, proxmox: SimulatedProxmox
) -> None:
    token = proxmox.add_token(OLD)
    proxmox.acl.clear()
    config = pointed_at(staging, None, proxmox)
    api = ProxmoxApi.from_environment(config.proxmox, {"PROXMOX_VE_API_TOKEN": token})

    with pytest.raises(RotationError, match="the new token would be allowed nothing"):
        plan_proxmox_rotation("staging", config, api, now=NOW)


@pytest.mark.parametrize(
    ("credential", "says"),
    [
        ("tailscale_oauth_client_secret", "can only be created in the admin console"),
        ("aws_web_identity_token", "review the role's trust policy"),
        ("k3s_agent_token", "rolled out to every node by `configure`"),
    ],
)
def test_rotate_of_a_manual_credential_points_to_the_readme(
    credential: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_stack(name: str) -> StackBackend:
        raise AssertionError("the stack is not opened for a manual rotation")

    monkeypatch.setattr(command, "open_stack", no_stack)

    code = cli.main(["credentials", "rotate", "--stack", "staging", "--credential", credential])

    err = capsys.readouterr().err
    assert code == 1
    assert says in err
    assert 'docs/credentials.md, section "Rotating credentials"' in err


def test_simulated_rotate_without_the_token_in_the_environment_names_the_variable(
    rotation: tuple[SimulatedStack, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("PROXMOX_VE_API_TOKEN")

    assert rotate("--yes") == 1
    assert "PROXMOX_VE_API_TOKEN is not set" in capsys.readouterr().err


def test_a_malformed_token_is_not_echoed() -> None:
    value = "ci@pve-" + "0" * 8  # no !TOKENID=SECRET
    with pytest.raises(EcomaError) as caught:
        parse_api_token(value)
    assert value not in str(caught.value)
    token_id, secret = parse_api_token("ci@pve!ci-1=" + "abc123")
    assert (str(token_id), repr(secret), secret.reveal()) == ("ci@pve!ci-1", "[secret]", "abc123")
