"""The tailnet policy as data: tag owners, the exact flows, and everything else denied.

`allowed()` is a small evaluator of the policy's `acls` (Tailscale's semantics: deny by default,
a rule accepts when the source, the protocol and a destination host:port all match). It checks
the flows one by one and runs the policy's own `tests` offline, before Tailscale does.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from ecoma_infra.errors import EcomaError
from ecoma_infra.program.tailnet_policy import ADMIN_GROUP, CI_TAG, tailnet_policy
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import StackConfig

ROOT = Path(__file__).resolve().parents[2]

CPL, OPS, STS, WKR = "tag:ecoma-cpl", "tag:ecoma-ops", "tag:ecoma-sts", "tag:ecoma-wkr"
NODE_TAGS = (CPL, OPS, STS, WKR)
ADMIN = "alice@ecoma.io"
OUTSIDER = "mallory@ecoma.io"


def load(stack: str) -> StackConfig:
    return load_stack_file(ROOT / f"Pulumi.{stack}.yaml").config


@pytest.fixture(params=["staging", "prod"])
def stack(request: pytest.FixtureRequest) -> StackConfig:
    return load(request.param)


def _ports(spec: str) -> set[int] | None:
    """`22`, `2379-2380`, `9100,10250`, `*` (None: every port)."""
    if spec == "*":
        return None
    ports: set[int] = set()
    for part in spec.split(","):
        first, _, last = part.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


def _split(destination: str) -> tuple[str, str]:
    host, _, ports = destination.rpartition(":")
    return host, ports


def _source_matches(policy: dict[str, Any], identity: str, source: str) -> bool:
    if source == identity:
        return True
    return source.startswith("group:") and identity in policy["groups"].get(source, [])


def _host_matches(policy: dict[str, Any], target: str, host: str) -> bool:
    """`target` is a tag, a host alias or an IP; `host` the rule's destination host."""
    if target == host:
        return True
    aliases = policy.get("hosts", {})
    return aliases.get(host) is not None and aliases.get(host) == aliases.get(target, target)


def allowed(policy: dict[str, Any], identity: str, target: str, port: int, proto: str) -> bool:
    for rule in policy["acls"]:
        if rule.get("proto", proto) != proto:
            continue
        if not any(_source_matches(policy, identity, src) for src in rule["src"]):
            continue
        for destination in rule["dst"]:
            host, spec = _split(destination)
            ports = _ports(spec)
            if _host_matches(policy, target, host) and (ports is None or port in ports):
                return True
    return False


def expected_flows(config: StackConfig) -> set[tuple[str, str, str, int]]:
    """(source, destination, proto, port): what the cluster needs, written from the design."""
    servers = [n.name for n in config.nodes if n.role == "cpl"]
    onprem = [n.name for n in config.nodes]
    flannel = {"vxlan": 8472, "wireguard-native": 51820}[config.k3s.flannel_backend]
    flows: set[tuple[str, str, str, int]] = set()
    for src in NODE_TAGS:
        for dst in [CPL, "kube-vip", *servers]:
            flows.add((src, dst, "tcp", 6443))
        for dst in NODE_TAGS:
            flows.add((src, dst, "udp", flannel))
    flows |= {(CPL, CPL, "tcp", 2379), (CPL, CPL, "tcp", 2380)}
    for dst in NODE_TAGS:
        flows |= {(CPL, dst, "tcp", 10250), (OPS, dst, "tcp", 10250), (OPS, dst, "tcp", 9100)}
    for src, dst in product([ADMIN, CI_TAG], [*NODE_TAGS, *onprem]):
        flows.add((src, dst, "tcp", 22))
    for dst in [CPL, "kube-vip", *servers]:  # CI drains burst nodes through the API
        flows.add((CI_TAG, dst, "tcp", 6443))
    # CI's autoscale reads Prometheus on ops; CI's commands push metrics to its Pushgateway.
    flows |= {(CI_TAG, OPS, "tcp", 9090), (CI_TAG, OPS, "tcp", 9091)}
    return flows


PROBE_PORTS = (
    *(22, 80, 443, 2379, 2380, 5001, 6443, 8472, 9090, 9091, 9100, 9345, 10250),
    *(41641, 51820, 27017),
)


def test_every_role_tag_is_owned_by_ci_and_admins(stack: StackConfig):
    policy = tailnet_policy(stack)
    owners = policy["tagOwners"]
    for tag in stack.tailscale.tags.values():
        assert owners[tag] == [CI_TAG, "autogroup:admin"]
    assert owners[CI_TAG] == ["autogroup:admin"]
    used = json.dumps({k: policy[k] for k in ("acls", "autoApprovers", "tests")})
    for token in used.replace('"', " ").replace(",", " ").split():
        if token.startswith("tag:"):
            assert token.rsplit(":", 1)[0] in owners or token in owners, token


def test_no_rule_has_a_wildcard_source_or_destination(stack: StackConfig):
    policy = tailnet_policy(stack)
    for rule in policy["acls"]:
        assert rule["action"] == "accept"
        assert rule["proto"] in ("tcp", "udp")
        assert "*" not in rule["src"]
        for destination in rule["dst"]:
            host, ports = _split(destination)
            assert "*" not in host
            assert ports != "*"
            assert not host.startswith("autogroup:")
    assert "grants" not in policy
    assert "*" not in json.dumps(policy)


def test_exactly_the_intended_flows_are_allowed(stack: StackConfig):
    policy = tailnet_policy(stack, admins=[ADMIN])
    expected = expected_flows(stack)
    identities = [*NODE_TAGS, CI_TAG, ADMIN, OUTSIDER]
    targets = [*NODE_TAGS, CI_TAG, *policy["hosts"], str(stack.network.sdn_gateway), "10.42.0.5"]
    for identity, target, proto, port in product(identities, targets, ("tcp", "udp"), PROBE_PORTS):
        flow = (identity, target, proto, port)
        assert allowed(policy, *flow[:2], port, proto) is (flow in expected), flow


def test_servers_and_the_vip_are_reached_at_their_sdn_addresses(stack: StackConfig):
    hosts = tailnet_policy(stack)["hosts"]
    assert hosts["kube-vip"] == str(stack.network.kube_vip)
    for node in stack.nodes:
        assert hosts[node.name] == str(node.ip)
        assert hosts[node.name] in {str(ip) for ip in stack.network.sdn_subnet.hosts()}


def test_wkr_cannot_ssh_to_cpl_and_admins_and_ci_can(stack: StackConfig):
    policy = tailnet_policy(stack, admins=[ADMIN])
    assert not allowed(policy, WKR, CPL, 22, "tcp")
    assert not allowed(policy, WKR, "cpl-1", 22, "tcp")
    assert not allowed(policy, OUTSIDER, CPL, 22, "tcp")
    assert allowed(policy, ADMIN, CPL, 22, "tcp")
    assert allowed(policy, ADMIN, "cpl-1", 22, "tcp")
    assert allowed(policy, CI_TAG, WKR, 22, "tcp")
    assert not allowed(policy, WKR, CPL, 2379, "tcp")
    assert not allowed(policy, WKR, CPL, 9345, "tcp")


def test_the_sdn_subnet_is_auto_approved_for_the_routers_tags(stack: StackConfig):
    policy = tailnet_policy(stack)
    roles = {n.name: n.role for n in stack.nodes}
    router_tags = sorted({stack.tailscale.tags[roles[r]] for r in stack.tailscale.subnet_routers})
    assert policy["autoApprovers"] == {"routes": {str(stack.network.sdn_subnet): router_tags}}
    assert router_tags == [CPL]


def test_admin_group_comes_from_the_argument():
    config = load("prod")
    assert tailnet_policy(config)["groups"] == {ADMIN_GROUP: []}
    policy = tailnet_policy(config, admins=[ADMIN])
    assert policy["groups"] == {ADMIN_GROUP: [ADMIN]}
    assert any(test["src"] == ADMIN for test in policy["tests"])


def test_the_policys_own_tests_hold(stack: StackConfig):
    policy = tailnet_policy(stack, admins=[ADMIN])
    tests = policy["tests"]
    assert {t["src"] for t in tests} >= {WKR, CPL, CI_TAG, ADMIN}
    wkr_denied = {d for t in tests if t["src"] == WKR for d in t.get("deny", [])}
    assert f"{CPL}:22" in wkr_denied
    # Tailscale checks CI's path to Prometheus and the Pushgateway on ops, and no further.
    ci_accepted = {a for t in tests if t["src"] == CI_TAG for a in t.get("accept", [])}
    ci_denied = {d for t in tests if t["src"] == CI_TAG for d in t.get("deny", [])}
    assert {f"{OPS}:9090", f"{OPS}:9091"} <= ci_accepted
    assert {f"{WKR}:9090", f"{OPS}:9100"} <= ci_denied
    for test in tests:
        for kind, want in (("accept", True), ("deny", False)):
            for destination in test.get(kind, []):
                host, port = _split(destination)
                assert allowed(policy, test["src"], host, int(port), test["proto"]) is want, (
                    test["src"],
                    destination,
                )


def test_wireguard_native_swaps_the_flannel_port():
    config = load("prod")
    wireguard = config.model_copy(
        update={"k3s": config.k3s.model_copy(update={"flannel_backend": "wireguard-native"})}
    )
    policy = tailnet_policy(wireguard)
    assert allowed(policy, WKR, STS, 51820, "udp")
    assert not allowed(policy, WKR, STS, 8472, "udp")


def test_host_gw_cannot_cross_the_overlay():
    config = load("prod")
    host_gw = config.model_copy(
        update={"k3s": config.k3s.model_copy(update={"flannel_backend": "host-gw"})}
    )
    with pytest.raises(EcomaError, match=r"ecoma:k3s.flannel_backend: 'host-gw'"):
        tailnet_policy(host_gw)


def test_the_policy_is_plain_json(stack: StackConfig):
    policy = tailnet_policy(stack)
    assert json.loads(json.dumps(policy)) == policy
    assert set(policy) == {"tagOwners", "groups", "hosts", "acls", "autoApprovers", "tests"}
