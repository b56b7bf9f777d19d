"""The roles' day-2 decisions on the lab's real Debian hosts, with a stand-in k3s (simulated: k3s
cannot be downloaded here, so every test name says so).

`k3s_standin.py` is installed as /usr/local/bin/k3s on every host: it records how it was called
and answers the few queries the roles make; `k3s server` runs k3s's unauthenticated supervisor
endpoints (/ping, /cacerts over TLS on 6443) on a host, which is what "a server answers" means
to the roles. Lab: three servers and two agents of a staging-like stack with an S3 target for
the etcd snapshots. What a lab cannot do stays switched off (`labstack.LAB_ROLE_VARS`); the
upgrade tests turn the binary installation on (air-gapped: the new stand-in copied from here,
checked against its sha256).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import ipaddress
import json
import secrets
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from k3s_certificates import private_key_pem, server_tls
from lab_fixtures import LabFactory

from ecoma_infra.cli.main import main
from ecoma_infra.configure.result import RunResult
from ecoma_infra.configure.run import run_playbook
from ecoma_infra.lab import stack as labstack
from ecoma_infra.lab.state import LabState
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import StackConfig, split_namespace

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "ansible"
STANDIN = Path(__file__).with_name("k3s_standin.py")
OLD, NEW = "v1.32.5+k3s1", "v1.33.1+k3s1"
SERVERS = {"cpl-1": "10.41.1.11", "cpl-2": "10.41.1.12", "cpl-3": "10.41.1.13"}
AGENTS = {"wkr-1": "10.41.1.41", "wkr-2": "10.41.1.42"}
S3 = {"endpoint": "minio.ecoma.internal:9000", "bucket": "ecoma-lab-etcd", "folder": "lab"}
pytestmark = pytest.mark.lab


def day2_config() -> StackConfig:
    document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
    config = document["config"]
    template = config["ecoma:nodes"][0]
    nodes = []
    for index, (name, ip) in enumerate({**SERVERS, **AGENTS}.items()):
        node = copy.deepcopy(template)
        node.update(name=name, ip=ip, vm_id=4100 + index, role=name[:3])
        node["disks"] = [{"tier": "hot", "size_gb": 32, "os": True}]
        nodes.append(node)
    config["ecoma:nodes"] = nodes
    config["ecoma:k3s"]["etcd_snapshots"] = {"schedule_cron": "0 */6 * * *", "retention": 28}
    config["ecoma:k3s"]["etcd_snapshots"]["s3"] = S3
    values, _ = split_namespace(config)
    return parse_stack_config(values, "day2 lab stack")


def supervisor_tls() -> tuple[bytes, bytes, bytes]:
    """(CA bundle, certificate, key) of the stand-in supervisor, valid for the servers' IPs."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s-server-ca@1700000000")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    addresses = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVERS.values()]
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k3s")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(addresses), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca.public_bytes(pem), leaf.public_bytes(pem), key_pem


def standin(version: str) -> bytes:
    return STANDIN.read_text().replace("@VERSION@", version).encode()


@dataclass
class Day2Lab:
    state: LabState
    inventory: dict[str, Any]
    inventory_file: Path
    secrets: dict[str, str]
    cacerts: bytes
    workdir: Path

    def on(self, host: str, command: str, *, stdin: bytes | None = None) -> str:
        result = subprocess.run(
            self.state.ssh_argv(host, "sudo", "sh", "-c", shlex.quote(command)),
            input=stdin,
            capture_output=True,
            timeout=60,
            check=True,
        )
        return result.stdout.decode()

    def put(self, host: str, path: str, data: bytes, mode: str = "0644") -> None:
        folder = str(Path(path).parent)
        self.on(host, f"mkdir -p {folder} && cat > {path} && chmod {mode} {path}", stdin=data)

    def play(
        self,
        playbook: str,
        *,
        limit: str | None = None,
        tags: list[str] | None = None,
        extravars: dict[str, Any] | None = None,
        secrets: dict[str, str] | None = None,
    ) -> tuple[RunResult, str]:
        out = io.StringIO()
        result = run_playbook(
            self.inventory,
            ANSIBLE / playbook,
            secrets=self.secrets if secrets is None else secrets,
            limit=limit,
            tags=tags,
            extravars=extravars,
            # Ansible's own output: what the roles report (debug messages) is only there.
            output="progress",
            verbosity=1,
            stream=out,
        )
        return result, out.getvalue()

    def config(self, host: str) -> dict[str, Any]:
        return yaml.safe_load(self.on(host, "cat /etc/rancher/k3s/config.yaml"))

    def install(self, version: str, hosts: list[str] | None = None) -> None:
        for host in hosts or [*SERVERS, *AGENTS]:
            self.put(host, "/usr/local/bin/k3s", standin(version), "0755")
            self.on(host, "rm -f /var/lib/k3s-standin/journal.jsonl /etc/k3s-standin/not-ready")

    def serve(self, host: str) -> None:
        """Run the stand-in supervisor on `host` and wait until it answers."""
        self.on(
            host,
            "setsid nohup /usr/local/bin/k3s server --config /etc/rancher/k3s/config.yaml "
            ">/var/log/k3s-standin.log 2>&1 </dev/null &",
        )
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection((SERVERS[host], 6443), 1):
                return
            if time.monotonic() > deadline:
                raise AssertionError(self.on(host, "cat /var/log/k3s-standin.log"))
            time.sleep(0.1)

    def stop(self, host: str) -> None:
        """Stop the stand-in supervisor this test started on `host` (by its pid file)."""
        self.on(
            host,
            "if [ -f /run/k3s-standin.pid ]; then kill $(cat /run/k3s-standin.pid) || true; "
            "rm -f /run/k3s-standin.pid; fi",
        )

    def journal(self, host: str) -> list[dict[str, Any]]:
        text = self.on(host, "cat /var/lib/k3s-standin/journal.jsonl 2>/dev/null || true")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def version(self, host: str) -> str:
        return self.on(host, "/usr/local/bin/k3s --version").split()[2]


@pytest.fixture(scope="class")
def lab(lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day2Lab]:
    config = day2_config()
    workdir = tmp_path_factory.mktemp("day2-lab")
    factory = LabFactory(lab_cache_dir, workdir)
    try:
        state = factory(labstack.lab_spec(config))
        inventory = labstack.lab_inventory("staging", config, state)
        inventory_file = labstack.write_inventory(workdir, inventory)
        cacerts, certificate, key = supervisor_tls()
        ca_hash = hashlib.sha256(cacerts).hexdigest()
        lab = Day2Lab(
            state,
            inventory,
            inventory_file,
            {
                # The secure form: the hash of the CA the servers serve.
                "ECOMA_K3S_TOKEN": f"K10{ca_hash}::server:{secrets.token_hex(16)}",
                "ECOMA_K3S_AGENT_TOKEN": secrets.token_hex(16),
                "ECOMA_TAILSCALE_AUTH_KEYS": "{}",
                "ECOMA_ETCD_S3_ACCESS_KEY_ID": "AKIA" + secrets.token_hex(8).upper(),
                "ECOMA_ETCD_S3_SECRET_ACCESS_KEY": secrets.token_urlsafe(30).replace("-", "+"),
            },
            cacerts,
            workdir,
        )
        for host in [*SERVERS, *AGENTS]:
            lab.put(host, "/etc/k3s-standin/cacerts.pem", cacerts)
            lab.put(host, "/etc/k3s-standin/tls.crt", certificate)
            lab.put(host, "/etc/k3s-standin/tls.key", key, "0600")
        lab.install(OLD)
        yield lab
    finally:
        factory.down_all()


def _only(result: RunResult, text: str) -> str:
    return text if result.success else f"failures: {result.failures}\n{text}"


class TestSimulatedDay2Roles:
    """One lab for all: each test sets up the servers that answer, and stops what it started."""

    # --- create or join ----------------------------------------------------------------------

    def test_simulated_no_server_answers_so_the_first_server_creates_the_cluster(
        self, lab: Day2Lab
    ) -> None:
        lab.on("cpl-1", "rm -f /etc/rancher/k3s/config.yaml")

        result, text = lab.play("playbook.yaml", limit="cpl-1", tags=["k3s"])

        assert result.success, _only(result, text)
        config = lab.config("cpl-1")
        assert config["cluster-init"] is True
        assert "server" not in config
        assert "creates the cluster (cluster-init): no other server answered" in text

    def test_simulated_one_server_answers_so_a_rebuilt_first_server_joins_it(
        self, lab: Day2Lab
    ) -> None:
        lab.on("cpl-2", "rm -f /var/lib/k3s-standin/journal.jsonl")
        lab.serve("cpl-2")
        try:
            result, text = lab.play("playbook.yaml", limit="cpl-1", tags=["k3s"])
        finally:
            lab.stop("cpl-2")

        assert result.success, _only(result, text)
        config = lab.config("cpl-1")
        assert "cluster-init" not in config
        assert config["server"] == "https://10.41.1.254:6443"
        assert "joins through https://10.41.1.254:6443 (10.41.1.12 answered)" in text
        asked = [(e["request"], e["peer"]) for e in lab.journal("cpl-2") if "request" in e]
        # /ping, then /cacerts to check the CA against the token's hash, from cpl-1.
        assert asked == [("/ping", "10.41.1.11"), ("/cacerts", "10.41.1.11")]

    def test_simulated_a_server_with_another_clusters_ca_is_never_joined(
        self, lab: Day2Lab
    ) -> None:
        before = lab.on("cpl-1", "cat /etc/rancher/k3s/config.yaml")
        other = dict(lab.secrets)
        other["ECOMA_K3S_TOKEN"] = f"K10{hashlib.sha256(b'another CA').hexdigest()}::server:x1"
        lab.serve("cpl-3")
        try:
            result, _ = lab.play("playbook.yaml", limit="cpl-1", tags=["k3s"], secrets=other)
        finally:
            lab.stop("cpl-3")

        assert not result.success
        assert result.failed_hosts == ["cpl-1"]
        message = " ".join(f.msg for f in result.failures)
        assert "10.41.1.13:6443 answers /ping, but its CA" in message
        assert "is not the one the k3s token names" in message
        assert lab.on("cpl-1", "cat /etc/rancher/k3s/config.yaml") == before

    def test_simulated_no_server_answers_so_a_later_server_stops_instead_of_a_new_cluster(
        self, lab: Day2Lab
    ) -> None:
        lab.on("cpl-3", "rm -f /etc/rancher/k3s/config.yaml")

        result, _ = lab.play("playbook.yaml", limit="cpl-3", tags=["k3s"])

        assert result.failed_hosts == ["cpl-3"]
        message = " ".join(f.msg for f in result.failures)
        assert (
            "no server of the stack answers on 6443 (10.41.1.11, 10.41.1.12, 10.41.1.254) and "
            "cpl-3 is not the first server (cpl-1)"
        ) in message
        assert "docs/day2.md" in message
        assert lab.on("cpl-3", "ls /etc/rancher/k3s/config.yaml 2>/dev/null || true") == ""

    def test_simulated_an_existing_etcd_member_keeps_the_mode_it_has(self, lab: Day2Lab) -> None:
        lab.on("cpl-1", "rm -f /etc/rancher/k3s/config.yaml")
        result, text = lab.play("playbook.yaml", limit="cpl-1", tags=["k3s"])
        assert result.success, _only(result, text)
        lab.on("cpl-1", "mkdir -p /var/lib/rancher/k3s/server/db/etcd/member/wal")
        lab.on("cpl-2", "rm -f /var/lib/k3s-standin/journal.jsonl")
        lab.serve("cpl-2")
        try:
            result, text = lab.play("playbook.yaml", limit="cpl-1", tags=["k3s"])
        finally:
            lab.stop("cpl-2")
            lab.on("cpl-1", "rm -rf /var/lib/rancher/k3s/server/db")

        assert result.success, _only(result, text)
        assert result.hosts["cpl-1"].changed == 0
        assert lab.config("cpl-1")["cluster-init"] is True
        assert "is an existing etcd member: keeps its config" in text
        # It asked nobody: k3s decides by itself once its member exists.
        assert [e for e in lab.journal("cpl-2") if "request" in e] == []

    # --- etcd snapshots ----------------------------------------------------------------------

    def test_simulated_servers_render_the_snapshot_settings_and_a_root_only_credentials_file(
        self, lab: Day2Lab
    ) -> None:
        lab.serve("cpl-1")
        try:
            for host in ("cpl-2", "wkr-1"):
                result, text = lab.play("playbook.yaml", limit=host, tags=["k3s"])
                assert result.success, _only(result, text)
        finally:
            lab.stop("cpl-1")

        config = lab.config("cpl-2")
        assert config["etcd-snapshot-schedule-cron"] == "0 */6 * * *"
        assert config["etcd-snapshot-retention"] == 28
        assert config["etcd-s3"] is True
        assert config["etcd-s3-endpoint"] == "minio.ecoma.internal:9000"
        assert config["etcd-s3-bucket"] == "ecoma-lab-etcd"
        assert config["etcd-s3-folder"] == "lab"
        assert config["etcd-s3-region"] == "us-east-1"
        raw = lab.on("cpl-2", "cat /etc/rancher/k3s/config.yaml")
        assert lab.secrets["ECOMA_ETCD_S3_SECRET_ACCESS_KEY"] not in raw
        assert lab.on("cpl-2", "stat -c '%a %U' /etc/rancher/k3s/etcd-s3.env").split() == [
            "600",
            "root",
        ]
        env = lab.on("cpl-2", "cat /etc/rancher/k3s/etcd-s3.env")
        assert f"AWS_ACCESS_KEY_ID={lab.secrets['ECOMA_ETCD_S3_ACCESS_KEY_ID']}" in env
        assert f"AWS_SECRET_ACCESS_KEY={lab.secrets['ECOMA_ETCD_S3_SECRET_ACCESS_KEY']}" in env
        unit = lab.on("cpl-2", "cat /etc/systemd/system/k3s.service").splitlines()
        assert "EnvironmentFile=-/etc/rancher/k3s/etcd-s3.env" in unit
        assert "PartOf=tailscaled.service" in unit
        assert lab.on("wkr-1", "ls /etc/rancher/k3s/etcd-s3.env 2>/dev/null || true") == ""
        assert "etcd-s3" not in lab.config("wkr-1")
        assert lab.secrets["ECOMA_ETCD_S3_SECRET_ACCESS_KEY"] not in text

    def test_simulated_snapshot_runs_on_the_named_server_with_the_s3_credentials(
        self, lab: Day2Lab, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        lab.serve("cpl-1")
        try:  # cpl-2 as configure leaves it: its environment file holds the S3 credentials
            result, text = lab.play("playbook.yaml", limit="cpl-2", tags=["k3s"])
            assert result.success, _only(result, text)
        finally:
            lab.stop("cpl-1")
        for name, value in lab.secrets.items():
            monkeypatch.setenv(name, value)
        lab.on("cpl-2", "rm -f /var/lib/k3s-standin/journal.jsonl")
        out = io.StringIO()
        argv = ["snapshot", "--inventory", str(lab.inventory_file), "--node", "cpl-2"]
        with contextlib.redirect_stdout(out):
            code = main([*argv, "--name", "before-upgrade"])

        assert code == 0, out.getvalue()
        saves = [e for e in lab.journal("cpl-2") if e["argv"][:2] == ["etcd-snapshot", "save"]]
        assert [e["argv"] for e in saves] == [["etcd-snapshot", "save", "--name", "before-upgrade"]]
        digest = hashlib.sha256(lab.secrets["ECOMA_ETCD_S3_SECRET_ACCESS_KEY"].encode()).hexdigest()
        assert saves[0]["aws_secret_access_key"] == digest
        assert "Snapshot before-upgrade-cpl-2-" in out.getvalue()
        assert "s3://ecoma-lab-etcd/lab" in out.getvalue()
        for host in ("cpl-1", "cpl-3"):
            assert not [e for e in lab.journal(host) if e["argv"][:1] == ["etcd-snapshot"]]

    # --- upgrade -----------------------------------------------------------------------------

    def _upgrade(self, lab: Day2Lab, version: str) -> tuple[RunResult, str]:
        new = lab.workdir / f"k3s-{version}"
        new.write_bytes(standin(version))
        extravars = {
            "k3s_version": version,
            "k3s_install_binary": True,
            "k3s_airgap_binary": str(new),
            "k3s_binary_sha256": hashlib.sha256(new.read_bytes()).hexdigest(),
            "k3s_ready_timeout": 5,
            "k3s_upgrade_batch": 2,
        }
        for host in SERVERS:
            lab.serve(host)
        try:
            return lab.play("upgrade.yaml", extravars=extravars)
        finally:
            for host in SERVERS:
                lab.stop(host)

    @staticmethod
    def _first(entries: list[dict[str, Any]], version: str) -> int:
        return min(e["ns"] for e in entries if e["version"] == version)

    def test_simulated_upgrade_goes_servers_one_at_a_time_then_agents_in_batches(
        self, lab: Day2Lab
    ) -> None:
        lab.install(OLD)

        result, text = self._upgrade(lab, NEW)

        assert result.success, _only(result, text)
        journals = {host: lab.journal(host) for host in [*SERVERS, *AGENTS]}
        assert {host: lab.version(host) for host in journals} == dict.fromkeys(journals, NEW)
        upgraded = {host: self._first(entries, NEW) for host, entries in journals.items()}
        assert upgraded["cpl-1"] < upgraded["cpl-2"] < upgraded["cpl-3"]
        assert upgraded["cpl-3"] < min(upgraded["wkr-1"], upgraded["wkr-2"])
        # kubectl ran on a server that answered: cordon each node before its new binary, drain
        # agents (not servers) before theirs, and the two agents as one batch.
        calls = [
            (e["ns"], e["argv"][1:3])
            for entries in journals.values()
            for e in entries
            if e["argv"][:1] == ["kubectl"] and e["argv"][1] in ("cordon", "drain", "uncordon")
        ]
        when = {tuple(argv): ns for ns, argv in calls}
        for host in journals:
            assert when[("cordon", host)] < upgraded[host] < when[("uncordon", host)], host
        assert ("drain", "cpl-1") not in when
        assert max(when[("drain", "wkr-1")], when[("drain", "wkr-2")]) < min(
            upgraded["wkr-1"], upgraded["wkr-2"]
        )
        etcd = [e for e in journals["cpl-2"] if e["argv"][1:3] == ["get", "--raw"]]
        assert etcd
        assert etcd[0]["argv"][3] == "/readyz/etcd"
        assert "skipped in lab: k3s_start_service=false (would restart k3s)" in text

    def test_simulated_upgrade_stops_at_the_first_failure_and_leaves_the_rest_old(
        self, lab: Day2Lab
    ) -> None:
        lab.install(OLD)
        lab.on("cpl-2", "touch /etc/k3s-standin/not-ready")
        try:
            result, _ = self._upgrade(lab, NEW)
        finally:
            lab.on("cpl-2", "rm -f /etc/k3s-standin/not-ready")

        assert not result.success
        assert result.failed_hosts == ["cpl-2"]
        versions = {host: lab.version(host) for host in [*SERVERS, *AGENTS]}
        assert versions == {"cpl-1": NEW, "cpl-2": NEW, "cpl-3": OLD, "wkr-1": OLD, "wkr-2": OLD}
        for host in ("cpl-3", "wkr-1", "wkr-2"):
            kubectl = [
                e["argv"][1:3]
                for entries in (lab.journal(h) for h in SERVERS)
                for e in entries
                if e["argv"][:1] == ["kubectl"] and host in e["argv"]
            ]
            assert kubectl == [], host  # never cordoned, drained or touched

    def test_simulated_upgrade_refuses_a_skipped_minor_before_touching_any_node(
        self, lab: Day2Lab
    ) -> None:
        lab.install(OLD)

        result, _ = self._upgrade(lab, "v1.34.0+k3s1")

        assert sorted(result.failed_hosts) == sorted([*SERVERS, *AGENTS])
        message = " ".join(f.msg for f in result.failures)
        assert "skips a minor version: upgrade to v1.33.x first" in message
        assert {host: lab.version(host) for host in [*SERVERS, *AGENTS]} == dict.fromkeys(
            [*SERVERS, *AGENTS], OLD
        )
        for host in SERVERS:
            assert not [e for e in lab.journal(host) if e["argv"][:1] == ["kubectl"]]

    def test_simulated_configure_never_changes_the_version_of_a_running_node(
        self, lab: Day2Lab
    ) -> None:
        lab.install(OLD, ["wkr-2"])
        new = lab.workdir / "k3s-configure-new"
        new.write_bytes(standin(NEW))
        extravars = {
            "k3s_version": NEW,
            "k3s_install_binary": True,
            "k3s_airgap_binary": str(new),
            "k3s_binary_sha256": hashlib.sha256(new.read_bytes()).hexdigest(),
        }

        result, _ = lab.play("playbook.yaml", limit="wkr-2", tags=["k3s"], extravars=extravars)

        assert result.failed_hosts == ["wkr-2"]
        message = " ".join(f.msg for f in result.failures)
        assert f"runs k3s {OLD}, the inventory wants {NEW}" in message
        assert "ecoma-infra upgrade --stack <stack> --k3s-version" in message
        assert lab.version("wkr-2") == OLD

    # --- certificates ------------------------------------------------------------------------

    def test_simulated_credentials_check_reads_a_servers_certificates_over_real_ssh(
        self, lab: Day2Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        now = datetime.now(UTC)
        files = server_tls(now, {"client-admin.crt": 200, "client-kubelet.crt": 10})
        for path, data in files.items():
            lab.put("cpl-1", path, data, "0644")
        lab.put(
            "cpl-1", "/var/lib/rancher/k3s/server/tls/client-admin.key", private_key_pem(), "0600"
        )
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text(
            "Host 10.41.1.*\n"
            f"  IdentityFile {lab.state.private_key}\n"
            "  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n"
            "  LogLevel ERROR\n"
        )
        stack = tmp_path / "Pulumi.lab.yaml"
        document = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())
        stack.write_text(yaml.safe_dump(document))
        metrics = tmp_path / "credentials.prom"
        argv = ["credentials", "check", "--file", str(stack), "--within-days", "14", "--json"]
        argv += ["--k3s-certificates", "--ssh-config", str(ssh_config)]

        code = main([*argv, "--metrics-file", str(metrics)])

        out = capsys.readouterr().out
        row = next(
            c for c in json.loads(out)["credentials"] if c["credential"] == "k3s_certificates:cpl-1"
        )
        assert code == 1
        assert (row["status"], row["days_left"]) == ("expiring", 9)
        assert "first to expire: client-kubelet.crt (CN=system:client-kubelet)" in row["notes"]
        assert 'ecoma_k3s_certificate_expiry_timestamp_seconds{node="cpl-1",stack="lab"}' in (
            metrics.read_text()
        )
