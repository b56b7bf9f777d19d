"""The k3s servers' certificate expiry in `credentials check`: leaf certificates only, the first
to expire decides, the gauge for the alert; the SSH reader's command line and parsing. The
files come from `tests/k3s_certificates.py`; the lab tests read them from a real host."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from k3s_certificates import TLS, server_tls
from stacks import stack_variant

from ecoma_infra.cli import main as cli
from ecoma_infra.cli.commands import credentials as command
from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.credentials import (
    K3S_CERTIFICATE_METRIC,
    CredentialReport,
    expiry_metrics,
    k3s_certificate_statuses,
    leaf_certificates,
    with_rows,
)
from ecoma_infra.ops.telemetry import parse
from ecoma_infra.platforms.ssh_files import K3S_SERVER_CERTIFICATES, SshFiles

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_only_leaf_certificates_count_and_ca_files_are_left_out() -> None:
    files = server_tls(NOW, {"client-admin.crt": 200, "serving-kube-apiserver.crt": 300})

    leaves = leaf_certificates("cpl-1", files)

    assert sorted((leaf.path.rsplit("/", 1)[1], leaf.subject) for leaf in leaves) == [
        ("client-admin.crt", "CN=system:client-admin"),
        ("serving-kube-apiserver.crt", "CN=system:serving-kube-apiserver"),
    ]
    assert min(leaf.not_after for leaf in leaves) == NOW + timedelta(days=200)


def test_a_file_that_is_not_pem_is_named() -> None:
    with pytest.raises(EcomaError, match=f"cpl-1:{TLS}/broken.crt is not a PEM certificate"):
        leaf_certificates("cpl-1", {f"{TLS}/broken.crt": b"not a certificate"})


def rows(**servers: Any) -> dict[str, Any]:
    found = k3s_certificate_statuses(servers, stack="prod", now=NOW, within_days=14)
    return {row.key: row for row in found}


def test_each_server_is_due_when_its_first_leaf_expires() -> None:
    found = rows(
        **{
            "cpl-1": server_tls(NOW, {"client-admin.crt": 200, "client-kubelet.crt": 90}),
            "cpl-2": server_tls(NOW, {"client-admin.crt": 10}),
            "cpl-3": server_tls(NOW, {"client-admin.crt": -1}),
        }
    )
    first = found["k3s_certificates:cpl-1"]
    assert (first.status, first.days_left, first.due) == ("ok", 90, NOW + timedelta(days=90))
    assert "first to expire: client-kubelet.crt (CN=system:client-kubelet)" in first.notes
    assert any("its next restart renews it" in note for note in first.notes)
    assert found["k3s_certificates:cpl-2"].status == "expiring"
    assert "restart k3s" in found["k3s_certificates:cpl-2"].fix
    assert found["k3s_certificates:cpl-3"].status == "expired"
    assert "k3s certificate rotate" in found["k3s_certificates:cpl-3"].fix


def test_far_from_expiry_there_is_no_renewal_note() -> None:
    row = rows(**{"cpl-1": server_tls(NOW, {"client-admin.crt": 300})})["k3s_certificates:cpl-1"]
    assert row.status == "ok"
    assert not any("renews" in note for note in row.notes)


def test_a_server_that_cannot_be_read_is_unknown_with_the_reason() -> None:
    found = rows(
        **{
            "cpl-1": EcomaError("ssh ecoma@10.41.1.11 exited 255: Connection timed out"),
            "cpl-2": {},
        }
    )
    assert found["k3s_certificates:cpl-1"].status == "unknown"
    assert "Connection timed out" in found["k3s_certificates:cpl-1"].fix
    assert found["k3s_certificates:cpl-2"].status == "unknown"
    assert "is it a k3s server?" in found["k3s_certificates:cpl-2"].fix


def test_the_gauge_is_the_first_expiry_per_server() -> None:
    report = CredentialReport("prod", "Pulumi.prod.yaml", NOW, 14)
    found = k3s_certificate_statuses(
        {"cpl-1": server_tls(NOW, {"client-admin.crt": 90})}, stack="prod", now=NOW, within_days=14
    )
    metrics = expiry_metrics(with_rows(report, found))
    assert metrics == [
        (
            K3S_CERTIFICATE_METRIC,
            {"stack": "prod", "node": "cpl-1"},
            (NOW + timedelta(days=90)).timestamp(),
        )
    ]


# --- the SSH reader --------------------------------------------------------------------------


def test_ssh_reads_certificates_only_with_sudo_and_never_prompts(tmp_path: Path) -> None:
    seen: list[list[str]] = []
    config = tmp_path / "ssh_config"

    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append(argv)
        out = b"==> ecoma-file /x/a.crt\nAAA\n\n==> ecoma-file /x/b.crt\nBBB\nCCC\n\n"
        return subprocess.CompletedProcess(argv, 0, out, b"")

    files = SshFiles("ecoma", ssh_config=config, run=run).read(
        "10.41.1.11", K3S_SERVER_CERTIFICATES
    )

    assert files == {"/x/a.crt": b"AAA\n\n", "/x/b.crt": b"BBB\nCCC\n\n"}
    argv = seen[0]
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
    assert argv[5:8] == ["-F", str(config), "ecoma@10.41.1.11"]
    assert argv[8:11] == ["sudo", "-n", "sh"]
    script = argv[-1]
    assert "/var/lib/rancher/k3s/server/tls/*.crt" in script
    assert ".key" not in script


def test_ssh_failure_names_the_host_and_the_fixes() -> None:
    def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(argv, 255, b"", b"ssh: connect: No route to host\n")

    with pytest.raises(EcomaError, match=r"ssh ecoma@10\.41\.1\.11 exited 255: .*No route"):
        SshFiles("ecoma", run=run).read("10.41.1.11", K3S_SERVER_CERTIFICATES)


# --- the command -----------------------------------------------------------------------------


def test_cli_check_with_k3s_certificates_writes_the_gauge_and_exits_1_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reads: list[tuple[str, tuple[str, ...]]] = []

    class Files:
        def read(self, address: str, patterns: tuple[str, ...]) -> dict[str, bytes]:
            reads.append((address, patterns))
            return server_tls(NOW, {"client-admin.crt": 5})

    monkeypatch.setattr(command, "now", lambda: NOW)
    monkeypatch.setattr(command, "open_ssh_files", lambda user, config: Files())
    path = stack_variant(tmp_path, "staging")
    metrics = tmp_path / "textfile" / "ecoma-credentials.prom"
    argv = ["credentials", "check", "--file", str(path), "--within-days", "14"]

    code = cli.main([*argv, "--k3s-certificates", "--metrics-file", str(metrics), "--json"])

    out, err = capsys.readouterr()
    assert code == 1, err
    assert reads == [("10.41.1.11", K3S_SERVER_CERTIFICATES)]
    rows = json.loads(out)["credentials"]
    row = next(c for c in rows if c["credential"].startswith("k3s_certificates:"))
    assert (row["credential"], row["status"], row["days_left"]) == (
        "k3s_certificates:cpl-1",
        "expiring",
        5,
    )
    samples = parse(metrics.read_text())
    key = (K3S_CERTIFICATE_METRIC, (("node", "cpl-1"), ("stack", "staging")))
    assert samples[key] == (NOW + timedelta(days=5)).timestamp()


def test_cli_check_without_the_flag_reads_no_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(user: str, config: Path | None) -> Any:
        raise AssertionError("no SSH without --k3s-certificates")

    monkeypatch.setattr(command, "open_ssh_files", refuse)
    path = stack_variant(tmp_path, "staging")
    cli.main(["credentials", "check", "--file", str(path), "--within-days", "14"])
    assert "k3s_certificates" not in capsys.readouterr().out


def test_cli_check_with_a_missing_ssh_config_is_bad_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack_variant(tmp_path, "staging")
    argv = ["credentials", "check", "--file", str(path), "--within-days", "14"]
    missing = tmp_path / "nope"
    assert cli.main([*argv, "--k3s-certificates", "--ssh-config", str(missing)]) == 2
    assert f"--ssh-config {missing}: no such file" in capsys.readouterr().err
