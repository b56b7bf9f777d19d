"""What the program gives the providers is right for the real platforms, not only for mocks:
the SDN zone spans the hypervisors, the guest agent runs, each Tailscale key lives only as long
as its VM's clone and boot, the OS disk stays on the template's boot interface (simulated: the
real program under the real SDK with the offline preview's mock engine)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from stacks import stack_variant

from ecoma_infra.program import offline
from ecoma_infra.program.offline import PreviewResult, Recorded, RecordingMonitor, run_offline
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import ROLES

ROOT = Path(__file__).resolve().parents[2]
VM = "proxmoxve:index/vmLegacy:VmLegacy"
KEY = "tailscale:index/tailnetKey:TailnetKey"
SNIPPET = "proxmoxve:index/fileLegacy:FileLegacy"
NODE = "ecoma:proxmox:Node"
APPLIER = "proxmoxve:sdn/applier:Applier"
VNET = "proxmoxve:sdn/vnet:Vnet"
SUBNET = "proxmoxve:sdn/subnet:Subnet"
PEERS = {"pve1": "192.168.10.11", "pve2": "192.168.10.12", "pve3": "192.168.10.13"}


def _no_pools(config: dict[str, Any]) -> None:
    config["ecoma:burst"] = {"budget_usd_per_hour": 1}


def _vxlan(config: dict[str, Any]) -> None:
    _no_pools(config)
    config["ecoma:proxmox"]["sdn"] = {"kind": "vxlan", "tag": 4100, "peers": PEERS}


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("prod"), "prod", _no_pools))


@pytest.fixture(scope="module")
def staging() -> PreviewResult:
    return run_offline(ROOT / "Pulumi.staging.yaml")


@pytest.fixture(scope="module")
def prod_vxlan(tmp_path_factory: pytest.TempPathFactory) -> PreviewResult:
    return run_offline(stack_variant(tmp_path_factory.mktemp("vxlan"), "prod", _vxlan))


def of_type(result: PreviewResult, type_: str) -> dict[str, Recorded]:
    return {r.name: r for r in result.records if r.type == type_}


def one(result: PreviewResult, type_: str) -> Recorded:
    (found,) = of_type(result, type_).values()
    return found


def unwrap(value: Any) -> Any:
    """A secret input as the engine receives it: the value inside the secret envelope."""
    return value["value"] if isinstance(value, dict) and "value" in value else value


# --------------------------------------------------------------------------- the SDN zone


def test_prod_zone_is_a_vlan_on_every_hypervisors_bridge(prod: PreviewResult) -> None:
    zone = one(prod, "proxmoxve:sdn/zone/vlan:Vlan")
    assert zone.inputs["nodes"] == ["pve1", "pve2", "pve3"]
    assert zone.inputs["bridge"] == "vmbr0"
    assert of_type(prod, "proxmoxve:sdn/zone/simple:Simple") == {}
    assert one(prod, VNET).inputs["tag"] == 41
    # Proxmox deploys gateway and SNAT on layer-3 zones only: not asked for on a VLAN.
    subnet = one(prod, SUBNET).inputs
    assert subnet["gateway"] == "10.41.1.1"
    assert "snat" not in subnet


def test_staging_keeps_a_simple_zone_on_its_one_hypervisor(staging: PreviewResult) -> None:
    zone = one(staging, "proxmoxve:sdn/zone/simple:Simple")
    assert zone.inputs["nodes"] == ["pve-stg1"]
    assert "tag" not in one(staging, VNET).inputs
    assert one(staging, SUBNET).inputs["snat"] is True


def test_vxlan_zone_peers_every_hypervisor_and_vms_take_its_mtu(prod_vxlan: PreviewResult) -> None:
    zone = one(prod_vxlan, "proxmoxve:sdn/zone/vxlan:Vxlan")
    assert zone.inputs["peers"] == [PEERS[n] for n in ("pve1", "pve2", "pve3")]
    assert zone.inputs["mtu"] == 1450  # 1500 - the 50 bytes of VXLAN
    assert one(prod_vxlan, VNET).inputs["tag"] == 4100
    for vm in of_type(prod_vxlan, VM).values():
        (nic,) = vm.inputs["networkDevices"]
        assert nic["mtu"] == 1, f"{vm.name} would send 1500-byte frames into a 1450 bridge"


def test_vlan_vms_keep_the_bridge_mtu_unset(prod: PreviewResult) -> None:
    for vm in of_type(prod, VM).values():
        assert vm.inputs["networkDevices"] == [{"bridge": "ecomanet", "model": "virtio"}]


def test_sdn_is_reapplied_when_its_kind_changes_and_deletions_are_applied_last(
    prod: PreviewResult, prod_vxlan: PreviewResult
) -> None:
    applied = {r.name: r for r in of_type(prod, APPLIER).values()}
    assert set(applied) == {"sdn-apply", "sdn-finalizer"}
    finalizer, apply = applied["sdn-finalizer"], applied["sdn-apply"]
    assert finalizer.inputs == {"onCreate": False, "onDestroy": True}
    for kind in ("proxmoxve:sdn/zone/vlan:Vlan", VNET, SUBNET):
        assert finalizer.urn in one(prod, kind).depends_on, kind
        assert one(prod, kind).urn in apply.depends_on, kind
    trigger = json.loads(apply.replacement_trigger)
    assert trigger["kind"] == "vlan"
    assert trigger["tag"] == 41
    vxlan_trigger = json.loads(of_type(prod_vxlan, APPLIER)["sdn-apply"].replacement_trigger)
    assert vxlan_trigger != trigger  # a changed zone re-applies


# --------------------------------------------------------------------------- first boot


def user_data(result: PreviewResult, node: str) -> dict[str, Any]:
    raw = unwrap(of_type(result, SNIPPET)[f"{node}-user-data"].inputs["sourceRaw"])
    text = raw["data"]
    assert text.startswith("#cloud-config\n")
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_user_data_starts_the_guest_agent_it_installs(
    stack: str, prod: PreviewResult, staging: PreviewResult
) -> None:
    result = {"staging": staging, "prod": prod}[stack]
    config = load_stack_file(ROOT / f"Pulumi.{stack}.yaml").config
    for node in config.nodes:
        document = user_data(result, node.name)
        assert "qemu-guest-agent" in document["packages"]
        commands = document["runcmd"]
        start = ["systemctl", "start", "qemu-guest-agent"]
        assert start in commands, node.name
        join = next(i for i, c in enumerate(commands) if c[:2] == ["tailscale", "up"])
        assert commands.index(start) < join, "the agent must answer before the slow steps"


# --------------------------------------------------------------------------- keys


def chain(config_nodes: list[Any]) -> list[str]:
    return [n.name for n in sorted(config_nodes, key=lambda n: (ROLES.index(n.role), n.name))]


def test_each_key_is_minted_when_its_vm_is_next_in_the_clone_chain(prod: PreviewResult) -> None:
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    width = config.proxmox.clone_parallelism
    order = chain(config.nodes)
    vms, keys, nodes = of_type(prod, VM), of_type(prod, KEY), of_type(prod, NODE)
    last = order[-1]
    before = vms[f"{order[-1 - width]}-vm"]
    key, vm = keys[f"{last}-tailscale-key"], vms[f"{last}-vm"]
    # The last node waits for the clone `width` places before it; its key and its VM are the
    # node's children, which the SDK registers only once the node is (see the next test) ...
    assert before.urn in nodes[last].depends_on
    assert key.parent == vm.parent == nodes[last].urn
    # ... and the VM waits for the snippet that carries the key.
    snippet = of_type(prod, SNIPPET)[f"{last}-user-data"]
    assert key.urn in snippet.depends_on
    assert snippet.urn in vm.depends_on
    # The first nodes only wait for the SDN: no key waits for a later VM.
    for name in order[:width]:
        assert not any(d.endswith("-vm") for d in nodes[name].depends_on)
        assert not any(d.endswith("-vm") for d in keys[f"{name}-tailscale-key"].depends_on)
    for index, name in enumerate(order[width:], start=width):
        earlier = vms[f"{order[index - width]}-vm"].urn
        assert earlier in nodes[name].depends_on
        assert keys[f"{name}-tailscale-key"].parent == nodes[name].urn


class SlowClones(RecordingMonitor):
    """A mock engine whose VMs take a while to create, and a log of when each registration of a
    VM or a key started (the SDK sent it: everything it waits for exists) and ended."""

    CLONE_SECONDS = 0.05

    def __init__(self, offline_mocks: Any) -> None:
        super().__init__(offline_mocks)
        self.events: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        watched = request.type in (VM, KEY)
        if watched:
            with self._lock:
                self.events.append(("start", request.name))
        response = super().RegisterResource(request)
        if request.type == VM:
            time.sleep(self.CLONE_SECONDS)
        if watched:
            with self._lock:
                self.events.append(("end", request.name))
        return response


def test_simulated_slow_clones_run_in_lanes_and_each_key_waits_for_its_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The order the SDK really follows, not only the recorded edges: with VMs that take time to
    create, a node's key and VM are sent only after the clone `width` places before it exists,
    and never more than `width` clones run at once (the pool of the SDK's threads holds more)."""
    monitors: list[SlowClones] = []

    def slow(offline_mocks: Any) -> SlowClones:
        monitors.append(SlowClones(offline_mocks))
        return monitors[-1]

    monkeypatch.setattr(offline, "RecordingMonitor", slow)
    run_offline(stack_variant(tmp_path, "prod", _no_pools))
    (monitor,) = monitors
    at = {event: index for index, event in enumerate(monitor.events)}
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    width = config.proxmox.clone_parallelism
    order = chain(config.nodes)
    for index, name in enumerate(order):
        key_sent = at["start", f"{name}-tailscale-key"]
        assert key_sent < at["start", f"{name}-vm"]
        if index < width:
            # The first keys do not wait for any clone.
            assert key_sent < min(at["end", f"{n}-vm"] for n in order)
            continue
        ahead = f"{order[index - width]}-vm"
        assert at["end", ahead] < key_sent, f"{name}'s key was minted before {ahead} existed"
    running = peak = 0
    for kind, name in monitor.events:
        if name.endswith("-vm"):
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
    assert peak <= width


def test_a_key_is_replaced_whenever_its_vm_would_be(prod: PreviewResult) -> None:
    config = load_stack_file(ROOT / "Pulumi.prod.yaml").config
    keys = of_type(prod, KEY)
    for node in config.nodes:
        trigger = json.loads(keys[f"{node.name}-tailscale-key"].replacement_trigger)
        assert trigger == {"vm_id": node.vm_id, "hypervisor": node.hypervisor}
        key = keys[f"{node.name}-tailscale-key"].inputs
        assert key["reusable"] is False
        assert key["preauthorized"] is True
        assert key["expiry"] == config.tailscale.key_expiry_seconds


# --------------------------------------------------------------------------- boot disk


@pytest.mark.parametrize(("stack", "interface"), [("staging", "virtio0"), ("prod", "scsi0")])
def test_the_os_disk_stays_on_the_templates_boot_interface(
    stack: str, interface: str, prod: PreviewResult, staging: PreviewResult
) -> None:
    result = {"staging": staging, "prod": prod}[stack]
    for vm in of_type(result, VM).values():
        os_disks = [d for d in vm.inputs["disks"] if d["interface"] == interface]
        assert len(os_disks) == 1, vm.name
        assert vm.inputs["bootOrders"] == [interface]
        assert not any(d["interface"] == "virtio0" for d in vm.inputs["disks"]) or (
            interface == "virtio0"
        ), f"{vm.name}: a blank virtio0 beside the template's {interface}"
        if interface.startswith("scsi"):
            # iothread on SCSI disks takes effect only with one controller per disk.
            assert vm.inputs["scsiHardware"] == "virtio-scsi-single"
        else:
            assert "scsiHardware" not in vm.inputs
