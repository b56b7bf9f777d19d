"""The stack config model and its rules: every rule has an invalid config that trips it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ecoma_infra.cli.main import main
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file, parse_stack_config
from ecoma_infra.stack.model import duration_seconds, json_schema, split_namespace

ROOT = Path(__file__).resolve().parents[2]


def stack_values(stack: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    values, _ = split_namespace(document["config"])
    return values


def node(values: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in values["nodes"] if n["name"] == name)


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """A mutation setting `a.b.c` (list items by node name: `nodes.cpl-1.ip`)."""

    def apply(values: dict[str, Any]) -> None:
        target: Any = values
        *parents, last = path.split(".")
        for part in parents:
            if isinstance(target, list):
                target = next(item for item in target if item.get("name") == part)
            else:
                target = target.setdefault(part, {})
        target[last] = value

    return apply


def _add_node(**fields: Any) -> Mutation:
    def apply(values: dict[str, Any]) -> None:
        base = copy.deepcopy(node(values, "wkr-1"))
        base.update(fields)
        values["nodes"].append(base)

    return apply


def _many(*mutations: Mutation) -> Mutation:
    def apply(values: dict[str, Any]) -> None:
        for mutation in mutations:
            mutation(values)

    return apply


OS_HOT = {"tier": "hot", "size_gb": 32, "os": True}

# (id, stack, mutation, where, words the message must contain)
INVALID: list[tuple[str, str, Mutation, str, str]] = [
    (
        "unknown-field",
        "staging",
        _set("nodes.cpl-1.colour", "red"),
        "ecoma:nodes[cpl-1].colour",
        "unknown field",
    ),
    ("unknown-top-level-key", "staging", _set("extras", {}), "ecoma:extras", "unknown field"),
    (
        "bad-role",
        "staging",
        _set("nodes.cpl-1.role", "master"),
        "ecoma:nodes[cpl-1].role",
        "'cpl', 'ops', 'sts' or 'wkr'",
    ),
    (
        "bad-provider",
        "staging",
        _set("nodes.wkr-1.provider", "azure"),
        "ecoma:nodes[wkr-1].provider",
        "'proxmox', 'aws', 'gcp' or 'oci'",
    ),
    (
        "cpl-on-cloud",
        "staging",
        _set("nodes.cpl-1.provider", "aws"),
        "ecoma:nodes[cpl-1].provider",
        "role cpl runs only on proxmox",
    ),
    (
        "ops-on-cloud",
        "staging",
        _set("nodes.ops-1.provider", "gcp"),
        "ecoma:nodes[ops-1].provider",
        "role ops runs only on proxmox",
    ),
    (
        "sts-on-cloud",
        "staging",
        _set("nodes.sts-1.provider", "oci"),
        "ecoma:nodes[sts-1].provider",
        "role sts runs only on proxmox",
    ),
    (
        "static-cloud-worker",
        "staging",
        _set("nodes.wkr-1.provider", "aws"),
        "ecoma:nodes[wkr-1].provider",
        "cloud workers are ephemeral burst nodes",
    ),
    (
        "even-cpl-count",
        "staging",
        _add_node(name="cpl-2", role="cpl", vm_id=4102, ip="10.41.1.12"),
        "ecoma:nodes",
        "2 cpl nodes; etcd needs an odd number",
    ),
    ("no-cpl", "staging", _set("nodes.cpl-1.role", "wkr"), "ecoma:nodes", "0 cpl nodes"),
    (
        "no-os-disk",
        "staging",
        _set("nodes.cpl-1.disks", [{"tier": "hot", "size_gb": 10}]),
        "ecoma:nodes[cpl-1].disks",
        "no OS disk",
    ),
    (
        "two-os-disks",
        "staging",
        _set("nodes.cpl-1.disks", [OS_HOT, {"tier": "warm", "size_gb": 10, "os": True}]),
        "ecoma:nodes[cpl-1].disks",
        "2 OS disks",
    ),
    (
        "two-disks-one-tier",
        "staging",
        _set("nodes.cpl-1.disks", [OS_HOT, {"tier": "hot", "size_gb": 10}]),
        "ecoma:nodes[cpl-1].disks",
        "2 disks have tier 'hot'",
    ),
    (
        "five-disks",
        "staging",
        _set(
            "nodes.cpl-1.disks",
            [OS_HOT, *({"tier": t, "size_gb": 5} for t in ("swap", "warm", "cold", "cold"))],
        ),
        "ecoma:nodes[cpl-1].disks",
        "5 disks, at most 4",
    ),
    (
        "os-disk-swap",
        "staging",
        _set(
            "nodes.cpl-1.disks",
            [{"tier": "swap", "size_gb": 10, "os": True}, {"tier": "hot", "size_gb": 10}],
        ),
        "ecoma:nodes[cpl-1].disks[0].tier",
        "the OS disk cannot be the swap tier",
    ),
    (
        "no-data-tier",
        "staging",
        _set("nodes.wkr-1.disks", [{"tier": "swap", "size_gb": 10, "os": True}]),
        "ecoma:nodes[wkr-1].disks",
        "no hot, warm or cold disk",
    ),
    (
        "bad-tier",
        "staging",
        _set("nodes.cpl-1.disks", [{"tier": "lukewarm", "size_gb": 10, "os": True}]),
        "ecoma:nodes[cpl-1].disks[0].tier",
        "'swap', 'hot', 'warm' or 'cold'",
    ),
    (
        "filesystem-on-swap",
        "staging",
        _set("nodes.wkr-1.disks", [OS_HOT, {"tier": "swap", "size_gb": 4, "filesystem": "ext4"}]),
        "ecoma:nodes[wkr-1].disks[1].filesystem",
        "cannot be chosen for a swap disk",
    ),
    (
        "zero-size-disk",
        "staging",
        _set("nodes.cpl-1.disks", [{**OS_HOT, "size_gb": 0}]),
        "ecoma:nodes[cpl-1].disks[0].size_gb",
        "greater than or equal to 1",
    ),
    (
        "name-not-dns",
        "staging",
        _set("nodes.cpl-1.name", "CPL_1"),
        "ecoma:nodes[CPL_1].name",
        "'CPL_1' is not valid",
    ),
    (
        "name-too-long",
        "staging",
        _set("nodes.cpl-1.name", "c" * 64),
        f"ecoma:nodes[{'c' * 64}].name",
        "is not valid",
    ),
    (
        "duplicate-name",
        "staging",
        _set("nodes.wkr-1.name", "ops-1"),
        "ecoma:nodes[ops-1].name",
        "name used by more than one node",
    ),
    (
        "burst-name-taken",
        "staging",
        _set("nodes.wkr-1.name", "wkr-aws-1"),
        "ecoma:nodes[wkr-aws-1].name",
        "reserved for a burst node",
    ),
    (
        "duplicate-vm-id",
        "staging",
        _set("nodes.wkr-1.vm_id", 4101),
        "ecoma:nodes[cpl-1, wkr-1].vm_id",
        "VM id 4101 used by cpl-1, wkr-1",
    ),
    (
        "template-vm-id",
        "staging",
        _set("nodes.wkr-1.vm_id", 9000),
        "ecoma:nodes[wkr-1].vm_id",
        "VM id 9000 is the Debian 12 template",
    ),
    (
        "unknown-hypervisor",
        "staging",
        _set("nodes.wkr-1.hypervisor", "pve-x"),
        "ecoma:nodes[wkr-1].hypervisor",
        "'pve-x' is not one of ecoma:proxmox.hypervisors",
    ),
    (
        "no-datastore-for-tier",
        "staging",
        _set("proxmox.datastores", {"hot": "local-lvm"}),
        "ecoma:nodes[ops-1].disks[0].tier",
        "no datastore for tier 'warm'",
    ),
    (
        "duplicate-ip",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.11"),
        "ecoma:nodes[cpl-1, wkr-1].ip",
        "IP 10.41.1.11 used by cpl-1, wkr-1",
    ),
    (
        "ip-outside-sdn",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.2.5"),
        "ecoma:nodes[wkr-1].ip",
        "outside the SDN subnet 10.41.1.0/24",
    ),
    (
        "ip-is-gateway",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.1"),
        "ecoma:nodes[wkr-1].ip",
        "is the SDN gateway, reserved",
    ),
    (
        "ip-is-vip",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.254"),
        "ecoma:nodes[wkr-1].ip",
        "is the kube-vip address, reserved",
    ),
    (
        "ip-is-network",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.0"),
        "ecoma:nodes[wkr-1].ip",
        "is the network address, reserved",
    ),
    (
        "ip-is-broadcast",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.255"),
        "ecoma:nodes[wkr-1].ip",
        "is the broadcast address, reserved",
    ),
    (
        "not-an-ip",
        "staging",
        _set("nodes.wkr-1.ip", "10.41.1.300"),
        "ecoma:nodes[wkr-1].ip",
        "valid IPv4 address",
    ),
    (
        "network-host-bits",
        "staging",
        _set("network.sdn_subnet", "10.41.1.5/24"),
        "ecoma:network.sdn_subnet",
        "valid IPv4 network",
    ),
    (
        "coredns-outside-services",
        "staging",
        _set("network.coredns_ip", "10.42.0.10"),
        "ecoma:network.coredns_ip",
        "10.42.0.10 is outside service_cidr 10.43.0.0/16",
    ),
    (
        "nodelocal-outside-link-local",
        "staging",
        _set("network.node_local_dns_ip", "10.0.0.10"),
        "ecoma:network.node_local_dns_ip",
        "outside link_local_cidr",
    ),
    (
        "vip-outside-sdn",
        "staging",
        _set("network.kube_vip", "10.41.2.254"),
        "ecoma:network.kube_vip",
        "outside sdn_subnet",
    ),
    (
        "gateway-outside-sdn",
        "staging",
        _set("network.sdn_gateway", "10.40.1.1"),
        "ecoma:network.sdn_gateway",
        "outside sdn_subnet",
    ),
    (
        "vip-is-broadcast",
        "staging",
        _set("network.kube_vip", "10.41.1.255"),
        "ecoma:network.kube_vip",
        "network or broadcast address",
    ),
    (
        "vip-equals-gateway",
        "staging",
        _set("network.kube_vip", "10.41.1.1"),
        "ecoma:network.kube_vip",
        "the VIP equals the SDN gateway",
    ),
    (
        "pods-overlap-services",
        "staging",
        _set("network.pod_cidr", "10.43.0.0/17"),
        "ecoma:network.service_cidr",
        "10.43.0.0/16 overlaps ecoma:network.pod_cidr",
    ),
    (
        "sdn-overlaps-pods",
        "staging",
        _set("network.sdn_subnet", "10.42.1.0/24"),
        "ecoma:network.sdn_subnet",
        "overlaps ecoma:network.pod_cidr",
    ),
    (
        "vpc-overlaps-sdn",
        "staging",
        _set("burst.aws.vpc_cidr", "10.41.0.0/16"),
        "ecoma:burst.aws.vpc_cidr",
        "10.41.0.0/16 overlaps ecoma:network.sdn_subnet",
    ),
    (
        "vpc-overlaps-tailscale",
        "staging",
        _set("burst.gcp.vpc_cidr", "100.100.0.0/16"),
        "ecoma:burst.gcp.vpc_cidr",
        "overlaps ecoma:network.tailscale_cidr",
    ),
    (
        "vpcs-overlap",
        "staging",
        _set("burst.oci.vpc_cidr", "10.60.0.0/16"),
        "ecoma:burst.oci.vpc_cidr",
        "overlaps ecoma:burst.aws.vpc_cidr",
    ),
    (
        "subnet-outside-vpc",
        "staging",
        _set("burst.aws.subnet_cidr", "10.70.1.0/24"),
        "ecoma:burst.aws.subnet_cidr",
        "is not inside vpc_cidr 10.60.0.0/16",
    ),
    (
        "burst-count-above-max",
        "staging",
        _set("burst.aws.count", 3),
        "ecoma:burst.aws.count",
        "count 3 is above the pool's max 2",
    ),
    (
        "burst-count-negative",
        "staging",
        _set("burst.gcp.count", -1),
        "ecoma:burst.gcp.count",
        "greater than or equal to 0",
    ),
    (
        "burst-ttl-zero",
        "staging",
        _set("burst.aws.ttl", "0h"),
        "ecoma:burst.aws.ttl",
        "'0h' is not valid",
    ),
    (
        "burst-ttl-negative",
        "staging",
        _set("burst.oci.ttl", "-4h"),
        "ecoma:burst.oci.ttl",
        "'-4h' is not valid",
    ),
    (
        "burst-over-budget",
        "prod",
        _many(
            _set("burst.aws.count", 10), _set("burst.gcp.count", 10), _set("burst.oci.count", 10)
        ),
        "ecoma:burst.budget_usd_per_hour",
        # 10 x (0.23 + 0.226 + 0.17) + the AWS pool's NAT gateway (0.057)
        "the pools cost 6.32 USD/h, above the budget of 6.00 USD/h",
    ),
    (
        "lease-for-missing-node",
        "staging",
        _set("burst.aws.expires_at", {"wkr-aws-1": "2026-11-26T12:00:00Z"}),
        "ecoma:burst.aws.expires_at",
        "1 nodes have leases but count is 0",
    ),
    (
        "lease-of-another-pool",
        "staging",
        _many(
            _set("burst.aws.count", 1),
            _set("burst.aws.expires_at", {"wkr-gcp-1": "2026-11-26T12:00:00Z"}),
        ),
        "ecoma:burst.aws.expires_at.wkr-gcp-1",
        "'wkr-gcp-1' is not a node name of this pool (wkr-aws-1 .. wkr-aws-2)",
    ),
    (
        "lease-beyond-max",
        "staging",
        _many(
            _set("burst.aws.count", 1),
            _set("burst.aws.launched_at", {"wkr-aws-3": "2026-11-26T12:00:00Z"}),
        ),
        "ecoma:burst.aws.launched_at.wkr-aws-3",
        "'wkr-aws-3' is not a node name of this pool (wkr-aws-1 .. wkr-aws-2)",
    ),
    (
        "oci-volume-too-small",
        "staging",
        _set("burst.oci.disks", [{"tier": "hot", "size_gb": 40, "os": True}]),
        "ecoma:burst.oci.disks[0].size_gb",
        "40 GB is below OCI's smallest volume (50 GB)",
    ),
    (
        "burst-pool-disks",
        "staging",
        _set("burst.gcp.disks", [OS_HOT, {"tier": "hot", "size_gb": 10}]),
        "ecoma:burst.gcp.disks",
        "2 disks have tier 'hot'",
    ),
    (
        "router-not-a-node",
        "staging",
        _set("tailscale.subnet_routers", ["cpl-9"]),
        "ecoma:tailscale.subnet_routers",
        "'cpl-9' is not a node",
    ),
    (
        "tag-without-prefix",
        "staging",
        _set("tailscale.tags", {"cpl": "ecoma-cpl"}),
        "ecoma:tailscale.tags.cpl",
        "'ecoma-cpl' is not valid",
    ),
    (
        "tag-missing-role",
        "staging",
        _set("tailscale.tags", {"cpl": "tag:ecoma-cpl"}),
        "ecoma:tailscale.tags",
        "no tag for role ops, sts, wkr",
    ),
    (
        "tag-shared",
        "staging",
        _set("tailscale.tags", {"cpl": "tag:a", "ops": "tag:a", "sts": "tag:b", "wkr": "tag:c"}),
        "ecoma:tailscale.tags",
        "tag tag:a is shared by several roles",
    ),
    (
        "bad-k3s-version",
        "staging",
        _set("k3s.version", "1.31"),
        "ecoma:k3s.version",
        "'1.31' is not valid",
    ),
    (
        "missing-section",
        "staging",
        lambda v: v.pop("k3s"),
        "ecoma:k3s",
        "required field is missing",
    ),
    (
        "bad-ssh-key",
        "staging",
        _set("ssh.authorized_keys", ["hunter2"]),
        "ecoma:ssh.authorized_keys[0]",
        "'hunter2' is not valid",
    ),
    (
        "proxmox-http-endpoint",
        "staging",
        _set("proxmox.endpoint", "http://pve:8006"),
        "ecoma:proxmox.endpoint",
        "is not valid",
    ),
]


@pytest.mark.parametrize(
    ("stack", "mutation", "where", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in INVALID],
)
def test_each_rule_rejects_its_invalid_config(
    stack: str, mutation: Mutation, where: str, words: str
) -> None:
    values = stack_values(stack)
    mutation(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, f"Pulumi.{stack}.yaml")
    matching = [i for i in caught.value.issues if i.where == where and words in i.message]
    assert matching, f"no issue at {where} containing {words!r}: {caught.value}"
    assert all(issue.fix for issue in caught.value.issues)
    assert f"Pulumi.{stack}.yaml: {where}: " in str(caught.value)


def test_there_are_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_example_stacks_are_valid(stack: str) -> None:
    loaded = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    assert loaded.config.proxmox.template_vm_id == 9000
    assert str(loaded.config.network.kube_vip) == "10.41.1.254"


def test_prod_has_the_promised_shape() -> None:
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    counts = {role: len(config.nodes_with_role(role)) for role in ("cpl", "ops", "sts")}
    assert counts == {"cpl": 3, "ops": 2, "sts": 3}
    assert len(config.nodes_with_role("wkr")) >= 2
    assert set(config.burst.pools()) == {"aws", "gcp", "oci"}
    assert all(pool.max > 0 for pool in config.burst.pools().values())


def test_staging_is_all_on_prem_with_idle_pools() -> None:
    config = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    assert all(node.provider == "proxmox" for node in config.nodes)
    assert all(pool.count == 0 for pool in config.burst.pools().values())


def test_all_errors_are_reported_together() -> None:
    values = stack_values("staging")
    _set("nodes.wkr-1.ip", "10.41.1.1")(values)
    _set("burst.aws.count", 9)(values)
    _set("nodes.ops-1.hypervisor", "nope")(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, "Pulumi.staging.yaml")
    assert {i.where for i in caught.value.issues} >= {
        "ecoma:nodes[wkr-1].ip",
        "ecoma:burst.aws.count",
        "ecoma:nodes[ops-1].hypervisor",
    }


def test_type_errors_in_several_nodes_are_reported_together() -> None:
    values = stack_values("staging")
    _set("nodes.wkr-1.role", "boss")(values)
    _set("nodes.cpl-1.cpu_cores", 0)(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, "Pulumi.staging.yaml")
    assert {i.where for i in caught.value.issues} == {
        "ecoma:nodes[wkr-1].role",
        "ecoma:nodes[cpl-1].cpu_cores",
    }


def test_unknown_field_lists_the_allowed_ones() -> None:
    values = stack_values("staging")
    _set("nodes.cpl-1.ipaddr", "10.41.1.11")(values)
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(values, "Pulumi.staging.yaml")
    (issue,) = caught.value.issues
    assert "hypervisor, vm_id, ip" in issue.fix


def write_stack(
    tmp_path: Path, values: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    config = {f"ecoma:{key}": value for key, value in values.items()}
    config.update(extra or {})
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": config}))
    return path


def test_plain_text_secret_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    path = write_stack(tmp_path, stack_values("staging"), {"ecoma:k3s_token": "K10abc::s:x"})
    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)
    (issue,) = caught.value.issues
    assert issue.where == "ecoma:k3s_token"
    assert "plain text" in issue.message
    assert "pulumi config set --secret ecoma:k3s_token" in issue.fix
    assert "K10abc" not in str(caught.value)


def test_missing_secrets_fail_only_when_required(tmp_path: Path) -> None:
    path = write_stack(tmp_path, stack_values("staging"), {"ecoma:k3s_token": {"secure": "v1:abc"}})
    loaded = load_stack_file(path)
    assert "ecoma:k3s_agent_token" in loaded.notices[0]
    assert "ecoma:k3s_token," not in loaded.notices[0]
    with pytest.raises(ConfigError) as caught:
        load_stack_file(path, require_secrets=True)
    assert "ecoma:k3s_agent_token" in {i.where for i in caught.value.issues}


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text("config:\n  ecoma:nodes: [\n")
    with pytest.raises(ConfigError, match=r"YAML \(line 3"):
        load_stack_file(path)


def test_other_namespaces_are_left_alone() -> None:
    values, secrets = split_namespace({"aws:region": "x", "ecoma:k3s": {}, "ecoma:k3s_token": 1})
    assert values == {"k3s": {}}
    assert secrets == {"k3s_token": 1}


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("4h", 14400), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


def test_cli_validate_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["validate", "--file", str(ROOT / "Pulumi.prod.yaml")]) == 0
    assert "valid: 12 on-prem nodes (3 cpl, 2 ops, 3 sts, 4 wkr)" in capsys.readouterr().out
    values = stack_values("staging")
    _set("nodes.wkr-1.ip", "10.41.1.254")(values)
    assert main(["validate", "--file", str(write_stack(tmp_path, values))]) == 1
    assert "ecoma:nodes[wkr-1].ip: 10.41.1.254 is the kube-vip address" in capsys.readouterr().err
    assert main(["validate", "--file", str(tmp_path / "missing.yaml")]) == 2
    # No stack named, none in PULUMI_STACK, none selected with `pulumi stack select`.
    monkeypatch.delenv("PULUMI_STACK", raising=False)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    assert main(["validate"]) == 2


def test_cli_validate_by_stack_name_reads_the_project_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(ROOT / "ecoma_infra")
    assert main(["validate", "--stack", "staging"]) == 0
    assert "Pulumi.staging.yaml" in capsys.readouterr().out


def test_schema_is_generated_from_the_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(json_schema()))
    config = printed["properties"]["config"]
    assert {"ecoma:nodes", "ecoma:burst", "ecoma:k3s_token"} <= set(config["properties"])
    assert printed["$defs"]["Node"]["additionalProperties"] is False


def test_example_stacks_match_the_schema() -> None:
    schema = json_schema()
    for stack in ("staging", "prod"):
        document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
        jsonschema.validate(json.loads(json.dumps(document, default=str)), schema)
