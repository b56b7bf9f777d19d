"""A simulated Kubernetes API server for the adapter tests: HTTP on 127.0.0.1, state in memory.

It serves just the endpoints that `ecoma_infra.platforms.kubernetes.KubernetesCluster` uses,
with the JSON shapes of a real API server (objects with kind/apiVersion/metadata, `Status`
objects for errors):

- GET, PATCH (merge and strategic merge) and DELETE `/api/v1/nodes/{name}`;
- GET `/api/v1/pods` and `/api/v1/namespaces/{ns}/pods` with `fieldSelector=spec.nodeName=X`,
  and GET `/api/v1/namespaces/{ns}/pods/{name}`;
- POST `/api/v1/namespaces/{ns}/pods/{name}/eviction`, which honours PodDisruptionBudgets with
  `minAvailable` (429 when evicting would break one) and removes the pod, at once or after it
  was seen in a given number of later reads (graceful termination);
- GET `/readyz?verbose`: the API server's readiness checks as text, `[+]etcd ok` or (HTTP 500)
  `[-]etcd failed: reason withheld`, as a real kube-apiserver prints them.

A Node with finalizers (k3s puts one on etcd servers: its member is removed before the Node
goes) is only marked deleted by a DELETE and disappears after a given number of later reads.

Tests can require a bearer token (401 otherwise), answer chosen (verb, resource) pairs with an
error (`forbid` gives the RBAC 403 of a real server) and read the request log.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

USER = "system:serviceaccount:ecoma-system:burst-controller"
CREATED = "2025-01-01T00:00:00Z"


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    content_type: str | None
    body: Any


@dataclass
class _Error:
    code: int
    reason: str
    message: str


def status(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> dict:
    """A `Status` object as the API server returns it."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "code": code,
    }
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details:
        body["details"] = dict(details)
    return body


def merge_patch(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 merge patch, in place (strategic merge is the same for the fields used here)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = json.loads(json.dumps(value))


@dataclass
class SimulatedApiServer:
    """The server's state and its HTTP front; `start()` binds a free port on 127.0.0.1."""

    token: str | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pdbs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    etcd_healthy: bool = True
    # reads of the pod still to come before a terminating pod is gone
    _terminating: dict[tuple[str, str], int] = field(default_factory=dict)
    # reads of a deleted Node still to come before its finalizers are done
    _finalizing: dict[str, int] = field(default_factory=dict)
    _grace_polls: dict[tuple[str, str], int] = field(default_factory=dict)
    _errors: dict[tuple[str, str], _Error] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Serve in a background thread; the base URL (`http://127.0.0.1:<port>`)."""
        handler = type("Handler", (_Handler,), {"sim": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() first"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- state -------------------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        *,
        ready: bool = True,
        unschedulable: bool = False,
        labels: Mapping[str, str] | None = None,
        version: str = "v1.31.4+k3s1",
        finalizer_reads: int = 0,
    ) -> dict[str, Any]:
        """A Node; with `finalizer_reads`, a DELETE leaves it (marked deleted) for that many
        more reads, as the finalizer of k3s's etcd member controller does."""
        spec: dict[str, Any] = {"podCIDR": "10.42.3.0/24", "providerID": f"k3s://{name}"}
        if unschedulable:
            spec["unschedulable"] = True
        node = {
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": self._metadata(name, None, labels or {"kubernetes.io/hostname": name}),
            "spec": spec,
            "status": {
                "conditions": [
                    _condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                    _condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                    _condition(
                        "Ready",
                        "True" if ready else "Unknown",
                        "KubeletReady" if ready else "NodeStatusUnknown",
                    ),
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "bootID": str(uuid.uuid4()),
                    "containerRuntimeVersion": "containerd://1.7.23-k3s2",
                    "kernelVersion": "6.1.0-28-cloud-amd64",
                    "kubeProxyVersion": "",
                    "kubeletVersion": version,
                    "machineID": uuid.uuid4().hex,
                    "operatingSystem": "linux",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": str(uuid.uuid4()),
                },
            },
        }
        if finalizer_reads:
            node["metadata"]["finalizers"] = ["wrangler.cattle.io/managed-etcd-controller"]
        with self._lock:
            self.nodes[name] = node
            if finalizer_reads:
                self._finalizing[name] = finalizer_reads
            else:
                self._finalizing.pop(name, None)
        return node

    def set_node(self, name: str, *, ready: bool | None = None, version: str | None = None) -> None:
        """What a kubelet reports after a restart: its Ready condition and its version."""
        with self._lock:
            node = self.nodes[name]
            if ready is not None:
                for condition in node["status"]["conditions"]:
                    if condition["type"] == "Ready":
                        condition["status"] = "True" if ready else "Unknown"
            if version is not None:
                node["status"]["nodeInfo"]["kubeletVersion"] = version

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        *,
        labels: Mapping[str, str] | None = None,
        owner_kind: str | None = "ReplicaSet",
        mirror: bool = False,
        phase: str = "Running",
        grace_polls: int = 0,
    ) -> dict[str, Any]:
        """A pod bound to `node`; after an eviction it stays visible for `grace_polls` reads."""
        metadata = self._metadata(name, namespace, labels or {})
        if owner_kind is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": owner_kind,
                    "name": f"{name.rsplit('-', 1)[0]}-owner",
                    "uid": str(uuid.uuid4()),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        if mirror:
            metadata["annotations"] = {"kubernetes.io/config.mirror": uuid.uuid4().hex}
        ready = "True" if phase == "Running" else "False"
        pod = {
            "kind": "Pod",
            "apiVersion": "v1",
            "metadata": metadata,
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "registry.example/app:1"}],
                "terminationGracePeriodSeconds": 30,
            },
            "status": {
                "phase": phase,
                "conditions": [_condition("Ready", ready, "")],
            },
        }
        with self._lock:
            self.pods[namespace, name] = pod
            self._grace_polls[namespace, name] = grace_polls
        return pod

    def add_pdb(
        self, namespace: str, name: str, *, min_available: int, match_labels: Mapping[str, str]
    ) -> None:
        pdb = {
            "kind": "PodDisruptionBudget",
            "apiVersion": "policy/v1",
            "metadata": self._metadata(name, namespace, {}),
            "spec": {
                "minAvailable": min_available,
                "selector": {"matchLabels": dict(match_labels)},
            },
        }
        with self._lock:
            self.pdbs.append(pdb)

    def forbid(self, verb: str, resource: str) -> None:
        """Answer `verb` on `resource` (e.g. "patch", "nodes") with the 403 of missing RBAC."""
        self._errors[verb, resource] = _Error(403, "Forbidden", "")

    def fail(self, verb: str, resource: str, code: int, reason: str, message: str) -> None:
        """Answer `verb` on `resource` with an error `Status`."""
        self._errors[verb, resource] = _Error(code, reason, message)

    def pod_names(self) -> set[str]:
        with self._lock:
            return {f"{ns}/{name}" for ns, name in self.pods}

    def requests_for(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    @staticmethod
    def _metadata(name: str, namespace: str | None, labels: Mapping[str, str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {
            "name": name,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "1000",
            "creationTimestamp": CREATED,
            "labels": dict(labels),
        }
        if namespace is not None:
            metadata["namespace"] = namespace
        return metadata

    # --- request handling (called with the lock held) ----------------------------------------

    def handle(
        self, method: str, path: str, query: Mapping[str, list[str]], headers: Any, body: Any
    ) -> tuple[int, dict[str, Any]]:
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/readyz", self._readyz),
            ("GET", r"/api/v1/nodes/(?P<name>[^/]+)", self._get_node),
            ("PATCH", r"/api/v1/nodes/(?P<name>[^/]+)", self._patch_node),
            ("DELETE", r"/api/v1/nodes/(?P<name>[^/]+)", self._delete_node),
            ("GET", r"/api/v1/pods", self._list_pods),
            ("GET", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods", self._list_pods),
            ("GET", r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)", self._get_pod),
            (
                "POST",
                r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/eviction",
                self._evict,
            ),
        ]
        path_matched = False
        for route_method, pattern, action in routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            path_matched = True
            if route_method == method:
                return action(query=query, headers=headers, body=body, **match.groupdict())
        if path_matched:
            return 405, status(405, "MethodNotAllowed", f"{method} is not supported on {path}")
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def _refused(
        self, verb: str, resource: str, name: str, namespace: str | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        error = self._errors.get((verb, resource))
        if error is None:
            return None
        if error.code == 403:
            base = resource.split("/", 1)[0]
            scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
            subject = f'{base} "{name}"' if name else base
            message = (
                f'{subject} is forbidden: User "{USER}" cannot {verb} resource '
                f'"{resource}" in API group "" {scope}'
            )
            details = {"name": name, "kind": base}
            return 403, status(403, "Forbidden", message, details)
        return error.code, status(error.code, error.reason, error.message)

    def _node_or_404(self, name: str) -> tuple[dict[str, Any] | None, tuple[int, dict[str, Any]]]:
        node = self.nodes.get(name)
        missing = status(
            404, "NotFound", f'nodes "{name}" not found', {"name": name, "kind": "nodes"}
        )
        return node, (404, missing)

    def _get_node(self, *, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("get", "nodes", name):
            return refused
        node, missing = self._node_or_404(name)
        if node is not None and "deletionTimestamp" in node["metadata"]:
            left = self._finalizing.get(name, 0)
            if left <= 0:
                del self.nodes[name]
                return missing
            self._finalizing[name] = left - 1
        return (200, node) if node is not None else missing

    def _readyz(self, *, query: Mapping[str, list[str]], **_: Any) -> tuple[int, Any]:
        etcd = "[+]etcd ok" if self.etcd_healthy else "[-]etcd failed: reason withheld"
        lines = ["[+]ping ok", "[+]log ok", etcd, "[+]informer-sync ok"]
        verdict = "readyz check passed" if self.etcd_healthy else "readyz check failed"
        body = "\n".join([*lines, verdict]) + "\n" if "verbose" in query else "ok"
        return (200 if self.etcd_healthy else 500), _Text(body)

    def _patch_node(self, *, name: str, headers: Any, body: Any, **_: Any) -> tuple[int, dict]:
        if refused := self._refused("patch", "nodes", name):
            return refused
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ):
            message = (
                f'the body of the request was in an unknown format "{content_type}" - accepted '
                "media types include: application/merge-patch+json, "
                "application/strategic-merge-patch+json"
            )
            return 415, status(415, "UnsupportedMediaType", message)
        if not isinstance(body, dict):
            return 400, status(400, "BadRequest", "the patch must be a JSON object")
        node, missing = self._node_or_404(name)
        if node is None:
            return missing
        merge_patch(node, body)
        version = int(node["metadata"]["resourceVersion"]) + 1
        node["metadata"]["resourceVersion"] = str(version)
        return 200, node

    def _delete_node(self, *, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("delete", "nodes", name):
            return refused
        node, missing = self._node_or_404(name)
        if node is None:
            return missing
        details = {"name": name, "kind": "nodes", "uid": node["metadata"]["uid"]}
        if node["metadata"].get("finalizers"):
            node["metadata"]["deletionTimestamp"] = CREATED
            return 200, node
        del self.nodes[name]
        return 200, status(200, "", "", details)

    def _observe_terminations(self) -> None:
        """One read of the pods: a terminating pod with no reads left is gone."""
        for key, left in list(self._terminating.items()):
            if left <= 0:
                del self._terminating[key]
                self.pods.pop(key, None)
            else:
                self._terminating[key] = left - 1

    def _list_pods(
        self, *, query: Mapping[str, list[str]], namespace: str | None = None, **_: Any
    ) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("list", "pods", "", namespace):
            return refused
        node_name: str | None = None
        for selector in query.get("fieldSelector", []):
            for term in filter(None, selector.split(",")):
                key, _sep, value = re.split(r"(==|=)", term, maxsplit=1)
                if key != "spec.nodeName":
                    message = f'"{key}" is not a known field selector: only "spec.nodeName"'
                    return 400, status(400, "BadRequest", message)
                node_name = value
        self._observe_terminations()
        items = [
            pod
            for (ns, _name), pod in sorted(self.pods.items())
            if (namespace is None or ns == namespace)
            and (node_name is None or pod["spec"].get("nodeName") == node_name)
        ]
        return 200, {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "2000"},
            "items": items,
        }

    def _get_pod(self, *, namespace: str, name: str, **_: Any) -> tuple[int, dict[str, Any]]:
        self._observe_terminations()
        pod = self.pods.get((namespace, name))
        if pod is None:
            details = {"name": name, "kind": "pods"}
            return 404, status(404, "NotFound", f'pods "{name}" not found', details)
        return 200, pod

    def _evict(
        self, *, namespace: str, name: str, headers: Any, body: Any, **_: Any
    ) -> tuple[int, dict[str, Any]]:
        if refused := self._refused("create", "pods/eviction", name, namespace):
            return refused
        if invalid := _invalid_eviction(name, headers, body):
            return invalid
        pod = self.pods.get((namespace, name))
        if pod is None:
            details = {"name": name, "kind": "pods"}
            return 404, status(404, "NotFound", f'pods "{name}" not found', details)
        created = status(201, "", "")
        if "deletionTimestamp" in pod["metadata"]:
            return 201, created
        blocking = self._blocking_pdbs(namespace, pod)
        if blocking:
            return 429, status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                {"causes": [{"reason": "DisruptionBudget", "message": blocking}]},
            )
        grace = self._grace_polls.get((namespace, name), 0)
        if grace > 0:
            pod["metadata"]["deletionTimestamp"] = CREATED
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            self._terminating[namespace, name] = grace
        else:
            del self.pods[namespace, name]
        return 201, created

    def _blocking_pdbs(self, namespace: str, pod: dict[str, Any]) -> str:
        """The message of the PDB that evicting `pod` would break; "" when none would."""
        labels = pod["metadata"].get("labels", {})
        for pdb in self.pdbs:
            selector = pdb["spec"]["selector"]["matchLabels"]
            if pdb["metadata"]["namespace"] != namespace or not _matches(labels, selector):
                continue
            healthy = sum(
                1
                for (ns, _name), other in self.pods.items()
                if ns == namespace
                and _matches(other["metadata"].get("labels", {}), selector)
                and _healthy(other)
            )
            needed = pdb["spec"]["minAvailable"]
            if _healthy(pod) and healthy - 1 < needed:
                return (
                    f"The disruption budget {pdb['metadata']['name']} needs {needed} healthy "
                    f"pods and has {healthy} currently"
                )
        return ""


class _Text(str):
    """A plain-text answer (the readiness checks), sent as text/plain."""

    __slots__ = ()


def _invalid_eviction(name: str, headers: Any, body: Any) -> tuple[int, dict[str, Any]] | None:
    """The API server's answer to an Eviction request it cannot take, else None."""
    content_type = (headers.get("Content-Type") or "application/json").split(";")[0].strip()
    if content_type != "application/json":
        message = f'the body of the request was in an unknown format: "{content_type}"'
        return 415, status(415, "UnsupportedMediaType", message)
    if not isinstance(body, dict) or body.get("kind") != "Eviction":
        return 400, status(400, "BadRequest", "the body is not a policy/v1 Eviction")
    if body.get("metadata", {}).get("name") != name:
        message = "name in URL does not match name in Eviction object"
        return 400, status(400, "BadRequest", message)
    return None


def _condition(kind: str, value: str, reason: str) -> dict[str, str]:
    condition = {
        "type": kind,
        "status": value,
        "lastHeartbeatTime": CREATED,
        "lastTransitionTime": CREATED,
    }
    if reason:
        condition["reason"] = reason
    return condition


def _matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _healthy(pod: dict[str, Any]) -> bool:
    if pod["status"].get("phase") != "Running" or "deletionTimestamp" in pod["metadata"]:
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


class _Handler(BaseHTTPRequestHandler):
    sim: SimulatedApiServer
    protocol_version = "HTTP/1.1"
    wbufsize = 64 * 1024  # headers and body in one segment: no delayed-ACK stall per answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read `SimulatedApiServer.requests` instead."""

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            code, text = 400, False
            data = json.dumps(status(code, "BadRequest", "the request body is not JSON")).encode()
        else:
            sim = self.sim
            content_type = self.headers.get("Content-Type")
            with sim._lock:
                sim.requests.append(Request(self.command, url.path, url.query, content_type, body))
                code, answer = sim.handle(
                    self.command, url.path, parse_qs(url.query, keep_blank_values=True),
                    self.headers, body,
                )  # fmt: skip
                # under the lock: `answer` is live state
                text = isinstance(answer, _Text)
                data = answer.encode() if text else json.dumps(answer).encode()
        self.send_response(code)
        kind = "text/plain; charset=utf-8" if text else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_DELETE = do_POST = _serve  # noqa: N815
