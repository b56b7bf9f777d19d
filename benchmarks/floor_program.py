"""The SDK's floor for a preview of N resources: N trivial resources under the same SDK and the
same mock engine as `ecoma-infra preview --offline` (its recording monitor and mocks), in a
fresh process, as a user would wait for it.

Usage: .venv/bin/python benchmarks/floor_program.py N [--collector-off] [--typed]

With --collector-off the process treats the garbage collector as the CLI does (off while it
runs, frozen at exit), for the strictest comparison. With --typed the N resources are the
program's own kinds in equal parts, flat (no dependency, no apply): a component and the
provider classes of an on-prem node (`TailnetKey`, `FileLegacy`, `VmLegacy`) with inputs of
the same shape, i.e. what the SDK charges for these classes before the program does anything.
"""

from __future__ import annotations

import sys

if "--collector-off" in sys.argv:
    import atexit
    import gc

    gc.disable()
    atexit.register(gc.freeze)

import pulumi
import pulumi_proxmoxve as proxmox
import pulumi_tailscale as tailscale
from pulumi.runtime import settings
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from ecoma_infra.program.offline import OfflineMocks, RecordingMonitor


class _Node(pulumi.ComponentResource):
    def __init__(self, name: str) -> None:
        super().__init__("ecoma:bench:Node", name, None, None)
        self.register_outputs({})


def _typed(index: int) -> None:
    kind = index % 4
    name = f"n{index // 4}"
    if kind == 0:
        _Node(name)
    elif kind == 1:
        tailscale.TailnetKey(
            f"{name}-key", description=name, reusable=False, ephemeral=False,
            preauthorized=True, expiry=3600, tags=["tag:ecoma-wkr"],
        )  # fmt: skip
    elif kind == 2:
        proxmox.FileLegacy(
            f"{name}-user-data", node_name="pve1", datastore_id="local",
            content_type="snippets",
            source_raw=proxmox.FileLegacySourceRawArgs(data="#cloud-config\n" + "x" * 1500,
                                                       file_name=f"{name}.yaml"),
        )  # fmt: skip
    else:
        vm = proxmox
        vm.VmLegacy(
            f"{name}-vm", node_name="pve1", name=name, vm_id=10000 + index, description=name,
            tags=["ecoma", "wkr"],
            clone=vm.VmLegacyCloneArgs(vm_id=9000, node_name="pve1", datastore_id="x", full=True),
            cpu=vm.VmLegacyCpuArgs(cores=4, type="x86-64-v2-AES"),
            memory=vm.VmLegacyMemoryArgs(dedicated=16384, floating=0),
            agent=vm.VmLegacyAgentArgs(enabled=True, timeout="15m"), boot_orders=["scsi0"],
            disks=[
                vm.VmLegacyDiskArgs(interface=slot, datastore_id="x", size=64, serial=tier,
                                    file_format="raw", discard="on", iothread=True)
                for slot, tier in (("scsi0", "hot"), ("virtio1", "swap"), ("virtio3", "warm"))
            ],
            network_devices=[vm.VmLegacyNetworkDeviceArgs(bridge="ecomanet", model="virtio")],
            initialization=vm.VmLegacyInitializationArgs(
                datastore_id="x",
                ip_configs=[vm.VmLegacyInitializationIpConfigArgs(
                    ipv4=vm.VmLegacyInitializationIpConfigIpv4Args(
                        address="10.41.1.20/20", gateway="10.41.1.1"))],
                dns=vm.VmLegacyInitializationDnsArgs(servers=["1.1.1.1"], domain="x"),
                user_data_file_id="local:snippets/x.yaml",
            ),
            operating_system=vm.VmLegacyOperatingSystemArgs(type="l26"), on_boot=True,
            started=True, stop_on_destroy=True, protection=False,
        )  # fmt: skip


def main() -> None:
    count = int(sys.argv[1])
    settings.reset_options()
    monitor = RecordingMonitor(OfflineMocks())
    pulumi.runtime.set_mocks(
        monitor.mocks, project="ecoma", stack="floor", preview=False, monitor=monitor
    )
    if "--typed" in sys.argv:
        for index in range(count):
            _typed(index)
    else:
        for index in range(count):
            pulumi.CustomResource("ecoma:bench:Trivial", f"trivial-{index}", {"index": index})
    _sync_await(wait_for_rpcs())
    assert len(monitor.records) == count


if __name__ == "__main__":
    main()
