"""`ecoma-infra snapshot`: which server, what name, and what it hands the playbook (the playbook
run is a stand-in, so the test names say simulated; the lab tests run the real playbook)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from day2_doubles import inventory

from ecoma_infra.cli import day2_session
from ecoma_infra.cli import main as cli
from ecoma_infra.day2.common import Day2Error
from ecoma_infra.day2.snapshot import plan_snapshot, take_snapshot
from ecoma_infra.errors import UsageError

STACK = inventory(cpl=["cpl-1", "cpl-2", "cpl-3"], wkr=["wkr-1"])


def test_the_first_server_by_default_or_the_one_named() -> None:
    assert plan_snapshot(STACK, server=None, name="on-demand").server == "cpl-1"
    assert plan_snapshot(STACK, server="cpl-3", name="before-upgrade").server == "cpl-3"


@pytest.mark.parametrize(
    ("server", "name", "message"),
    [
        ("wkr-1", "x", "--node wkr-1: not a server of the inventory (cpl-1, cpl-2, cpl-3)"),
        (None, "Before_Upgrade", "--name 'Before_Upgrade': use 1-40 lowercase letters"),
        (None, "-x", "--name '-x'"),
    ],
)
def test_bad_choices_are_usage_errors(server: str | None, name: str, message: str) -> None:
    with pytest.raises(UsageError) as error:
        plan_snapshot(STACK, server=server, name=name)
    assert message in str(error.value)


def test_an_inventory_without_servers_has_nowhere_to_snapshot() -> None:
    with pytest.raises(UsageError, match="no server"):
        plan_snapshot(inventory(wkr=["wkr-1"]), server=None, name="x")


def test_simulated_a_failed_snapshot_says_where_to_look() -> None:
    def failing(*args: object) -> bool:
        return False

    plan = plan_snapshot(STACK, server="cpl-2", name="x")
    with pytest.raises(Day2Error, match=r"etcd snapshot 'x' on cpl-2 failed.*k3s etcd-snapshot ls"):
        take_snapshot(plan, failing, STACK, {})


def test_simulated_snapshot_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[tuple] = []

    def playbook(*args: object, verbosity: int = 0) -> bool:
        runs.append((*args, verbosity))
        return True

    monkeypatch.setattr(day2_session, "run_playbook", playbook)
    monkeypatch.setenv("ECOMA_ETCD_S3_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE")
    monkeypatch.setenv("ECOMA_ETCD_S3_SECRET_ACCESS_KEY", "not/a+real=secret")
    (tmp_path / "inventory.json").write_text(json.dumps(STACK))
    out = io.StringIO()
    argv = ["snapshot", "--inventory", str(tmp_path / "inventory.json"), "--node", "cpl-2"]
    with contextlib.redirect_stdout(out):
        assert cli.main([*argv, "--name", "before-upgrade"]) == 0

    assert "etcd snapshot 'before-upgrade' on cpl-2: saved" in out.getvalue()
    (playbook_name, _inventory, secrets, limit, extravars, verbosity) = runs[0]
    assert (playbook_name, limit, extravars) == (
        "snapshot.yaml",
        "cpl-2",
        {"k3s_snapshot_name": "before-upgrade"},
    )
    assert verbosity == 1  # Ansible's own output names the snapshot and where it went
    # The playbook only ever reads the credentials on the server; configure-style secrets
    # are handed over all the same, through the environment of the run.
    assert secrets["ECOMA_ETCD_S3_SECRET_ACCESS_KEY"] == "not/a+real=secret"
    assert "not/a+real=secret" not in out.getvalue()
