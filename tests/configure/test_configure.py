"""`ecoma-infra configure` against real ansible-runner runs of tiny playbooks on localhost."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecoma_infra.cli import main as cli
from ecoma_infra.configure import inputs
from ecoma_infra.configure.redact import Redactor
from ecoma_infra.configure.result import RunResult
from ecoma_infra.configure.run import run_playbook
from ecoma_infra.errors import EcomaError, UsageError

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]


# Ansible's "remote" temp dir of local hosts; kept per test so that a killed run (the interrupt
# test) leaves its module files in the test's tmp_path, not in ~/.ansible/tmp.
REMOTE_TMP = ""


@pytest.fixture(autouse=True)
def _remote_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "REMOTE_TMP", str(tmp_path / "remote-tmp"))


def local_host() -> dict[str, Any]:
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_remote_tmp": REMOTE_TMP,
    }


def inventory(**hosts: dict[str, Any]) -> dict[str, Any]:
    """The contract's shape: hosts in a role group, the provider group listing them."""
    return {
        "all": {
            "vars": {"ecoma_stack": "test"},
            "children": {
                "ecoma_cpl": {"hosts": hosts},
                "ecoma_proxmox": {"hosts": {name: {} for name in hosts}},
            },
        }
    }


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where run_playbook's private data dir is created: empty again after every run."""
    where = tmp_path / "private"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    return where


def run(playbook: str, inv: dict[str, Any], **kwargs: Any) -> tuple[RunResult, str]:
    stream = io.StringIO()
    kwargs.setdefault("output", "progress")
    result = run_playbook(inv, FIXTURES / playbook, stream=stream, **kwargs)
    return result, stream.getvalue()


def files_changed_since(start: float, roots: list[Path]) -> Iterator[Path]:
    """Regular files under `roots` modified since `start`, not crossing mount points."""
    stack = [root for root in roots if root.is_dir()]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if not os.path.ismount(entry.path):
                    stack.append(Path(entry.path))
            elif (
                stat.S_ISREG(info.st_mode)
                and max(info.st_mtime, info.st_ctime) >= start
                and info.st_size < 50_000_000
            ):
                yield Path(entry.path)


def files_containing(secret: str, start: float, roots: list[Path], ignore: set[Path]) -> list[Path]:
    found = []
    needle = secret.encode()
    for path in files_changed_since(start, roots):
        if path in ignore:
            continue
        try:
            if needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


# --- outcomes ---------------------------------------------------------------------------------


def test_successful_run_counts_ok_changed_and_skipped_per_host(private_tmp: Path) -> None:
    result, out = run("site.yaml", inventory(**{"cpl-1": local_host(), "cpl-2": local_host()}))

    assert result.success
    assert result.rc == 0
    assert result.status == "successful"
    assert set(result.hosts) == {"cpl-1", "cpl-2"}
    for counts in result.hosts.values():
        assert (counts.ok, counts.changed, counts.skipped) == (2, 1, 1)
        assert (counts.failed, counts.unreachable) == (0, 0)
    assert "changed      cpl-1  Report a change" in out
    assert "configure succeeded" in out
    assert list(private_tmp.iterdir()) == []


def test_failing_task_fails_the_run_and_is_in_the_summary(private_tmp: Path) -> None:
    result, out = run("fail.yaml", inventory(**{"cpl-1": local_host()}))

    assert not result.success
    assert result.failed_hosts == ["cpl-1"]
    assert result.hosts["cpl-1"].failed == 1
    failure = result.failures[0]
    assert (failure.host, failure.task) == ("cpl-1", "Refuse the hot disk")
    assert "unexpected signature" in failure.msg
    summary = out[out.index("SUMMARY") :]
    assert "cpl-1 | Refuse the hot disk | failed: " in summary
    assert "virtio-hot holds an unexpected signature" in summary
    assert "configure FAILED" in summary
    assert list(private_tmp.iterdir()) == [], "private dir must go also when the play fails"


def test_unreachable_host_fails_the_run_and_is_reported_unreachable(private_tmp: Path) -> None:
    ghost = {
        "ansible_host": "127.0.0.254",
        "ansible_port": 1,  # nothing listens: the connection is refused at once
        "ansible_connection": "ssh",
        "ansible_user": "ecoma",
        "ansible_timeout": 3,
        "ansible_ssh_common_args": "-o BatchMode=yes -o ControlMaster=no",
    }
    result, out = run("site.yaml", inventory(**{"cpl-1": local_host(), "wkr-ghost": ghost}))

    assert not result.success
    assert result.unreachable_hosts == ["wkr-ghost"]
    assert result.hosts["cpl-1"].ok == 2
    assert [f.host for f in result.failures if f.unreachable] == ["wkr-ghost"]
    assert "wkr-ghost | Answer ping | unreachable: " in out
    assert "UNREACHABLE  wkr-ghost" in out


def test_limit_restricts_the_hosts(private_tmp: Path) -> None:
    result, _ = run(
        "site.yaml", inventory(**{"cpl-1": local_host(), "cpl-2": local_host()}), limit="cpl-2"
    )

    assert result.success
    assert set(result.hosts) == {"cpl-2"}


def test_limit_that_matches_nothing_is_a_failure(private_tmp: Path) -> None:
    result, out = run("site.yaml", inventory(**{"cpl-1": local_host()}), limit="nope")

    assert not result.success
    assert result.hosts == {}
    assert "configure FAILED" in out
    assert any("no host" in message for message in result.messages)


def test_check_mode_reaches_ansible_and_changes_nothing(private_tmp: Path, tmp_path: Path) -> None:
    result, _ = run(
        "check.yaml",
        inventory(**{"cpl-1": local_host()}),
        check=True,
        extravars={"out_dir": str(tmp_path)},
    )

    assert result.success
    assert (tmp_path / "cpl-1.check_mode").read_text() == "True"
    assert not (tmp_path / "cpl-1.created").exists()
    assert result.hosts["cpl-1"].changed == 2  # the forced write, and the one check mode skipped


def test_without_check_mode_the_file_is_created(private_tmp: Path, tmp_path: Path) -> None:
    result, _ = run(
        "check.yaml", inventory(**{"cpl-1": local_host()}), extravars={"out_dir": str(tmp_path)}
    )

    assert result.success
    assert (tmp_path / "cpl-1.check_mode").read_text() == "False"
    assert (tmp_path / "cpl-1.created").read_text() == "created"


def test_json_output_is_one_object_per_result_then_a_summary(private_tmp: Path) -> None:
    result, out = run("fail.yaml", inventory(**{"cpl-1": local_host()}), output="json")

    records = [json.loads(line) for line in out.splitlines()]
    results = [r for r in records if r["type"] == "result"]
    assert [(r["host"], r["task"], r["status"]) for r in results] == [
        ("cpl-1", "Answer ping", "ok"),
        ("cpl-1", "Refuse the hot disk", "failed"),
    ]
    summary = records[-1]
    assert summary["type"] == "summary"
    assert summary["success"] is False
    assert summary["hosts"]["cpl-1"]["failed"] == 1
    assert summary["failures"][0]["task"] == "Refuse the hot disk"
    assert not result.success


def test_quiet_output_prints_nothing(private_tmp: Path) -> None:
    result, out = run("site.yaml", inventory(**{"cpl-1": local_host()}), output="quiet")

    assert result.success
    assert out == ""


def test_missing_playbook_is_a_usage_error(private_tmp: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"nope\.yaml"):
        run_playbook(inventory(), tmp_path / "nope.yaml", output="quiet")


# --- secrets ----------------------------------------------------------------------------------


def test_secret_reaches_ansible_and_nothing_else(
    private_tmp: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = f"K10{secrets.token_hex(16)}::server:{secrets.token_hex(16)}"
    secret_out = tmp_path / "out" / "token"
    secret_out.parent.mkdir()
    scan_out = tmp_path / "out" / "scan.json"
    system_tmps = {Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm")}
    system_tmps.add(Path(os.environ.get("TMPDIR", "/tmp")))
    start = time.time() - 1

    outputs = {}
    for mode in ("progress", "json"):
        result, outputs[mode] = run(
            "secret.yaml",
            inventory(**{"cpl-1": local_host()}),
            secrets={"ECOMA_K3S_TOKEN": secret},
            extravars={"secret_out": str(secret_out), "scan_out": str(scan_out)},
            output=mode,
            verbosity=3 if mode == "progress" else 0,  # Ansible's own output, as loud as it gets
        )
        assert result.success, outputs[mode]

    assert secret_out.read_text() == secret, "the secret must arrive"
    scan = json.loads(scan_out.read_text())
    assert scan["files_with_secret"] == [], "no file in the live private dir holds the secret"
    private_dir = Path(scan["private_dir"])
    assert private_dir.parent == private_tmp
    assert not private_dir.exists()
    assert list(private_tmp.iterdir()) == []
    leaked = files_containing(
        secret,
        start,
        [*sorted(system_tmps), REPO, Path.home() / ".ansible"],
        ignore={secret_out},
    )
    assert leaked == []
    captured = capfd.readouterr()
    for text in (*outputs.values(), captured.out, captured.err):
        assert secret not in text
    assert "Write the token where the test can see it" in outputs["progress"]


def test_secrets_in_failure_messages_are_redacted(private_tmp: Path) -> None:
    token = secrets.token_urlsafe(24)
    key = f"tskey-auth-{secrets.token_hex(12)}"
    keys = json.dumps({"cpl-1": key, "cpl-2": f"tskey-auth-{secrets.token_hex(12)}"})
    env = {"ECOMA_K3S_TOKEN": token, "ECOMA_TAILSCALE_AUTH_KEYS": keys}

    for mode in ("progress", "json"):
        result, out = run(
            "leak.yaml",
            inventory(**{"cpl-1": local_host()}),
            secrets=env,
            output=mode,
            verbosity=1 if mode == "progress" else 0,
        )
        assert not result.success
        assert token not in out
        assert key not in out
        assert "token=<redacted>" in out
        assert "key=<redacted>" in out
        assert result.failures[0].msg.startswith("token=<redacted> key=<redacted>")


def test_only_allow_listed_variables_reach_ansible(
    private_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOMA_TEST_CANARY", "from-the-caller")
    monkeypatch.setenv("ANSIBLE_TEST_CANARY", "from-the-caller")
    monkeypatch.setenv("ECOMA_K3S_AGENT_TOKEN", "caller-has-it-but-did-not-pass-it")
    names = [
        "ECOMA_TEST_CANARY",
        "ANSIBLE_TEST_CANARY",
        "ECOMA_K3S_TOKEN",
        "ECOMA_K3S_AGENT_TOKEN",
        "PATH",
        "HOME",
        "ANSIBLE_HOST_KEY_CHECKING",
        "ANSIBLE_CACHE_PLUGIN",
    ]

    result, _ = run(
        "env.yaml",
        inventory(**{"cpl-1": local_host()}),
        secrets={"ECOMA_K3S_TOKEN": "passed-token"},
        extravars={"out_dir": str(tmp_path), "env_names": names},
    )

    assert result.success
    seen = json.loads((tmp_path / "cpl-1.env.json").read_text())
    assert seen["ECOMA_TEST_CANARY"] == ""
    assert seen["ANSIBLE_TEST_CANARY"] == ""
    assert seen["ECOMA_K3S_AGENT_TOKEN"] == "", "secrets are only those passed to run_playbook"
    assert seen["ECOMA_K3S_TOKEN"] == "passed-token"
    assert seen["HOME"] == os.environ["HOME"]
    assert seen["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert seen["ANSIBLE_HOST_KEY_CHECKING"] == "True", "ansible-runner must not turn it off"
    assert seen["ANSIBLE_CACHE_PLUGIN"] == "", "the playbook's ansible.cfg picks the fact cache"


def test_secret_in_inventory_is_refused_before_anything_runs(private_tmp: Path) -> None:
    token = secrets.token_hex(16)
    leaky = inventory(**{"cpl-1": {**local_host(), "k3s_token": token}})

    with pytest.raises(EcomaError, match="inventory contains a secret") as raised:
        run_playbook(leaky, FIXTURES / "site.yaml", secrets={"ECOMA_K3S_TOKEN": token})

    assert token not in str(raised.value)
    assert list(private_tmp.iterdir()) == []


def test_redactor_masks_values_json_leaves_and_token_shapes() -> None:
    redact = Redactor(["s3cr3t-value", json.dumps({"n1": "leafkey-123"}), "ab"])

    assert redact("x s3cr3t-value y") == "x <redacted> y"
    assert redact("key leafkey-123") == "key <redacted>"
    assert redact("ab stays: too short to be a secret") == "ab stays: too short to be a secret"
    assert redact("K10" + "a" * 40 + "::server:zz") == "<redacted>"
    assert redact("tskey-" + "auth-kAbC123-XyZ") == "<redacted>"  # built: no key-like literal


# --- interruption -----------------------------------------------------------------------------


def test_interrupt_cancels_ansible_and_removes_the_private_dir(private_tmp: Path) -> None:
    before = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run("slow.yaml", inventory(**{"cpl-1": local_host()}))
    finally:
        timer.cancel()

    assert time.monotonic() - started < 15, "the 30 s task must have been killed"
    assert list(private_tmp.iterdir()) == []
    assert signal.getsignal(signal.SIGINT) is before


# --- inputs -----------------------------------------------------------------------------------


def test_inventory_documents_of_every_accepted_shape() -> None:
    inv = inventory(**{"cpl-1": {}})

    assert inputs.inventory_from_document(inv, "f") == inv
    assert inputs.inventory_from_document({"outputs": {"ansible_inventory": inv}}, "f") == inv
    assert inputs.inventory_from_document({"ansible_inventory": json.dumps(inv)}, "f") == inv
    with pytest.raises(UsageError, match=r"preview\.json: no inventory found"):
        inputs.inventory_from_document({"outputs": {}}, "preview.json")


def test_secrets_from_stack_outputs_become_environment_variables() -> None:
    outputs = {"k3s_token": "t", "tailscale_auth_keys": {"cpl-1": "k"}, "other": "x"}

    assert inputs.secrets_from_outputs(outputs) == {
        "ECOMA_K3S_TOKEN": "t",
        "ECOMA_TAILSCALE_AUTH_KEYS": '{"cpl-1": "k"}',
    }


# --- the command line -------------------------------------------------------------------------


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document))
    return path


def test_cli_configure_with_inventory_file_json(
    private_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_file = write_json(tmp_path / "inventory.json", inventory(**{"cpl-1": local_host()}))

    code = cli.main(
        [
            "configure",
            "--inventory",
            str(inv_file),
            "--playbook",
            str(FIXTURES / "site.yaml"),
            "--json",
        ]
    )

    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert records[-1]["type"] == "summary"
    assert records[-1]["success"] is True
    assert {r["status"] for r in records[:-1]} == {"ok", "changed", "skipped"}


def test_cli_configure_preview_document_failing_host_exits_1(
    private_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preview = {"outputs": {"ansible_inventory": inventory(**{"cpl-1": local_host()})}}
    inv_file = write_json(tmp_path / "preview.json", preview)

    code = cli.main(
        ["configure", "--inventory", str(inv_file), "--playbook", str(FIXTURES / "fail.yaml")]
    )

    assert code == 1
    out = capsys.readouterr().out
    assert "cpl-1 | Refuse the hot disk | failed: " in out


def test_cli_configure_passes_limit_tags_and_check(
    private_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_file = write_json(
        tmp_path / "inventory.json", inventory(**{"cpl-1": local_host(), "cpl-2": local_host()})
    )

    code = cli.main(
        [
            "configure",
            "--inventory",
            str(inv_file),
            "--playbook",
            str(FIXTURES / "site.yaml"),
            "--limit",
            "cpl-1",
            "--check",
            "--diff",
            "--skip-tags",
            "never,other",
            "--json",
        ]
    )

    assert code == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert list(summary["hosts"]) == ["cpl-1"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read the inventory file"),
        ("{not json", "not valid JSON"),
        ('{"hosts": []}', "no inventory found"),
    ],
)
def test_cli_configure_bad_inventory_file_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    inv_file = tmp_path / "inventory.json"
    if content is not None:
        inv_file.write_text(content)

    code = cli.main(["configure", "--inventory", str(inv_file)])

    assert code == 2
    err = capsys.readouterr().err
    assert str(inv_file) in err
    assert message in err


def test_cli_configure_needs_exactly_one_inventory_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(["configure", "--stack", "dev", "--inventory", str(tmp_path / "i.json")])
    assert raised.value.code == 2
    # Neither: no stack from the environment or `pulumi stack select` either (bad usage).
    monkeypatch.delenv("PULUMI_STACK", raising=False)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    assert cli.main(["configure"]) == 2
    assert "which stack? pass -s NAME or --inventory" in capsys.readouterr().err


def test_cli_configure_stack_without_pulumi_cli_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no `pulumi` here

    code = cli.main(["configure", "--stack", "dev"])

    assert code == 1
    err = capsys.readouterr().err
    assert "Pulumi CLI" in err
    assert "--inventory FILE" in err


def test_cli_configure_stack_reads_inventory_and_secret_outputs(
    private_tmp: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env_names = ["ECOMA_K3S_TOKEN", "ECOMA_K3S_AGENT_TOKEN", "ECOMA_TAILSCALE_AUTH_KEYS"]
    inv = inventory(**{"cpl-1": {**local_host()}})
    inv["all"]["vars"].update({"out_dir": str(tmp_path), "env_names": env_names})
    outputs = {
        "ansible_inventory": inv,
        "k3s_token": "stack-token",
        "k3s_agent_token": "stack-agent-token",
        "tailscale_auth_keys": {"cpl-1": "tskey-auth-stack"},
    }
    calls = []

    def fake_outputs(stack_name: str, work_dir: Path) -> dict[str, Any]:
        calls.append((stack_name, work_dir))
        return outputs

    monkeypatch.setattr(inputs, "read_stack_outputs", fake_outputs)
    monkeypatch.setenv("ECOMA_K3S_AGENT_TOKEN", "caller-agent-token")  # the caller's wins

    code = cli.main(["configure", "--stack", "staging", "--playbook", str(FIXTURES / "env.yaml")])

    assert code == 0, capsys.readouterr()
    assert calls == [("staging", REPO)]
    seen = json.loads((tmp_path / "cpl-1.env.json").read_text())
    assert seen == {
        "ECOMA_K3S_TOKEN": "stack-token",
        "ECOMA_K3S_AGENT_TOKEN": "caller-agent-token",
        "ECOMA_TAILSCALE_AUTH_KEYS": '{"cpl-1": "tskey-auth-stack"}',
    }
    out = capsys.readouterr().out
    assert "stack-token" not in out
    assert "caller-agent-token" not in out


# --- the live display at a terminal ---------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_at_a_terminal_progress_is_a_live_table_and_failures_stay_on_screen(
    private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    terminal = FakeTerminal()
    result = run_playbook(
        inventory(**{"cpl-1": local_host(), "cpl-2": local_host()}),
        FIXTURES / "fail.yaml",
        stream=terminal,
    )

    shown = terminal.getvalue()
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    assert not result.success
    assert "PLAY Fail" in plain
    assert " ok chg fail unr skip task" in " ".join(plain.split())  # the live table's header
    assert "\x1b[2K" in shown  # redrawn in place
    assert "FAILED       cpl-1  Refuse the hot disk: " in shown  # kept above the table
    assert "ok           cpl-1  Answer ping" not in shown  # no line per event at a terminal
    summary = shown[shown.index("SUMMARY") :]
    assert "\x1b[" not in summary  # the recap is plain text
    assert summary.splitlines()[1].split() == [
        "HOST", "OK", "CHANGED", "FAILED", "UNREACHABLE", "SKIPPED",
    ]  # fmt: skip
    assert "cpl-1 | Refuse the hot disk | failed: " in summary
