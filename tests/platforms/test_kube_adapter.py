"""`ecoma_infra.platforms.kubernetes.KubernetesCluster` and the real `kubernetes` client, over HTTP
against the simulated API server of `simulated_apiserver.py` (so every test name says
`simulated_apiserver`).

A fake clock makes the drain's polling instant: `sleep` only moves the clock on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from simulated_apiserver import SimulatedApiServer

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.kubernetes import KubernetesCluster
from ecoma_infra.platforms.seams import Cluster, DrainError, NodeStatus

NODE = "wkr-aws-1"
POLL = 2.0


class FakeClock:
    """`clock` and `sleep` for the adapter: sleeping moves time on, at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        # run at each sleep with the number of sleeps so far: the cluster changes meanwhile
        self.on_sleep: list[Callable[[int], None]] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        for action in self.on_sleep:
            action(len(self.sleeps))


@pytest.fixture
def apiserver() -> Iterator[SimulatedApiServer]:
    server = SimulatedApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(apiserver: SimulatedApiServer, clock: FakeClock) -> Iterator[KubernetesCluster]:
    api_client = client.ApiClient(client.Configuration(host=apiserver.url))
    yield KubernetesCluster(api_client, poll_interval=POLL, clock=clock, sleep=clock.sleep)
    api_client.close()


def evictions(apiserver: SimulatedApiServer) -> list[str]:
    """The pods whose eviction was asked for, in order, as "namespace/name"."""
    requests = apiserver.requests_for("POST", r"/eviction$")
    return ["{}/{}".format(*r.path.split("/")[4:7:2]) for r in requests]


@pytest.mark.parametrize(
    "method", ["node", "cordon", "uncordon", "drain", "delete_node", "etcd_healthy"]
)
def test_methods_match_the_cluster_protocol_without_simulated_apiserver(method: str) -> None:
    expected = inspect.signature(getattr(Cluster, method))
    actual = inspect.signature(getattr(KubernetesCluster, method))

    assert [(p.name, p.kind) for p in actual.parameters.values()] == [
        (p.name, p.kind) for p in expected.parameters.values()
    ]


# --- node ------------------------------------------------------------------------------------


def test_node_ready_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE, labels={"ecoma.io/pool": "aws", "kubernetes.io/hostname": NODE})

    assert cluster.node(NODE) == NodeStatus(
        name=NODE,
        ready=True,
        unschedulable=False,
        labels={"ecoma.io/pool": "aws", "kubernetes.io/hostname": NODE},
        kubelet_version="v1.31.4+k3s1",
    )


def test_node_not_ready_and_cordoned_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE, ready=False, unschedulable=True)

    status = cluster.node(NODE)

    assert status is not None
    assert status.ready is False
    assert status.unschedulable is True


def test_node_missing_is_none_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node("wkr-aws-2")

    assert cluster.node(NODE) is None
    assert [r.path for r in apiserver.requests] == [f"/api/v1/nodes/{NODE}"]


# --- cordon, uncordon --------------------------------------------------------------------------


def test_cordon_then_uncordon_patches_the_node_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE)

    cluster.cordon(NODE)
    assert apiserver.nodes[NODE]["spec"]["unschedulable"] is True
    labels = {"kubernetes.io/hostname": NODE}
    assert cluster.node(NODE) == NodeStatus(NODE, True, True, labels, "v1.31.4+k3s1")

    cluster.uncordon(NODE)
    assert apiserver.nodes[NODE]["spec"]["unschedulable"] is False
    assert cluster.node(NODE) == NodeStatus(NODE, True, False, labels, "v1.31.4+k3s1")

    patches = apiserver.requests_for("PATCH", "/api/v1/nodes/")
    assert [p.body for p in patches] == [
        {"spec": {"unschedulable": True}},
        {"spec": {"unschedulable": False}},
    ]
    assert {p.content_type for p in patches} == {"application/strategic-merge-patch+json"}
    assert apiserver.nodes[NODE]["spec"]["podCIDR"] == "10.42.3.0/24"  # the rest is untouched


def test_node_answer_the_client_cannot_parse_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE)["status"]["nodeInfo"] = {"architecture": "amd64"}

    with pytest.raises(EcomaError) as caught:
        cluster.node(NODE)

    assert str(caught.value).startswith(
        f"cannot read node {NODE}: the API server's answer does not fit the kubernetes client's "
        "model (V1NodeSystemInfo.bootID: Input should be a valid string); "
    )


def test_cordon_of_a_missing_node_fails_simulated_apiserver(cluster: KubernetesCluster) -> None:
    with pytest.raises(EcomaError, match=rf'cannot cordon {NODE}: HTTP 404: nodes "{NODE}" not'):
        cluster.cordon(NODE)


# --- drain -----------------------------------------------------------------------------------


def test_drain_evicts_ordinary_pods_and_leaves_daemonset_mirror_finished_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-7d9f-abcde", NODE, labels={"app": "web"})
    apiserver.add_pod("shop", "worker-0", NODE, owner_kind="StatefulSet")
    apiserver.add_pod("kube-system", "svclb-traefik-x1", NODE, owner_kind="DaemonSet")
    apiserver.add_pod("kube-system", f"kube-vip-{NODE}", NODE, owner_kind="Node", mirror=True)
    apiserver.add_pod("shop", "migrate-x7k2p", NODE, owner_kind="Job", phase="Succeeded")
    apiserver.add_pod("shop", "web-7d9f-fghij", "wkr-onprem-1", labels={"app": "web"})

    cluster.drain(NODE, timeout=60)

    assert apiserver.pod_names() == {
        "kube-system/svclb-traefik-x1",
        f"kube-system/kube-vip-{NODE}",
        "shop/migrate-x7k2p",
        "shop/web-7d9f-fghij",
    }
    assert sorted(evictions(apiserver)) == ["shop/web-7d9f-abcde", "shop/worker-0"]
    assert apiserver.requests_for("DELETE", "/pods") == []  # evicted, never deleted
    lists = apiserver.requests_for("GET", r"^/api/v1/pods$")
    assert {r.query for r in lists} == {f"fieldSelector=spec.nodeName%3D{NODE}"}
    assert clock.sleeps == [POLL]  # one look after the evictions found the node empty


def test_drain_of_a_node_without_pods_returns_at_once_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("kube-system", "svclb-traefik-x1", NODE, owner_kind="DaemonSet")

    cluster.drain(NODE, timeout=60)

    assert evictions(apiserver) == []
    assert clock.sleeps == []


def test_drain_blocked_by_a_pdb_raises_drain_error_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-1", NODE, labels={"app": "web"})
    apiserver.add_pod("shop", "web-2", "wkr-onprem-1", labels={"app": "web"})
    apiserver.add_pod("shop", "cache-1", NODE, labels={"app": "cache"})
    apiserver.add_pdb("shop", "web-pdb", min_available=2, match_labels={"app": "web"})
    start = clock.now

    with pytest.raises(DrainError) as caught:
        cluster.drain(NODE, timeout=30)

    error = caught.value
    assert error.node == NODE
    assert error.pods_left == ["shop/web-1"]
    assert "a PodDisruptionBudget blocked the eviction of shop/web-1" in error.reason
    assert "The disruption budget web-pdb needs 2 healthy pods and has 2 currently" in error.reason
    assert "shop/web-1" in apiserver.pod_names()  # still running: nothing forced it away
    assert "shop/cache-1" not in apiserver.pod_names()  # the unprotected pod was evicted
    assert 30 <= clock.now - start <= 30 + POLL
    assert evictions(apiserver).count("shop/web-1") == len(clock.sleeps) + 1  # retried each poll
    assert apiserver.requests_for("DELETE", "/pods") == []


def test_drain_retries_a_pdb_refusal_until_it_allows_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-1", NODE, labels={"app": "web"})
    apiserver.add_pod("shop", "web-2", "wkr-onprem-1", labels={"app": "web"})
    apiserver.add_pdb("shop", "web-pdb", min_available=2, match_labels={"app": "web"})

    def replica_elsewhere_ready(sleeps: int) -> None:
        if sleeps == 3:  # the Deployment's surge pod came up on another node
            apiserver.add_pod("shop", "web-3", "wkr-onprem-2", labels={"app": "web"})

    clock.on_sleep.append(replica_elsewhere_ready)

    cluster.drain(NODE, timeout=60)

    assert apiserver.pod_names() == {"shop/web-2", "shop/web-3"}
    assert evictions(apiserver) == ["shop/web-1"] * 4  # 3 refusals, then accepted


def test_drain_waits_for_graceful_termination_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-1", NODE, grace_polls=3)
    apiserver.add_pod("shop", "web-2", NODE)

    cluster.drain(NODE, timeout=60)

    assert apiserver.pod_names() == set()
    assert sorted(evictions(apiserver)) == ["shop/web-1", "shop/web-2"]  # each asked once
    assert clock.sleeps == [POLL] * 4  # web-1 was still listed, terminating, three times


def test_drain_times_out_when_a_pod_does_not_terminate_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "db-0", NODE, owner_kind="StatefulSet", grace_polls=1000)

    with pytest.raises(DrainError) as caught:
        cluster.drain(NODE, timeout=10)

    assert caught.value.reason == "shop/db-0 did not terminate within 10 s"
    assert caught.value.pods_left == ["shop/db-0"]
    assert "PodDisruptionBudget" not in str(caught.value)
    assert evictions(apiserver) == ["shop/db-0"]
    assert clock.sleeps == [POLL] * 5


# --- delete_node ------------------------------------------------------------------------------


def test_delete_node_twice_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_node("wkr-aws-2")

    cluster.delete_node(NODE)
    assert set(apiserver.nodes) == {"wkr-aws-2"}
    assert cluster.node(NODE) is None

    cluster.delete_node(NODE)  # already gone: no error
    assert len(apiserver.requests_for("DELETE", f"/api/v1/nodes/{NODE}$")) == 2


# --- API errors -------------------------------------------------------------------------------


def test_forbidden_cordon_names_rbac_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE)
    apiserver.forbid("patch", "nodes")

    with pytest.raises(EcomaError) as caught:
        cluster.cordon(NODE)

    message = str(caught.value)
    assert message.startswith(f"cannot cordon {NODE}: HTTP 403: nodes ")
    assert 'cannot patch resource "nodes" in API group "" at the cluster scope' in message
    assert "ServiceAccount needs a ClusterRole with get/patch/delete on nodes" in message
    assert "create on pods/eviction" in message
    assert "unschedulable" not in apiserver.nodes[NODE]["spec"]


def test_forbidden_eviction_fails_the_drain_at_once_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> None:
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-1", NODE)
    apiserver.forbid("create", "pods/eviction")

    with pytest.raises(EcomaError) as caught:
        cluster.drain(NODE, timeout=60)

    assert not isinstance(caught.value, DrainError)
    assert f"cannot evict pod shop/web-1 of node {NODE}: HTTP 403" in str(caught.value)
    assert 'cannot create resource "pods/eviction"' in str(caught.value)
    assert "RBAC" in str(caught.value)
    assert clock.sleeps == []


def test_server_error_names_operation_status_and_message_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE)
    apiserver.fail("list", "pods", 500, "InternalError", "etcdserver: request timed out")

    with pytest.raises(EcomaError) as caught:
        cluster.drain(NODE, timeout=60)

    assert str(caught.value) == (
        f"cannot list the pods of {NODE}: HTTP 500: etcdserver: request timed out; "
        "retry; if it persists, check the API server"
    )


def test_stopped_simulated_apiserver_is_unreachable(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    url = apiserver.url
    apiserver.stop()

    with pytest.raises(EcomaError, match=rf"cannot read node {NODE}: the API server {url} is"):
        cluster.node(NODE)


# --- from_kubeconfig --------------------------------------------------------------------------


def write_kubeconfig(path: Path, server: str, token: str, context: str = "ecoma") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "ecoma", "cluster": {"server": server}}],
                "users": [{"name": "burst-controller", "user": {"token": token}}],
                "contexts": [
                    {"name": context, "context": {"cluster": "ecoma", "user": "burst-controller"}}
                ],
                "current-context": context,
            }
        )
    )
    return path


def test_from_kubeconfig_end_to_end_simulated_apiserver(
    apiserver: SimulatedApiServer, clock: FakeClock, tmp_path: Path
) -> None:
    apiserver.token = "simulated-bearer-for-tests"
    apiserver.add_node(NODE)
    apiserver.add_pod("shop", "web-1", NODE)
    kubeconfig = write_kubeconfig(tmp_path / "config", apiserver.url, apiserver.token)

    cluster = KubernetesCluster.from_kubeconfig(
        kubeconfig, context="ecoma", clock=clock, sleep=clock.sleep
    )
    cluster.cordon(NODE)
    cluster.drain(NODE, timeout=60)
    cluster.delete_node(NODE)
    cluster.close()

    assert apiserver.nodes == {}
    assert apiserver.pod_names() == set()
    assert evictions(apiserver) == ["shop/web-1"]
    assert clock.sleeps == [2.0]  # the default poll interval


def test_from_kubeconfig_reads_the_kubeconfig_env_simulated_apiserver(
    apiserver: SimulatedApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apiserver.add_node(NODE, ready=False)
    kubeconfig = write_kubeconfig(tmp_path / "k3s.yaml", apiserver.url, "any")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    status = KubernetesCluster.from_kubeconfig().node(NODE)

    assert status is not None
    assert status.ready is False


def test_from_kubeconfig_with_a_wrong_token_simulated_apiserver(
    apiserver: SimulatedApiServer, tmp_path: Path
) -> None:
    apiserver.token = "simulated-bearer-for-tests"
    kubeconfig = write_kubeconfig(tmp_path / "config", apiserver.url, "stale")

    with pytest.raises(EcomaError, match=r"HTTP 401: Unauthorized; the credentials were refused"):
        KubernetesCluster.from_kubeconfig(kubeconfig).node(NODE)


def test_from_kubeconfig_missing_file_without_simulated_apiserver(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "config"

    with pytest.raises(EcomaError) as caught:
        KubernetesCluster.from_kubeconfig(missing)

    assert str(caught.value) == (
        f"kubeconfig {missing} does not exist; set KUBECONFIG or pass --kubeconfig"
    )


def test_from_kubeconfig_env_naming_missing_files_without_simulated_apiserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "k3s.yaml"))

    with pytest.raises(EcomaError, match=r"KUBECONFIG=.*k3s\.yaml: no such file"):
        KubernetesCluster.from_kubeconfig()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("clusters: [\n", "while parsing a flow node"),
        ("", "file is empty"),
        ("- just\n- a list\n", "cannot be used"),
    ],
)
def test_from_kubeconfig_invalid_file_without_simulated_apiserver(
    tmp_path: Path, text: str, expected: str
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(text)

    with pytest.raises(EcomaError) as caught:
        KubernetesCluster.from_kubeconfig(kubeconfig)

    message = str(caught.value)
    assert message.startswith(f"kubeconfig {kubeconfig} cannot be used: ")
    assert expected in message
    assert message.endswith("; set KUBECONFIG or pass --kubeconfig")


def test_from_kubeconfig_unknown_context_without_simulated_apiserver(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", "http://127.0.0.1:9", "t")

    with pytest.raises(EcomaError, match=r"\(context lab\) cannot be used: .*name lab"):
        KubernetesCluster.from_kubeconfig(kubeconfig, context="lab")


def test_from_kubeconfig_without_any_config_without_simulated_apiserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    with pytest.raises(EcomaError) as caught:
        KubernetesCluster.from_kubeconfig()

    assert str(caught.value) == (
        f"no kubeconfig: {tmp_path}/.kube/config does not exist and this is not a pod with a "
        "ServiceAccount; set KUBECONFIG or pass --kubeconfig"
    )


def test_from_kubeconfig_falls_back_to_in_cluster_without_simulated_apiserver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.43.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    # Not in a pod: the ServiceAccount token file is missing, and the error says so.
    with pytest.raises(EcomaError, match=r"^the in-cluster config cannot be used: Service token"):
        KubernetesCluster.from_kubeconfig()


# --- day 2: versions, etcd health, Nodes with finalizers ---------------------------------------


def test_node_reports_the_kubelet_version_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node(NODE, version="v1.32.5+k3s1")
    status = cluster.node(NODE)
    assert status is not None
    assert status.kubelet_version == "v1.32.5+k3s1"

    apiserver.set_node(NODE, version="v1.33.1+k3s1", ready=False)
    status = cluster.node(NODE)
    assert status is not None
    assert (status.kubelet_version, status.ready) == ("v1.33.1+k3s1", False)


def test_etcd_health_reads_the_readiness_checks_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    assert cluster.etcd_healthy() is True
    apiserver.etcd_healthy = False
    assert cluster.etcd_healthy() is False
    readyz = apiserver.requests_for("GET", r"^/readyz$")
    assert [r.query for r in readyz] == ["verbose=true", "verbose=true"]


def test_etcd_health_without_rights_names_the_cause_simulated_apiserver(
    apiserver: SimulatedApiServer, clock: FakeClock
) -> None:
    apiserver.token = "the-right-token"
    configuration = client.Configuration(host=apiserver.url)
    configuration.api_key = {"BearerToken": "a-wrong-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    api_client = client.ApiClient(configuration)
    try:
        cluster = KubernetesCluster(api_client, clock=clock, sleep=clock.sleep)
        with pytest.raises(EcomaError, match=r"API server: HTTP 401.*credentials were refused"):
            cluster.etcd_healthy()
    finally:
        api_client.close()


def test_a_deleted_server_node_stays_until_its_finalizer_ran_simulated_apiserver(
    apiserver: SimulatedApiServer, cluster: KubernetesCluster
) -> None:
    apiserver.add_node("cpl-2", finalizer_reads=2)
    cluster.delete_node("cpl-2")

    seen = [cluster.node("cpl-2") for _ in range(3)]

    assert [s.deleting if s else None for s in seen] == [True, True, None]
