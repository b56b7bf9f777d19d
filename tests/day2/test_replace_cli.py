"""`ecoma-infra replace` on the command line: the plan with --dry-run, and what it needs before
anything changes (the stack is the offline engine's stand-in, the cluster the simulated API
server behind the real adapter: the test names say simulated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from day2_doubles import OLD
from simulated_apiserver import SimulatedApiServer
from stacks import stack_variant

from ecoma_infra.cli import day2_session
from ecoma_infra.cli import main as cli
from ecoma_infra.cli.commands import replace as command
from ecoma_infra.platforms.kubernetes import KubernetesCluster
from ecoma_infra.platforms.pulumi_simulated import SimulatedStack


def without_pools(config: dict[str, Any]) -> None:
    config["ecoma:burst"] = {"budget_usd_per_hour": 1}


@pytest.fixture
def simulated(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
) -> SimulatedStack:
    journal: list[tuple[str, str]] = []
    stack = SimulatedStack.from_file(stack_variant(tmp_path, "prod", without_pools), journal)
    for name in ("cpl-1", "cpl-2", "cpl-3", "sts-1"):
        apiserver.add_node(name, version=OLD)
    monkeypatch.setattr(command, "AutomationStack", lambda name, root: stack)
    monkeypatch.setattr(day2_session, "cluster", lambda args: cluster)
    monkeypatch.delenv("PROXMOX_VE_API_TOKEN", raising=False)
    return stack


def test_simulated_dry_run_prints_the_plan_and_changes_nothing(
    simulated: SimulatedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["replace", "--stack", "prod", "--node", "sts-1", "--dry-run"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "replace sts node sts-1 (VM 5301 on pve1)" in out
    assert "keep its data disks (virtio3, virtio4) on a protected holder VM" in out
    assert simulated.journal == []


def test_simulated_without_a_proxmox_token_nothing_changes(
    simulated: SimulatedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["replace", "--stack", "prod", "--node", "sts-1", "--yes"])

    _, err = capsys.readouterr()
    assert code == 1
    assert "PROXMOX_VE_API_TOKEN is not set" in err
    assert simulated.journal == []


def test_simulated_an_unknown_node_is_bad_usage(
    simulated: SimulatedStack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["replace", "--stack", "prod", "--node", "wkr-aws-1", "--dry-run"]) == 2
    assert "--node wkr-aws-1: not a node of Pulumi.prod.yaml" in capsys.readouterr().err
