"""The real Pulumi program under the real SDK with a mock engine (simulated: no cloud, no CLI).

`run_offline` resets the SDK's settings before and after each run, so no test leaks resources
or the root stack into another.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import settings
from stacks import stack_variant

from ecoma_infra.program.cloudinit import render_user_data
from ecoma_infra.program.inventory import inventory_hosts
from ecoma_infra.program.offline import REDACTED, OfflineMocks, PreviewResult, Recorded, run_offline
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import required_secrets

ROOT = Path(__file__).resolve().parents[2]
VM = "proxmoxve:index/vmLegacy:VmLegacy"
KEY = "tailscale:index/tailnetKey:TailnetKey"


def without_pools(config: dict[str, Any]) -> None:
    config["ecoma:burst"] = {"budget_usd_per_hour": 1}


@pytest.fixture(scope="module")
def prod_onprem(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("prod"), "prod", without_pools))


def of_type(result: PreviewResult, type_: str) -> dict[str, Recorded]:
    return {r.name: r for r in result.records if r.type == type_}


def test_every_node_gets_a_clone_of_the_template_with_its_disks(prod_onprem: PreviewResult):
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    vms = of_type(prod_onprem, VM)
    assert set(vms) == {f"{n.name}-vm" for n in config.nodes}
    for node in config.nodes:
        inputs = vms[f"{node.name}-vm"].inputs
        assert inputs["nodeName"] == node.hypervisor
        assert inputs["vmId"] == node.vm_id
        assert inputs["clone"]["vmId"] == 9000
        assert inputs["clone"]["full"] is True
        assert inputs["cpu"]["cores"] == node.cpu_cores
        assert inputs["memory"]["dedicated"] == node.memory_mb
        assert inputs["networkDevices"] == [{"bridge": "ecomanet", "model": "virtio"}]
        ip_config = inputs["initialization"]["ipConfigs"][0]["ipv4"]
        assert ip_config == {"address": f"{node.ip}/24", "gateway": "10.41.1.1"}
        disks = {d["serial"]: d for d in inputs["disks"]}
        assert set(disks) == {d.tier for d in node.disks}
        for disk in node.disks:
            made = disks[disk.tier]
            assert made["datastoreId"] == config.proxmox.datastores[disk.tier]
            assert made["size"] == disk.size_gb
            assert (made["interface"] == config.proxmox.template_boot_interface) is disk.os
        # The VM boots from the template's own disk, never a blank one beside it.
        assert inputs["bootOrders"] == [config.proxmox.template_boot_interface]


def test_disk_slots_are_fixed_per_tier_so_adding_one_renumbers_none(prod_onprem: PreviewResult):
    slots = {
        (d["serial"], d["interface"])
        for r in of_type(prod_onprem, VM).values()
        for d in r.inputs["disks"]
        if d["interface"] != "scsi0"  # prod's template boot interface: the OS disk
    }
    assert slots <= {
        ("swap", "virtio1"),
        ("hot", "virtio2"),
        ("warm", "virtio3"),
        ("cold", "virtio4"),
    }


def test_stateful_machines_are_protected_and_others_are_not(prod_onprem: PreviewResult):
    for name, record in of_type(prod_onprem, VM).items():
        stateful = name.startswith(("cpl-", "sts-"))
        assert record.protect is stateful, name
        assert record.retain_on_delete is stateful, name
        assert record.inputs.get("protection", False) is stateful, name
        assert "clone" in record.ignore_changes  # a new template never re-clones a machine
        assert ("disks" in record.ignore_changes) is stateful, name


def test_unlock_disks_lets_one_protected_node_change_its_disks(tmp_path: Path):
    def unlock(config: dict[str, Any]) -> None:
        without_pools(config)
        config["ecoma:proxmox"]["unlock_disks"] = ["sts-2"]

    vms = of_type(run_offline(stack_variant(tmp_path, "prod", unlock)), VM)
    assert "disks" not in vms["sts-2-vm"].ignore_changes
    assert vms["sts-2-vm"].protect is True
    assert "disks" in vms["sts-1-vm"].ignore_changes


def test_adding_a_disk_keeps_the_machine_and_its_other_disks(tmp_path: Path):
    def add_cold(config: dict[str, Any]) -> None:
        without_pools(config)
        wkr = next(n for n in config["ecoma:nodes"] if n["name"] == "wkr-1")
        wkr["disks"].append({"tier": "cold", "size_gb": 300})

    before = of_type(run_offline(stack_variant(tmp_path / "a", "prod", without_pools)), VM)
    after = of_type(run_offline(stack_variant(tmp_path / "b", "prod", add_cold)), VM)
    assert before["wkr-1-vm"].urn == after["wkr-1-vm"].urn
    old = before["wkr-1-vm"].inputs["disks"]
    new = after["wkr-1-vm"].inputs["disks"]
    assert new[: len(old)] == old
    assert new[-1]["serial"] == "cold"


def test_each_node_has_a_tagged_single_use_key(prod_onprem: PreviewResult):
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    keys = of_type(prod_onprem, KEY)
    for node in config.nodes:
        key = keys[f"{node.name}-tailscale-key"].inputs
        assert key["tags"] == [config.tailscale.tags[node.role]]
        assert key["preauthorized"] is True
        assert key["reusable"] is False
        assert key["ephemeral"] is False
        assert key["expiry"] == config.tailscale.key_expiry_seconds
        assert "key" in keys[f"{node.name}-tailscale-key"].secret_outputs


def test_cloud_init_snippet_is_secret_and_attached(prod_onprem: PreviewResult):
    files = of_type(prod_onprem, "proxmoxve:index/fileLegacy:FileLegacy")
    vms = of_type(prod_onprem, VM)
    for name, record in files.items():
        node = name.removesuffix("-user-data")
        assert record.inputs["contentType"] == "snippets"
        assert record.inputs["datastoreId"] == "local"
        data = record.inputs["sourceRaw"]
        assert REDACTED in json.dumps(_redacted(data)), "user data with the auth key is a secret"
        file_id = vms[f"{node}-vm"].inputs["initialization"]["userDataFileId"]
        assert file_id == f"local:snippets/ecoma-prod-{node}-user-data.yaml"
        # Pulumi never deletes the file a VM boots from (a replaced snippet is the same file),
        # and no VM shows as replaced while its snippet's new id is unknown to a preview.
        assert "initialization.userDataFileId" in vms[f"{node}-vm"].ignore_changes
        assert record.retain_on_delete


def _redacted(value: Any) -> Any:
    from ecoma_infra.program.offline import redact

    return redact(value)


def test_user_data_joins_tailscale_and_routes_on_routers():
    from ecoma_infra.program.cloudinit import NodeBoot, tailscale_up_args

    boot = NodeBoot(
        hostname="cpl-1",
        domain="ecoma.internal",
        user="ecoma",
        authorized_keys=("ssh-ed25519 AAAA ops",),
        tailscale_up_args=tailscale_up_args(
            "cpl-1", advertise_routes=["10.41.1.0/24"], accept_routes=False
        ),
        ip_forwarding=True,
    )
    text = render_user_data(boot, "the-auth-key")
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    assert document["hostname"] == "cpl-1"
    assert document["users"][0]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA ops"]
    key_file = next(f for f in document["write_files"] if f["content"] == "the-auth-key")
    assert key_file["permissions"] == "0600"
    up = next(c for c in document["runcmd"] if c[:2] == ["tailscale", "up"])
    assert "--advertise-routes=10.41.1.0/24" in up
    assert f"--auth-key=file:{key_file['path']}" in up
    assert ["rm", "-f", key_file["path"]] in document["runcmd"]
    assert any("ip_forward = 1" in f["content"] for f in document["write_files"])


def test_sdn_zone_vnet_subnet_applied_before_any_clone(prod_onprem: PreviewResult):
    by_name = {r.name: r for r in prod_onprem.records}
    assert by_name["sdn-subnet"].inputs["cidr"] == "10.41.1.0/24"
    assert by_name["sdn-subnet"].inputs["gateway"] == "10.41.1.1"
    applier = by_name["sdn-apply"]
    assert {by_name[n].urn for n in ("sdn-zone", "sdn-vnet", "sdn-subnet")} <= set(
        applier.depends_on
    )
    for vm in of_type(prod_onprem, VM).values():
        assert applier.urn in vm.depends_on


def test_clones_are_chained_two_at_a_time(prod_onprem: PreviewResult):
    # Each node (the component that parents its key, user data and VM) waits for at most one
    # earlier clone; tests/program/test_real_platform.py shows the SDK holding its children.
    vms = of_type(prod_onprem, VM)
    nodes = of_type(prod_onprem, "ecoma:proxmox:Node")
    vm_urns = {r.urn for r in vms.values()}
    assert {vm.parent for vm in vms.values()} == {node.urn for node in nodes.values()}
    waits = {name: [u for u in r.depends_on if u in vm_urns] for name, r in nodes.items()}
    assert sum(1 for w in waits.values() if not w) == 2  # the first two start at once
    assert all(len(w) <= 1 for w in waits.values())
    # No VM waits for another VM itself: the lane is the nodes' (a chain of VMs made the
    # SDK's cycle check quadratic, and deeper than Python's recursion limit at 1000 nodes).
    assert not any(set(vm.depends_on) & vm_urns for vm in vms.values())


def test_subnet_routes_are_approved_for_each_router(prod_onprem: PreviewResult):
    routes = of_type(prod_onprem, "tailscale:index/deviceSubnetRoutes:DeviceSubnetRoutes")
    assert set(routes) == {"sdn-routes-cpl-1", "sdn-routes-cpl-2"}
    assert all(r.inputs["routes"] == ["10.41.1.0/24"] for r in routes.values())


def test_no_resource_uses_a_default_provider(prod_onprem: PreviewResult):
    for record in prod_onprem.records:
        if record.custom and not record.type.startswith("pulumi:providers:"):
            assert record.provider, f"{record.type} {record.name} uses a default provider"
            assert "::default" not in record.provider


def test_components_have_three_part_tokens_and_parent_their_children(
    prod_onprem: PreviewResult,
):
    urns = {r.urn: r for r in prod_onprem.records}
    for record in prod_onprem.records:
        if not record.custom:
            assert record.type.startswith("ecoma:")
            assert record.type.count(":") == 2
        elif not record.type.startswith("pulumi:providers:"):
            parent = urns.get(record.parent)
            assert parent is not None, record.name
            assert not parent.custom, record.name
            assert record.name.startswith(parent.name), record.name


def test_inventory_matches_the_nodes(prod_onprem: PreviewResult):
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    inventory = prod_onprem.outputs["ansible_inventory"]
    hosts = inventory_hosts(inventory)
    assert set(hosts) == {n.name for n in config.nodes}
    children = inventory["all"]["children"]
    for node in config.nodes:
        host = hosts[node.name]
        assert host["ansible_host"] == str(node.ip)
        assert host["ecoma_role"] == node.role
        assert node.name in children[f"ecoma_{node.role}"]["hosts"]
        assert node.name in children["ecoma_proxmox"]["hosts"]
        assert host["ecoma_node_labels"]["topology.ecoma.io/provider"] == "proxmox"
        storage = {d["tier"]: d for d in host["ecoma_storage"]}
        assert set(storage) == {d.tier for d in node.disks}
        for tier, disk in storage.items():
            # Prod's template boots from scsi0: the OS disk's link is the SCSI one that
            # Debian's udev makes of a QEMU disk's serial; data disks are virtio.
            is_os = next(d for d in node.disks if d.tier == tier).os
            bus = "scsi-0QEMU_QEMU_HARDDISK_" if is_os else "virtio-"
            assert disk["device"] == f"/dev/disk/by-id/{bus}{tier}"
    assert children["ecoma_burst"]["hosts"] == {}
    cluster = inventory["all"]["vars"]["ecoma_cluster"]
    assert cluster["kube_vip"] == "10.41.1.254"
    assert cluster["first_server"] == "cpl-1"
    assert hosts["cpl-1"]["ecoma_tailscale_router"] is True
    assert hosts["cpl-1"]["ecoma_node_taints"] == [
        "node-role.kubernetes.io/control-plane=true:NoSchedule"
    ]


def test_no_secret_value_appears_in_any_output(prod_onprem: PreviewResult):
    text = json.dumps(prod_onprem.document())
    assert "offline-placeholder" not in text
    assert "offline-auth-key" not in text
    assert set(prod_onprem.secret_outputs) == {
        "k3s_token",
        "k3s_agent_token",
        "tailscale_auth_keys",
    }
    for key in ("k3s_token", "k3s_agent_token", "tailscale_auth_keys"):
        assert prod_onprem.outputs[key] == REDACTED


def test_the_same_stack_gives_the_same_preview(tmp_path: Path):
    path = stack_variant(tmp_path, "staging", without_pools)
    assert run_offline(path).document() == run_offline(path).document()


def test_an_invalid_stack_fails_before_any_resource(tmp_path: Path):
    """`pulumi up` of a bad stack: __main__.py raises before registering anything."""
    good = stack_variant(tmp_path, "staging", without_pools)
    values = yaml.safe_load(good.read_text())["config"]
    config = {k: json.dumps(v) for k, v in values.items() if k.startswith("ecoma:")}
    nodes = json.loads(config["ecoma:nodes"])
    nodes[0]["ip"] = "10.41.1.254"
    config["ecoma:nodes"] = json.dumps(nodes)
    loaded = load_stack_file(good)
    for key in required_secrets(loaded.config):
        config[f"ecoma:{key}"] = "x"
    from ecoma_infra.program.offline import RecordingMonitor

    settings.reset_options()
    pulumi.runtime.set_all_config(config, [])
    monitor = RecordingMonitor(OfflineMocks())
    pulumi.runtime.set_mocks(monitor.mocks, project="ecoma", stack="staging", monitor=monitor)
    try:
        import runpy

        with pytest.raises(ConfigError) as caught:
            runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_program__")
    finally:
        settings.reset_options()
    assert "Pulumi.staging.yaml: ecoma:nodes[cpl-1].ip: 10.41.1.254 is the kube-vip" in str(
        caught.value
    )
    assert monitor.records == []


def test_startup_script_is_valid_bash_and_idempotent_by_design(tmp_path: Path):
    from ecoma_infra.program.cloudinit import NodeBoot, render_startup_script, tailscale_up_args

    boot = NodeBoot(
        hostname="wkr-gcp-1",
        domain="tail4e2c1.ts.net",
        user="ecoma",
        authorized_keys=("ssh-ed25519 AAAA ops", "ssh-ed25519 BBBB ci"),
        tailscale_up_args=tailscale_up_args("wkr-gcp-1", advertise_routes=[], accept_routes=True),
    )
    script = render_startup_script(boot, "key'with\"quotes")
    path = tmp_path / "startup.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    lines = script.splitlines()
    joined = lines.index("if tailscale status --peers=false >/dev/null 2>&1; then exit 0; fi")
    up = next(i for i, line in enumerate(lines) if line.startswith("tailscale up"))
    assert joined < up, "a node already in the tailnet never uses its key again"
    assert "--accept-routes" in lines[up]
    assert "'key'\"'\"'with\"quotes'" in script  # the key is quoted for the shell


@pytest.mark.parametrize("count", [0, 2])
def test_burst_count_gives_that_many_nodes_per_provider(tmp_path: Path, count: int):
    def burst(config: dict[str, Any]) -> None:
        for provider in ("aws", "gcp", "oci"):
            config["ecoma:burst"][provider]["count"] = count
        config["ecoma:burst"]["budget_usd_per_hour"] = 100

    result = run_offline(stack_variant(tmp_path, "prod", burst))
    instances = {
        "aws": of_type(result, "aws:ec2/instance:Instance"),
        "gcp": of_type(result, "gcp:compute/instance:Instance"),
        "oci": of_type(result, "oci:Core/instance:Instance"),
    }
    assert {p: len(found) for p, found in instances.items()} == dict.fromkeys(instances, count)
    inventory = result.outputs["ansible_inventory"]
    children = inventory["all"]["children"]
    expected = {f"wkr-{p}-{i}" for p in instances for i in range(1, count + 1)}
    assert set(children["ecoma_burst"]["hosts"]) == expected
    hosts = inventory_hosts(inventory)
    for name in expected:
        host = hosts[name]
        provider = host["ecoma_provider"]
        assert name in children[f"ecoma_{provider}"]["hosts"]
        assert host["ansible_host"] == f"{name}.tail4e2c1.ts.net"
        assert host["ecoma_tailscale_accept_routes"] is True
        assert host["ecoma_node_labels"]["node.ecoma.io/burst"] == "true"
        for disk in host["ecoma_storage"]:
            # OCI's boot volume has no path on Debian; the root filesystem needs none.
            if disk["os_disk"] and provider == "oci":
                assert disk["device"] == ""
            else:
                assert disk["device"].startswith("/dev/disk/"), disk
            assert "None" not in disk["device"]
    # Prod's AWS pool egresses through a NAT gateway, billed while the pool has nodes.
    nat = 0.057 if count else 0.0
    assert result.outputs["burst"]["hourly_cost_usd"] == round(
        count * (0.23 + 0.226 + 0.17) + nat, 4
    )
    for record in result.records:  # still no default provider, with the clouds in
        if record.custom and not record.type.startswith("pulumi:providers:"):
            assert record.provider, record.name


def test_tailnet_policy_is_applied_before_any_key_is_minted(prod_onprem: PreviewResult):
    from ecoma_infra.program.tailnet_policy import tailnet_policy

    (acl,) = of_type(prod_onprem, "tailscale:index/acl:Acl").values()
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    policy = tailnet_policy(config, admins=config.tailscale.admins)
    assert json.loads(acl.inputs["acl"]) == json.loads(json.dumps(policy))
    assert policy["groups"]["group:ecoma-admins"] == ["ops@ecoma.io"]
    keys_provider = of_type(prod_onprem, "pulumi:providers:tailscale")["tailscale-keys"]
    assert acl.urn in keys_provider.depends_on
    for key in of_type(prod_onprem, KEY).values():
        assert key.provider.startswith(keys_provider.urn)
