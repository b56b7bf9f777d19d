"""The rolling upgrade's decisions and order, through the real Kubernetes adapter against the
simulated API server (cordon, drain with evictions and PodDisruptionBudgets, kubelet versions,
etcd health); the playbook runs are a stand-in that does to the simulated cluster what the
real playbook does (every test name says simulated)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from day2_doubles import NEW, OLD, SimulatedPlaybook, inventory, write_kubeconfig
from simulated_apiserver import SimulatedApiServer

from ecoma_infra.cli import day2_session
from ecoma_infra.cli import main as cli
from ecoma_infra.day2.common import Day2Error, Waits
from ecoma_infra.day2.upgrade import Upgrader, UpgradeRefusedError, plan_upgrade
from ecoma_infra.day2.versions import K3sVersion
from ecoma_infra.platforms.kubernetes import KubernetesCluster

SERVERS = ["cpl-1", "cpl-2", "cpl-3"]
AGENTS = ["ops-1", "sts-1", "wkr-1"]
TARGET = K3sVersion.parse(NEW, "target")


@pytest.fixture
def stack_cluster(apiserver: SimulatedApiServer) -> dict:
    for name in [*SERVERS, *AGENTS]:
        apiserver.add_node(name, version=OLD)
    return inventory(cpl=SERVERS, ops=["ops-1"], sts=["sts-1"], wkr=["wkr-1"])


def events(apiserver: SimulatedApiServer, playbook: SimulatedPlaybook) -> list[str]:
    """The API server's requests and the playbook runs, in the order they happened."""
    log: list[tuple[int, int, str]] = []
    for index, request in enumerate(apiserver.requests):
        parts = request.path.split("/")
        if request.method == "PATCH":
            state = request.body["spec"]["unschedulable"]
            log.append((index, 1, f"{'cordon' if state else 'uncordon'} {parts[-1]}"))
        elif request.method == "POST" and request.path.endswith("/eviction"):
            log.append((index, 1, f"evict {parts[4]}/{parts[6]}"))
        elif request.path == "/readyz":
            log.append((index, 1, "etcd?"))
    for run in playbook.runs:
        log.append((run["at"], 0, f"{run['playbook']} {run['limit']}"))
    return [text for _, _, text in sorted(log)]


def test_simulated_upgrade_goes_servers_one_at_a_time_then_agents_in_batches(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    apiserver.add_pod("shop", "web-1", "wkr-1")
    apiserver.add_pod("data", "mongo-0", "sts-1", owner_kind="StatefulSet")
    plan = plan_upgrade(stack_cluster, cluster, TARGET, batch_size=2)
    apiserver.requests.clear()

    outcome = Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(plan)

    assert outcome.upgraded == [*SERVERS, *AGENTS]
    assert events(apiserver, playbook) == [
        "cordon cpl-1", "upgrade.yaml cpl-1", "etcd?", "uncordon cpl-1",
        "cordon cpl-2", "upgrade.yaml cpl-2", "etcd?", "uncordon cpl-2",
        "cordon cpl-3", "upgrade.yaml cpl-3", "etcd?", "uncordon cpl-3",
        "cordon ops-1", "cordon sts-1", "evict data/mongo-0",
        "upgrade.yaml ops-1,sts-1", "uncordon ops-1", "uncordon sts-1",
        "cordon wkr-1", "evict shop/web-1", "upgrade.yaml wkr-1", "uncordon wkr-1",
    ]  # fmt: skip
    for name in [*SERVERS, *AGENTS]:
        node = apiserver.nodes[name]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == NEW
        assert node["spec"].get("unschedulable") is False
    # The playbook never drains by itself here: this side did, through the Eviction API.
    assert {run["extravars"]["k3s_upgrade_drain"] for run in playbook.runs} == {False}
    assert {run["extravars"]["k3s_version"] for run in playbook.runs} == {NEW}
    assert {tuple(run["secrets"]) for run in playbook.runs} == {()}


def test_simulated_upgrade_stops_at_the_first_failure_and_leaves_the_rest_old(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    plan = plan_upgrade(stack_cluster, cluster, TARGET)
    playbook.fail_on = {"cpl-2"}
    apiserver.requests.clear()

    with pytest.raises(Day2Error) as failure:
        Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(plan)

    message = str(failure.value)
    assert "stopped at cpl-2: upgrade.yaml failed on cpl-2" in message
    assert "cpl-2 stays cordoned" in message
    assert "upgraded: cpl-1\n" in message
    assert "still on their old version: cpl-3, ops-1, sts-1, wkr-1" in message
    assert "run the same command again" in message
    assert [run["limit"] for run in playbook.runs] == ["cpl-1", "cpl-2"]
    versions = {n: apiserver.nodes[n]["status"]["nodeInfo"]["kubeletVersion"] for n in plan.nodes}
    assert versions == {"cpl-1": NEW} | dict.fromkeys(["cpl-2", "cpl-3", *AGENTS], OLD)
    assert events(apiserver, playbook)[-2:] == ["cordon cpl-2", "upgrade.yaml cpl-2"]
    assert apiserver.nodes["cpl-2"]["spec"]["unschedulable"] is True


def test_simulated_rerun_resumes_with_the_nodes_left(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    playbook.fail_on = {"sts-1"}
    with pytest.raises(Day2Error):
        Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(
            plan_upgrade(stack_cluster, cluster, TARGET)
        )
    playbook.fail_on = set()
    apiserver.set_node("sts-1", ready=True)

    again = plan_upgrade(stack_cluster, cluster, TARGET)

    assert again.done == ("cpl-1", "cpl-2", "cpl-3", "ops-1")
    assert again.servers == ()
    assert again.batches == (("sts-1",), ("wkr-1",))
    Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(again)
    assert [run["limit"] for run in playbook.runs][-2:] == ["sts-1", "wkr-1"]


def test_simulated_node_that_never_comes_back_ready_fails_the_step(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    playbook.never_ready = {"cpl-1"}

    with pytest.raises(Day2Error, match=r"cpl-1 is not Ready on v1\.33\.1\+k3s1 after 120 s"):
        Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(
            plan_upgrade(stack_cluster, cluster, TARGET)
        )
    assert [run["limit"] for run in playbook.runs] == ["cpl-1"]


def test_simulated_unhealthy_etcd_after_a_server_stops_the_upgrade(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    plan = plan_upgrade(stack_cluster, cluster, TARGET)
    apiserver.etcd_healthy = False

    with pytest.raises(Day2Error, match="stopped at cpl-1: etcd is not healthy after 120 s"):
        Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(plan)
    assert [run["limit"] for run in playbook.runs] == ["cpl-1"]
    assert apiserver.nodes["cpl-1"]["spec"]["unschedulable"] is True


def test_simulated_pdb_that_blocks_a_drain_uncordons_the_batch_and_upgrades_none_of_it(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    playbook: SimulatedPlaybook,
    waits: Waits,
    stack_cluster: dict,
) -> None:
    apiserver.add_pod("shop", "web-1", "wkr-1", labels={"app": "web"})
    apiserver.add_pdb("shop", "web", min_available=1, match_labels={"app": "web"})
    plan = plan_upgrade(stack_cluster, cluster, TARGET, batch_size=3)

    with pytest.raises(Day2Error) as failure:
        Upgrader(cluster, playbook, stack_cluster, lambda line: None, waits).run(plan)

    message = str(failure.value)
    assert "PodDisruptionBudget" in message
    assert "Nothing of this batch was upgraded; uncordoned ops-1, sts-1, wkr-1" in message
    assert [run["limit"] for run in playbook.runs] == SERVERS
    for name in AGENTS:
        assert apiserver.nodes[name]["spec"]["unschedulable"] is False
        assert apiserver.nodes[name]["status"]["nodeInfo"]["kubeletVersion"] == OLD
    assert apiserver.pod_names() == {"shop/web-1"}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("v1.32.4+k3s1", r"cpl-1: v1\.32\.4\+k3s1 is older than v1\.32\.5\+k3s1"),
        ("v1.34.0+k3s1", r"cpl-1: v1\.34\.0\+k3s1 skips a minor version .* v1\.33\.x first"),
    ],
)
def test_simulated_downgrade_or_skipped_minor_is_refused_before_any_change(
    apiserver: SimulatedApiServer,
    cluster: KubernetesCluster,
    stack_cluster: dict,
    target: str,
    expected: str,
) -> None:
    with pytest.raises(UpgradeRefusedError, match=expected) as refused:
        plan_upgrade(stack_cluster, cluster, K3sVersion.parse(target, "t"))
    assert "nothing was changed" in str(refused.value)
    assert all(n in str(refused.value) for n in [*SERVERS, *AGENTS])  # every node named
    assert [r.method for r in apiserver.requests] == ["GET"] * 7  # six nodes and etcd


def test_simulated_missing_or_not_ready_nodes_and_bad_etcd_are_all_named(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, stack_cluster: dict
) -> None:
    del apiserver.nodes["wkr-1"]
    apiserver.set_node("sts-1", ready=False)
    apiserver.etcd_healthy = False

    with pytest.raises(UpgradeRefusedError) as refused:
        plan_upgrade(stack_cluster, cluster, TARGET)

    message = str(refused.value)
    assert "wkr-1: not in the cluster" in message
    assert "sts-1: not Ready" in message
    assert "etcd is not healthy" in message


def test_simulated_upgrade_from_the_command_line(
    apiserver: SimulatedApiServer,
    stack_cluster: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    playbook = SimulatedPlaybook(apiserver)
    monkeypatch.setattr(day2_session, "run_playbook", playbook)
    (tmp_path / "inventory.json").write_text(json.dumps(stack_cluster))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url)
    argv = ["upgrade", "--inventory", str(tmp_path / "inventory.json")]
    argv += ["--kubeconfig", str(kubeconfig), "--k3s-version", NEW, "--batch-size", "3", "--yes"]

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)

    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert "server cpl-1: v1.32.5+k3s1 -> v1.33.1+k3s1" in text
    assert "agents, batch 1: ops-1 v1.32.5+k3s1, sts-1 v1.32.5+k3s1, wkr-1 v1.32.5+k3s1" in text
    assert "upgraded to v1.33.1+k3s1: cpl-1, cpl-2, cpl-3, ops-1, sts-1, wkr-1" in text
    assert "set ecoma:k3s.version to v1.33.1+k3s1 in the stack file" in text
    assert [run["limit"] for run in playbook.runs] == [*SERVERS, "ops-1,sts-1,wkr-1"]


@pytest.mark.parametrize(
    "case",
    [
        (["--k3s-version", "1.33"], 2, "--k3s-version: '1.33' is not a k3s release"),
        (["--k3s-version", "v1.31.0+k3s1"], 1, "refused, nothing was changed"),
        (["--k3s-version", NEW, "--batch-size", "0"], 2, "--batch-size 0: give 1 or more"),
    ],
)
def test_simulated_bad_input_exits_with_the_reason_and_changes_nothing(
    apiserver: SimulatedApiServer,
    stack_cluster: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: tuple[list[str], int, str],
) -> None:
    extra, code, message = case
    playbook = SimulatedPlaybook(apiserver)
    monkeypatch.setattr(day2_session, "run_playbook", playbook)
    (tmp_path / "inventory.json").write_text(json.dumps(stack_cluster))
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", apiserver.url)
    argv = ["upgrade", "--inventory", str(tmp_path / "inventory.json")]
    argv += ["--kubeconfig", str(kubeconfig), "--yes", *extra]

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert cli.main(argv) == code
    assert message in err.getvalue()
    assert playbook.runs == []
    assert not apiserver.requests_for("PATCH", "/api/v1/nodes/")
