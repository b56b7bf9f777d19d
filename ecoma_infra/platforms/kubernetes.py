"""`seams.Cluster` over the Kubernetes API, with the official `kubernetes` client.

`drain` is `kubectl drain --ignore-daemonsets --delete-emptydir-data` without `--force`: every
pod on the node but DaemonSet pods, mirror (static) pods and finished pods is evicted through
the Eviction API, so PodDisruptionBudgets are honoured; pods are never deleted directly.

`etcd_healthy` reads the API server's `/readyz?verbose` (its `etcd` check), which the default
`system:public-info-viewer` ClusterRole already allows every identity.

The identity of the kubeconfig (or the pod's ServiceAccount) needs this ClusterRole:

    rules:
      - {apiGroups: [""], resources: [nodes], verbs: [get, patch, delete]}
      - {apiGroups: [""], resources: [pods], verbs: [list]}
      - {apiGroups: [""], resources: [pods/eviction], verbs: [create]}
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Set
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import DrainError, DrainProgress, NodeStatus

if TYPE_CHECKING:  # the client takes 0.3 s to import: only when a cluster is used
    from kubernetes.client import ApiClient, ApiException, CoreV1Api, V1ObjectMeta, V1Pod

_T = TypeVar("_T")

RBAC_HINT = (
    "the kubeconfig's user or the ServiceAccount needs a ClusterRole with get/patch/delete on "
    "nodes, list on pods and create on pods/eviction (see ecoma_infra/kube.py)"
)
KUBECONFIG_FIX = "set KUBECONFIG or pass --kubeconfig"
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})


class KubernetesCluster:
    """`Cluster` over a `kubernetes.client.ApiClient`.

    `clock` and `sleep` pace the drain's polling every `poll_interval` seconds; each API call
    gives up after `request_timeout` seconds."""

    def __init__(
        self,
        api_client: ApiClient,
        *,
        poll_interval: float = 2.0,
        request_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from kubernetes import client  # noqa: PLC0415

        self.api_client = api_client
        self._core: CoreV1Api = client.CoreV1Api(api_client)
        self._client = client
        self._poll_interval = poll_interval
        self._timeout = request_timeout
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def from_kubeconfig(
        cls, path: Path | None = None, context: str | None = None, **options: Any
    ) -> KubernetesCluster:
        """From `path`, else `$KUBECONFIG`, else `~/.kube/config`, else the in-cluster
        ServiceAccount; `options` go to the constructor."""
        import yaml  # noqa: PLC0415
        from kubernetes import client, config  # noqa: PLC0415

        configuration = client.Configuration()
        kubeconfig = _kubeconfig_files(path)
        try:
            if kubeconfig is not None:
                config.load_kube_config(
                    config_file=kubeconfig,
                    context=context,
                    client_configuration=configuration,
                    persist_config=False,
                )
            else:
                config.load_incluster_config(client_configuration=configuration)
        except (config.ConfigException, yaml.YAMLError, OSError, LookupError, TypeError) as error:
            # TypeError, LookupError: a YAML file that is not a kubeconfig mapping
            source = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster config"
            within = f" (context {context})" if context else ""
            detail = " ".join(str(error).split())
            raise EcomaError(
                f"{source}{within} cannot be used: {detail}; {KUBECONFIG_FIX}"
            ) from None
        return cls(client.ApiClient(configuration), **options)

    def close(self) -> None:
        """Close the client's connections."""
        self.api_client.close()

    # --- Cluster -----------------------------------------------------------------------------

    def node(self, name: str) -> NodeStatus | None:
        try:
            node = self._request(
                "read node",
                name,
                lambda: self._core.read_node(name, _request_timeout=self._timeout),
                allow={404},
            )
        except _Refused:
            return None
        conditions = (node.status.conditions if node.status else None) or []
        metadata = node.metadata
        info = node.status.node_info if node.status else None
        return NodeStatus(
            name=name,
            ready=any(c.type == "Ready" and c.status == "True" for c in conditions),
            unschedulable=bool(node.spec and node.spec.unschedulable),
            labels=dict((metadata.labels if metadata else None) or {}),
            kubelet_version=str(info.kubelet_version or "") if info else "",
            deleting=bool(metadata and metadata.deletion_timestamp),
        )

    def cordon(self, name: str) -> None:
        self._set_unschedulable("cordon", name, unschedulable=True)

    def uncordon(self, name: str) -> None:
        self._set_unschedulable("uncordon", name, unschedulable=False)

    def drain(
        self,
        name: str,
        *,
        timeout: float,
        on_progress: Callable[[DrainProgress], None] | None = None,
    ) -> None:
        start = self._clock()
        deadline = start + timeout
        evicted: set[str] = set()  # uids of the pods whose eviction the API accepted
        blocked: dict[str, str] = {}  # "namespace/name" -> why the API refused its eviction
        while True:
            waiting: list[str] = []
            for pod in self._pods_to_evict(name):
                key, uid = _pod_key(pod), _metadata(pod).uid or ""
                waiting.append(key)
                if uid in evicted or _metadata(pod).deletion_timestamp:
                    continue
                refusal = self._evict(name, pod)
                if refusal is None:
                    evicted.add(uid)
                    blocked.pop(key, None)
                else:
                    blocked[key] = refusal
            if not waiting:
                return
            if on_progress is not None:
                on_progress(DrainProgress(name, self._clock() - start, waiting, dict(blocked)))
            if self._clock() >= deadline:
                raise DrainError(name, _drain_failure(waiting, blocked, timeout), waiting)
            self._sleep(self._poll_interval)

    def delete_node(self, name: str) -> None:
        with suppress(_Refused):
            self._request(
                "delete node",
                name,
                lambda: self._core.delete_node(name, _request_timeout=self._timeout),
                allow={404},
            )

    def etcd_healthy(self) -> bool:
        api = self.api_client
        text = self._request(
            "read the readiness checks of",
            "the API server",
            lambda: _read_text(
                api,
                api.param_serialize(
                    method="GET",
                    resource_path="/readyz",
                    query_params=[("verbose", "true")],
                    header_params={"Accept": "text/plain"},
                    auth_settings=["BearerToken"],
                ),
                self._timeout,
            ),
        )
        # `[+]etcd ok` when the check passes, `[-]etcd failed: reason withheld` when not (and
        # the whole answer is then HTTP 500, which _read_text hands back as text too).
        return any(line.strip() == "[+]etcd ok" for line in text.splitlines())

    # --- helpers -----------------------------------------------------------------------------

    def _set_unschedulable(self, operation: str, name: str, *, unschedulable: bool) -> None:
        body = {"spec": {"unschedulable": unschedulable}}
        self._request(
            operation,
            name,
            lambda: self._core.patch_node(name, body, _request_timeout=self._timeout),
        )

    def _pods_to_evict(self, node: str) -> list[V1Pod]:
        """The node's pods that a drain evicts and waits for."""
        pods = self._request(
            "list the pods of",
            node,
            lambda: self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _request_timeout=self._timeout
            ),
        )
        return [pod for pod in pods.items if _evictable(pod)]

    def _evict(self, node: str, pod: V1Pod) -> str | None:
        """Ask the Eviction API to evict `pod`: None when it accepted (or the pod is gone),
        else why it refused for now (HTTP 429: a PodDisruptionBudget)."""
        client = self._client
        metadata = _metadata(pod)
        name, namespace = metadata.name or "", metadata.namespace or ""
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        )
        try:
            self._request(
                "evict",
                f"pod {namespace}/{name} of node {node}",
                lambda: self._core.create_namespaced_pod_eviction(
                    name,
                    namespace,
                    body,
                    _request_timeout=self._timeout,
                    _headers={"Content-Type": "application/json"},
                ),
                allow={404, 429},
            )
        except _Refused as refused:
            return refused.message if refused.status == 429 else None
        return None

    def _request(
        self,
        operation: str,
        target: str,
        action: Callable[[], _T],
        *,
        allow: Set[int] = frozenset(),
    ) -> _T:
        """`action()`; its API errors become `EcomaError`s naming `operation` and `target`, but
        those with a status in `allow` become `_Refused`."""
        from kubernetes.client import ApiException  # noqa: PLC0415
        from pydantic import ValidationError  # noqa: PLC0415
        from urllib3.exceptions import HTTPError  # noqa: PLC0415

        try:
            return action()
        except ApiException as error:
            if error.status in allow:
                raise _Refused(error.status, _api_message(error)) from None
            hints = {
                401: "the credentials were refused: renew the kubeconfig's token or certificate",
                403: f"RBAC forbids it: {RBAC_HINT}",
            }
            hint = hints.get(error.status or 0, "retry; if it persists, check the API server")
            code = f"HTTP {error.status}" if error.status else "no HTTP answer"
            raise EcomaError(
                f"cannot {operation} {target}: {code}: {_api_message(error)}; {hint}"
            ) from None
        except HTTPError as error:
            host = self.api_client.configuration.host
            raise EcomaError(
                f"cannot {operation} {target}: the API server {host} is unreachable ({error}); "
                "check that the cluster is up and the kubeconfig's server address "
                f"({KUBECONFIG_FIX} to use another)"
            ) from None
        except ValidationError as error:
            first = error.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise EcomaError(
                f"cannot {operation} {target}: the API server's answer does not fit the "
                f"kubernetes client's model ({error.title}.{field}: {first['msg']}); use a "
                "kubernetes client release that matches the cluster's version"
            ) from None


class _Refused(Exception):  # noqa: N818  (not a failure: an answer the caller expects)
    """An API error the caller handles itself (`allow` of `KubernetesCluster._request`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _kubeconfig_files(path: Path | None) -> str | None:
    """The kubeconfig to load (`KUBECONFIG` may list several files), or None for the in-cluster
    config; `EcomaError` when a named kubeconfig is missing."""
    if path is not None:
        if not path.is_file():
            raise EcomaError(f"kubeconfig {path} does not exist; {KUBECONFIG_FIX}")
        return str(path)
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        files = [f for f in listed.split(os.pathsep) if f]
        if not any(Path(f).expanduser().is_file() for f in files):
            raise EcomaError(
                f"KUBECONFIG={listed}: no such file; point it at the cluster's kubeconfig "
                "or pass --kubeconfig"
            )
        return listed
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return str(default)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    raise EcomaError(
        f"no kubeconfig: {default} does not exist and this is not a pod with a ServiceAccount; "
        f"{KUBECONFIG_FIX}"
    )


def _read_text(api: ApiClient, request: Any, timeout: float) -> str:
    """The body of a raw request as text: 200, or 500 from a readiness check that fails;
    any other status raises the client's `ApiException`."""
    from kubernetes.client import ApiException  # noqa: PLC0415

    method, url, headers, body, post_params = request
    response = api.call_api(method, url, headers, body, post_params, _request_timeout=timeout)
    data = response.read() or b""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    if response.status in (200, 500):
        return text
    raise ApiException(status=response.status, reason=response.reason, body=text)


def _metadata(pod: V1Pod) -> V1ObjectMeta:
    if pod.metadata is None:  # not from a conformant API server
        raise EcomaError("the API server listed a pod without metadata")
    return pod.metadata


def _pod_key(pod: V1Pod) -> str:
    return f"{_metadata(pod).namespace}/{_metadata(pod).name}"


def _evictable(pod: V1Pod) -> bool:
    """Whether a drain evicts `pod`: not a DaemonSet pod, a mirror pod or a finished pod."""
    metadata = _metadata(pod)
    if MIRROR_ANNOTATION in (metadata.annotations or {}):
        return False
    if any(ref.kind == "DaemonSet" and ref.controller for ref in metadata.owner_references or []):
        return False
    return not (pod.status and pod.status.phase in FINISHED_PHASES)


def _api_message(error: ApiException) -> str:
    """The message of the API's `Status` answer (with its causes), else the HTTP reason."""
    try:
        answer = json.loads(error.body or "")
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or not answer.get("message"):
        return str(error.reason or "no message").strip()
    causes = (answer.get("details") or {}).get("causes") or []
    extra = [c["message"] for c in causes if isinstance(c, dict) and c.get("message")]
    return " ".join([answer["message"], *extra])


def _drain_failure(waiting: list[str], blocked: dict[str, str], timeout: float) -> str:
    """Why the pods in `waiting` are still on the node when the drain's time is up."""
    refused = {key: why for key, why in blocked.items() if key in waiting}
    reasons = [
        f"{_refusal_cause(why)} the eviction of {key} ({why})"
        for key, why in sorted(refused.items())
    ]
    terminating = [key for key in waiting if key not in refused]
    if terminating:
        reasons.append(f"{', '.join(terminating)} did not terminate within {timeout:g} s")
    return "; ".join(reasons)


def _refusal_cause(message: str) -> str:
    """Who refused an eviction with HTTP 429: a PodDisruptionBudget, else API rate limiting."""
    if "disruption budget" in message.lower():
        return "a PodDisruptionBudget blocked"
    return "the API server throttled (HTTP 429)"
