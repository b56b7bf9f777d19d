"""Replacing a node, with every outside system simulated (test names say so): the real Pulumi
program under the offline engine's mocks (`pulumi_simulated`), the real Kubernetes adapter
against the simulated API server, the real Proxmox adapter against the simulated Proxmox API
(which deletes a VM's volumes the way the provider's destroy does), and a simulated tailnet.
The playbook run is a stand-in that joins the node again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from day2_doubles import OLD, FakeClock
from simulated_apis import SimulatedProxmox
from simulated_apiserver import SimulatedApiServer
from stacks import stack_variant

from ecoma_infra.burst.run import load_ref
from ecoma_infra.day2.common import Day2Error, Waits
from ecoma_infra.day2.replace import REPLACING, Replacer, ReplaceSeams, plan_replace
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.platforms.kubernetes import KubernetesCluster
from ecoma_infra.platforms.proxmox import ProxmoxApi, parse_api_token
from ecoma_infra.platforms.pulumi_simulated import SimulatedStack
from ecoma_infra.platforms.seams import Journal, UpSummary
from ecoma_infra.platforms.tailscale_simulated import SimulatedTailnet

VM = "proxmoxve:index/vmLegacy:VmLegacy"


def without_pools(config: dict[str, Any]) -> None:
    config["ecoma:burst"] = {"budget_usd_per_hour": 1}


@dataclass
class World:
    stack: SimulatedStack
    pve: SimulatedProxmox
    apiserver: SimulatedApiServer
    cluster: KubernetesCluster
    tailnet: SimulatedTailnet
    proxmox: ProxmoxApi
    journal: Journal
    clock: FakeClock
    configured: list[dict[str, Any]] = field(default_factory=list)
    configure_fails: int = 0
    lines: list[str] = field(default_factory=list)
    vm_ids: dict[str, int] = field(default_factory=dict)  # URN -> VM id, as the provider keeps

    def configure(self, inventory: dict[str, Any], secrets: dict[str, str], limit: str) -> bool:
        self.journal.append(("configure", limit))
        self.configured.append({"inventory": inventory, "secrets": sorted(secrets), "limit": limit})
        if self.configure_fails:
            self.configure_fails -= 1
            return False
        servers = inventory["all"]["children"]["ecoma_cpl"]["hosts"]
        self.apiserver.add_node(limit, version=OLD, finalizer_reads=2 if limit in servers else 0)
        return True

    def seams(self) -> ReplaceSeams:
        return ReplaceSeams(
            stack=self.stack,
            cluster=lambda: self.cluster,
            hypervisor=lambda: self.proxmox,
            tailnet=lambda: self.tailnet,
            configure=self.configure,
        )

    def replace(self, node: str) -> None:
        waits = Waits(drain=60, ready=120, poll=5, clock=self.clock, sleep=self.clock.sleep)
        plan = plan_replace(load_ref(self.stack), node, self.cluster, project="ecoma")
        Replacer(self.seams(), self.lines.append, waits).run(plan)

    def provider(self, created: list[str], deleted: list[str]) -> None:
        """What the Proxmox provider does to the VMs an up deletes and creates."""
        records = {r.urn: r for r in self.stack.last_records if r.type == VM}
        for urn in deleted:
            if urn in self.vm_ids:
                # delete_unreferenced_disks_on_destroy defaults to true in the provider
                self.pve.destroy_vm(self.vm_ids.pop(urn), unreferenced=True)
        for urn in created:
            if urn in records:
                self.vm_ids[urn] = _add_vm(self.pve, records[urn].inputs, "new")


def _add_vm(pve: SimulatedProxmox, inputs: dict[str, Any], content: str) -> int:
    name = inputs["name"]
    disks = {
        d["interface"]: (
            f"serial={d['serial']},size={int(d['size'])}G",
            f"{content} {name} {d['serial']}",
        )
        for d in inputs["disks"]
    }
    pve.add_vm(int(inputs["vmId"]), inputs["nodeName"], name, disks=disks, running=True)
    return int(inputs["vmId"])


@pytest.fixture
def world(
    tmp_path: Path, apiserver: SimulatedApiServer, cluster: KubernetesCluster, clock: FakeClock
) -> Iterator[World]:
    journal: Journal = []
    stack = SimulatedStack.from_file(stack_variant(tmp_path, "prod", without_pools), journal)
    stack.up(lambda line: None)
    journal.clear()
    with SimulatedProxmox(events=[]) as pve:
        token_id, secret = parse_api_token(pve.add_token("ci"))
        proxmox = ProxmoxApi(pve.url, token_id, secret, insecure=True)
        proxmox._clock, proxmox._sleep = clock, clock.sleep
        tailnet = SimulatedTailnet(journal)
        world = World(stack, pve, apiserver, cluster, tailnet, proxmox, journal, clock)
        for record in stack.last_records:
            if record.type == VM:
                world.vm_ids[record.urn] = _add_vm(pve, record.inputs, "old")
                name = record.inputs["name"]
                server = name.startswith("cpl-")
                apiserver.add_node(name, version=OLD, finalizer_reads=2 if server else 0)
                tailnet.add(name)
        stack.on_up = world.provider
        pve.events.clear()
        yield world


def _vm(world: World, name: str) -> Any:
    return next(r for r in world.stack.last_records if r.type == VM and r.inputs["name"] == name)


def test_simulated_replace_of_an_sts_node_keeps_its_data_disks(world: World) -> None:
    world.apiserver.add_pod("data", "mongo-0", "sts-1", owner_kind="StatefulSet")
    before = world.pve.slot_contents(5301)
    assert set(before) == {"scsi0", "virtio1", "virtio3", "virtio4"}  # OS, swap, warm, cold

    world.replace("sts-1")

    after = world.pve.slot_contents(5301)
    # The data tiers are the very same volumes, with their serials; OS and swap are new.
    assert after["virtio3"] == before["virtio3"] == "old sts-1 warm"
    assert after["virtio4"] == before["virtio4"] == "old sts-1 cold"
    assert after["scsi0"] == "new sts-1 hot"
    assert after["virtio1"] == "new sts-1 swap"
    assert world.pve.vms[5301].config["virtio3"].endswith(",serial=warm,size=500G")
    # No holder VM is left, and no volume was lost or left behind.
    assert [vm.name for vm in world.pve.vms.values() if vm.name == "ecoma-keep-sts-1"] == []
    assert sum(":vm-5301-" in v for v in world.pve.volumes) == 4
    events = world.pve.events
    holder = next(e for e in events if e.startswith("proxmox: create VM "))
    holder_id = holder.split()[3]
    assert events == [
        "proxmox: shutdown VM 5301",
        holder,
        f"proxmox: move virtio3 of VM 5301 to VM {holder_id} as virtio3",
        f"proxmox: move virtio4 of VM 5301 to VM {holder_id} as virtio4",
        "proxmox: destroy VM 5301",
        "proxmox: shutdown VM 5301",
        f"proxmox: move virtio3 of VM {holder_id} to VM 5301 as virtio3",
        f"proxmox: move virtio4 of VM {holder_id} to VM 5301 as virtio4",
        f"proxmox: destroy VM {holder_id}",
        "proxmox: start VM 5301",
    ]
    assert world.apiserver.requests_for("POST", "/pods/mongo-0/eviction")


def test_simulated_replace_order_drains_before_the_stack_changes_and_restores_protection(
    world: World,
) -> None:
    world.replace("sts-1")

    kinds = [kind for kind, _ in world.journal]
    device = next(detail for kind, detail in world.journal if kind == "delete_device")
    assert world.tailnet.known.get("sts-1") is None
    assert device.startswith("n")
    ups = [i for i, kind in enumerate(kinds) if kind == "up"]
    assert len(ups) == 3
    assert kinds.index("delete_device") < ups[0]
    assert kinds.index("configure") > ups[1]
    assert ups[2] > kinds.index("configure")
    replaced = [detail for kind, detail in world.journal if kind == "replace"]
    assert replaced == [
        "urn:pulumi:prod::ecoma::ecoma:proxmox:Node$tailscale:index/tailnetKey:TailnetKey::sts-1-tailscale-key",
        "urn:pulumi:prod::ecoma::ecoma:proxmox:Node$proxmoxve:index/vmLegacy:VmLegacy::sts-1-vm",
    ]
    # Back to protected, and nothing else of the stack was replaced.
    vm = _vm(world, "sts-1")
    assert (vm.protect, vm.retain_on_delete, vm.inputs["protection"]) == (True, True, True)
    assert "disks" in vm.ignore_changes
    assert "replacing" not in world.stack.config()["ecoma:proxmox"]
    assert world.configured[0]["limit"] == "sts-1"
    assert "ECOMA_TAILSCALE_AUTH_KEYS" in world.configured[0]["secrets"]
    assert world.apiserver.nodes["sts-1"]["status"]["conditions"][-1]["status"] == "True"


def test_simulated_replace_of_a_server_removes_its_etcd_member_and_it_joins_again(
    world: World,
) -> None:
    world.apiserver.requests.clear()
    world.replace("cpl-2")

    deletes = world.apiserver.requests_for("DELETE", "/api/v1/nodes/cpl-2")
    assert len(deletes) == 1
    after_delete = world.apiserver.requests[world.apiserver.requests.index(deletes[0]) :]
    node_reads = [r for r in after_delete if r.path == "/api/v1/nodes/cpl-2"]
    assert len(node_reads) >= 3  # waited while the finalizer (etcd member removal) ran
    assert any(r.path == "/readyz" for r in after_delete)
    assert [c["limit"] for c in world.configured] == ["cpl-2"]
    assert world.pve.slot_contents(5102) == {"scsi0": "new cpl-2 hot"}
    assert not [e for e in world.pve.events if "move" in e]  # a server keeps no disks
    assert _vm(world, "cpl-2").protect is True


def test_simulated_a_failed_rebuild_keeps_the_data_and_a_rerun_finishes(world: World) -> None:
    real_up = world.stack.up
    calls = {"n": 0}

    def failing_second_up(on_output: Callable[[str], None], **kwargs: Any) -> UpSummary:
        calls["n"] += 1
        if calls["n"] == 2:
            raise EcomaError("stack prod: pulumi failed: simulated: the Proxmox API timed out")
        return real_up(on_output, **kwargs)

    world.stack.up = failing_second_up  # type: ignore[method-assign]
    with pytest.raises(Day2Error) as failure:
        world.replace("sts-1")
    message = str(failure.value)
    assert "replace of sts-1 stopped: stack prod: pulumi failed" in message
    assert "moved to holder VM" in message
    assert "protected holder VM 'ecoma-keep-sts-1'" in message
    assert f"{REPLACING} keeps sts-1's protection lifted" in message
    holder = next(vm for vm in world.pve.vms.values() if vm.name == "ecoma-keep-sts-1")
    assert holder.config["protection"] == "1"
    assert set(world.pve.slot_contents(holder.vmid).values()) == {
        "old sts-1 warm",
        "old sts-1 cold",
    }

    world.replace("sts-1")

    after = world.pve.slot_contents(5301)
    assert (after["virtio3"], after["virtio4"]) == ("old sts-1 warm", "old sts-1 cold")
    assert holder.vmid not in world.pve.vms
    assert _vm(world, "sts-1").protect is True


def test_simulated_failed_configure_says_what_is_done_and_resumes(world: World) -> None:
    world.configure_fails = 1
    with pytest.raises(Day2Error, match="configuring wkr-1 failed") as failure:
        world.replace("wkr-1")
    assert "run the same command again" in str(failure.value)
    assert _vm(world, "wkr-1").protect is False  # wkr is never protected

    world.replace("wkr-1")

    assert [c["limit"] for c in world.configured] == ["wkr-1", "wkr-1"]
    assert "replacing" not in world.stack.config()["ecoma:proxmox"]


def test_simulated_drain_blocked_by_a_pdb_changes_nothing(world: World) -> None:
    world.apiserver.add_pod("shop", "web-1", "wkr-2", labels={"app": "web"})
    world.apiserver.add_pdb("shop", "web", min_available=1, match_labels={"app": "web"})

    with pytest.raises(Day2Error, match=r"PodDisruptionBudget.*uncordoned wkr-2, nothing else"):
        world.replace("wkr-2")

    assert world.pve.events == []
    assert [kind for kind, _ in world.journal] == []
    assert world.apiserver.nodes["wkr-2"]["spec"]["unschedulable"] is False


def test_simulated_a_not_ready_node_is_replaced_without_a_drain(world: World) -> None:
    world.apiserver.set_node("wkr-3", ready=False)
    world.apiserver.add_pod("shop", "web-9", "wkr-3")

    world.replace("wkr-3")

    assert not world.apiserver.requests_for("POST", "/eviction")
    assert any("is not Ready: no drain" in line for line in world.lines)


def test_simulated_refusals_change_nothing(world: World) -> None:
    ref = load_ref(world.stack)
    with pytest.raises(UsageError, match="--node wkr-9: not a node"):
        plan_replace(ref, "wkr-9", world.cluster, project="ecoma")
    world.apiserver.set_node("cpl-3", ready=False)
    with pytest.raises(Day2Error, match="cpl-3 are not Ready: without cpl-1 etcd would lose"):
        plan_replace(ref, "cpl-1", world.cluster, project="ecoma")
    world.apiserver.set_node("cpl-3", ready=True)
    world.apiserver.etcd_healthy = False
    with pytest.raises(Day2Error, match="etcd is not healthy"):
        plan_replace(ref, "cpl-1", world.cluster, project="ecoma")
    world.stack.set_config({f"{REPLACING}[0]": "sts-2"})
    with pytest.raises(Day2Error, match="names sts-2: another replace did not finish"):
        plan_replace(load_ref(world.stack), "sts-1", world.cluster, project="ecoma")
    assert world.pve.events == []


def test_simulated_the_only_server_is_never_replaced(
    tmp_path: Path, cluster: KubernetesCluster, apiserver: SimulatedApiServer
) -> None:
    stack = SimulatedStack.from_file(stack_variant(tmp_path, "staging", without_pools), [])
    apiserver.add_node("cpl-1", version=OLD)
    with pytest.raises(Day2Error, match=r"cpl-1 is the only server.*Restore the cluster"):
        plan_replace(load_ref(stack), "cpl-1", cluster, project="ecoma")


def test_the_plan_names_the_urns_the_program_registers(world: World) -> None:
    plan = plan_replace(load_ref(world.stack), "sts-1", world.cluster, project="ecoma")
    urns = {r.urn for r in world.stack.last_records}
    assert {plan.vm_urn, plan.key_urn, plan.snippet_urn} <= urns
    assert plan.kept_slots == ("virtio3", "virtio4")
    text = "\n".join(plan.describe())
    assert "keep its data disks (virtio3, virtio4) on a protected holder VM" in text
    assert "anything kept in /var/storage/hot on it is lost" in text
