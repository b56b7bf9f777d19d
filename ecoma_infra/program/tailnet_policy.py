"""The tailnet policy file as code: who owns which tag, and the only flows the cluster needs.

Tailscale denies everything that no rule accepts, so the `acls` below are the whole list of what
may cross the overlay:

- k3s API/supervisor, tcp 6443, from every node to the servers: their Tailscale addresses, their
  SDN addresses and the kube-vip VIP (cloud workers reach the last two through the subnet
  routers). k3s serves its supervisor on 6443 too; 9345 is RKE2's port and stays closed.
- embedded etcd, tcp 2379-2380, between servers.
- kubelet, tcp 10250, from the servers to every node (logs, exec, port-forward, metrics).
- flannel between every pair of nodes: udp 8472 (vxlan) or udp 51820 (wireguard-native).
  Flannel runs over `tailscale0`, so pod and service traffic travels inside these packets; the
  pod and service CIDRs never need a rule of their own.
- metrics, tcp 9100 (node exporter) and 10250 (kubelet/cAdvisor), from ops (Prometheus) to every
  node: burst decisions are metrics-driven, and a cloud worker is reachable only over the overlay.
- SSH, tcp 22, from the admin group and from CI (`ecoma-infra configure` runs Ansible from CI)
  to every node, by Tailscale address and, on-prem, by SDN address (the inventory's
  `ansible_host`).
- the Kubernetes API, tcp 6443, from CI to the servers and the VIP: `burst`, `reap` and `drill`
  cordon, drain and delete burst nodes with a drain-only ServiceAccount.
- Prometheus, tcp 9090, and its Pushgateway, tcp 9091, on the ops nodes, from CI: the scheduled
  `autoscale` reads the load there, and burst, reap, autoscale and drill push their metrics
  (`ECOMA_PUSHGATEWAY`), which the burst alerts read.

`autoApprovers` lets the subnet routers' tags advertise the SDN subnet; `tests` are checked by
Tailscale before the policy is applied, so a rule that opens too much fails `pulumi up`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.model import ROLES, Role, StackConfig

# The tag of CI's OAuth client (and of CI's ephemeral tailnet node): it owns every role tag, so
# the program can mint role-tagged auth keys with it.
CI_TAG = "tag:ecoma-ci"
# People who may log in to the machines. Members are e-mail addresses of the tailnet's users.
ADMIN_GROUP = "group:ecoma-admins"
ADMIN_MEMBERS: tuple[str, ...] = ()
TAG_ADMINS = "autogroup:admin"

VIP_HOST = "kube-vip"
SSH_PORT = 22
K3S_API_PORT = 6443
ETCD_PORTS = "2379-2380"
KUBELET_PORT = 10250
NODE_EXPORTER_PORT = 9100
PROMETHEUS_PORT = 9090
PUSHGATEWAY_PORT = 9091
FLANNEL_PORTS = {"vxlan": 8472, "wireguard-native": 51820}


def _rule(src: Sequence[str], proto: str, dst: Sequence[str]) -> dict[str, Any]:
    return {"action": "accept", "src": list(src), "proto": proto, "dst": list(dst)}


def _at(hosts: Sequence[str], ports: int | str) -> list[str]:
    return [f"{host}:{ports}" for host in hosts]


def tailnet_policy(config: StackConfig, *, admins: Sequence[str] = ADMIN_MEMBERS) -> dict[str, Any]:
    """The whole policy file (`tailscale.Acl(acl=json.dumps(...))` replaces the tailnet's)."""
    backend = config.k3s.flannel_backend
    if backend not in FLANNEL_PORTS:
        raise EcomaError(
            f"ecoma:k3s.flannel_backend: {backend!r} routes pod CIDRs between nodes, which the "
            "Tailscale overlay cannot carry (no shared L2, no per-node pod routes). "
            "Fix: use vxlan or wireguard-native"
        )
    tags: dict[Role, str] = {role: config.tailscale.tags[role] for role in ROLES}
    node_tags = sorted(set(tags.values()))
    cpl = tags["cpl"]
    servers = sorted(n.name for n in config.nodes_with_role("cpl"))
    onprem = sorted(n.name for n in config.nodes if n.provider == "proxmox")
    hosts = {VIP_HOST: str(config.network.kube_vip)}
    hosts.update({n.name: str(n.ip) for n in config.nodes if n.name in onprem})
    routers = {n.name: n.role for n in config.nodes if n.name in config.tailscale.subnet_routers}
    router_tags = sorted({tags[role] for role in routers.values()})
    flannel = FLANNEL_PORTS[backend]
    api_targets = [cpl, VIP_HOST, *servers]
    ssh_targets = [*node_tags, *onprem]
    metrics = f"{NODE_EXPORTER_PORT},{KUBELET_PORT}"

    acls = [
        _rule(node_tags, "tcp", _at(api_targets, K3S_API_PORT)),
        _rule([cpl], "tcp", _at([cpl], ETCD_PORTS)),
        _rule([cpl], "tcp", _at(node_tags, KUBELET_PORT)),
        _rule(node_tags, "udp", _at(node_tags, flannel)),
        _rule([tags["ops"]], "tcp", _at(node_tags, metrics)),
        _rule([ADMIN_GROUP, CI_TAG], "tcp", _at(ssh_targets, SSH_PORT)),
        _rule([CI_TAG], "tcp", _at(api_targets, K3S_API_PORT)),
        _rule([CI_TAG], "tcp", _at([tags["ops"]], f"{PROMETHEUS_PORT},{PUSHGATEWAY_PORT}")),
    ]

    wkr, sts = tags["wkr"], tags["sts"]
    first_server = servers[0] if servers else VIP_HOST
    tests: list[dict[str, Any]] = [
        {
            "src": wkr,
            "proto": "tcp",
            "accept": _at([cpl, VIP_HOST, first_server], K3S_API_PORT),
            "deny": [
                *_at([cpl, first_server, sts, VIP_HOST], SSH_PORT),
                f"{cpl}:2379",
                f"{cpl}:9345",
                f"{sts}:{KUBELET_PORT}",
                f"{config.network.sdn_gateway!s}:{SSH_PORT}",
            ],
        },
        {"src": wkr, "proto": "udp", "accept": _at([cpl, sts, wkr], flannel)},
        {
            "src": cpl,
            "proto": "tcp",
            "accept": [f"{cpl}:2379", f"{cpl}:2380", *_at([wkr, sts], KUBELET_PORT)],
            "deny": _at([wkr, sts], SSH_PORT),
        },
        {
            "src": CI_TAG,
            "proto": "tcp",
            "accept": [
                *_at([cpl, wkr, first_server], SSH_PORT),
                *_at([cpl, VIP_HOST], K3S_API_PORT),
                *_at([tags["ops"]], PROMETHEUS_PORT),
                *_at([tags["ops"]], PUSHGATEWAY_PORT),
            ],
            "deny": [
                f"{cpl}:2379",
                f"{wkr}:{KUBELET_PORT}",
                f"{wkr}:{K3S_API_PORT}",
                f"{wkr}:{PROMETHEUS_PORT}",
                f"{tags['ops']}:{NODE_EXPORTER_PORT}",
            ],
        },
    ]
    members = sorted(admins)
    if members:
        tests.append(
            {
                "src": members[0],
                "proto": "tcp",
                "accept": _at([cpl, wkr, first_server], SSH_PORT),
                "deny": [f"{cpl}:2379", f"{wkr}:{KUBELET_PORT}"],
            }
        )

    return {
        "tagOwners": {
            CI_TAG: [TAG_ADMINS],
            **{tag: [CI_TAG, TAG_ADMINS] for tag in node_tags},
        },
        "groups": {ADMIN_GROUP: members},
        "hosts": hosts,
        "acls": acls,
        "autoApprovers": {"routes": {str(config.network.sdn_subnet): router_tags}},
        "tests": tests,
    }
