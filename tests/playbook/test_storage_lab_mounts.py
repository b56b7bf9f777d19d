"""The storage role must not report a mount that is not there: the four ways it could, each on a
real Debian host of the lab with real loop devices, each proving the run stopped that host with a
message naming host, tier, device and what it found, and that not a byte of any disk changed.

- tmpfs-1: a tmpfs is mounted on /var/storage/hot (writes would go to RAM); the hot disk is blank.
- swap-1: the hot tier's old disk is still mounted on /var/storage/hot and in the fstab by its
  UUID; the by-id link now names a new, blank disk.
- hide-1: /var/storage/warm holds files; mounting the warm disk would hide them.
- adopt-1: the fstab names the hot tier's old disk by UUID; the disk now at the by-id link holds
  ext4 and another machine's data. Listed in storage_replaced_tiers, the same disk is adopted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_storage_lab import (
    CLUSTER,
    DATA_MB,
    LAB_SWITCHES,
    _disk_digest,
    _lab_up_when_free,
    _playbook,
    _recap,
    _root,
)

from ecoma_infra.lab import state as lab_state
from ecoma_infra.lab.engine import lab_inventory_overrides
from ecoma_infra.lab.state import LabDisk, LabHost, LabSpec, LabState

pytestmark = pytest.mark.lab

OLD_UUID = "0b0e4a1c-5d1e-4f7a-9c33-2a1d5e6f7a80"  # the hot disk that was swapped out
NEW_UUID = "5e1f0d2c-0000-4000-8000-00000000a0a0"  # the disk put in its place


def _disk(tier: str, by_id: str | None = None) -> LabDisk:
    return LabDisk(tier=tier, by_id=by_id or f"virtio-{tier}", size_mb=DATA_MB)


SPEC = LabSpec(
    hosts=[
        LabHost("tmpfs-1", "10.41.1.51", [_disk("hot")]),
        LabHost("swap-1", "10.41.1.52", [_disk("hot"), _disk("old", "virtio-old")]),
        LabHost("hide-1", "10.41.1.53", [_disk("warm")]),
        LabHost("adopt-1", "10.41.1.54", [_disk("hot")]),
    ]
)
# The data tier of each host in the inventory; the OS disk is the lab's root (tier cold).
TIER = {"tmpfs-1": "hot", "swap-1": "hot", "hide-1": "warm", "adopt-1": "hot"}
# What the refusal must say it found, per host.
FOUND = {
    "tmpfs-1": "/var/storage/hot already has tmpfs (tmpfs) mounted on it, not this disk",
    "swap-1": "/var/storage/hot already has /dev/loop",
    "hide-1": "/var/storage/warm is no mount point but holds 2 entries (notes.txt, photos)",
    "adopt-1": f"/etc/fstab mounts UUID={OLD_UUID} on /var/storage/hot, but the disk is now UUID",
}


def _inventory(state: LabState) -> dict[str, Any]:
    overrides = lab_inventory_overrides(state)
    hosts = {}
    for host, tier in TIER.items():
        hosts[host] = {
            "ecoma_node_name": host,
            "ecoma_role": "sts",
            "ecoma_provider": "proxmox",
            "ecoma_burst": False,
            "ecoma_expires_at": None,
            "ecoma_node_labels": {"topology.ecoma.io/provider": "proxmox"},
            "ecoma_server_labels": {},
            "ecoma_node_taints": [],
            "ecoma_tailscale_router": False,
            "ecoma_tailscale_accept_routes": False,
            "ecoma_storage": [
                {
                    "tier": "cold",
                    "device": "/dev/vda",
                    "size_gb": 1,
                    "filesystem": "ext4",
                    "os_disk": True,
                },
                {
                    "tier": tier,
                    "device": f"/dev/disk/by-id/virtio-{tier}",
                    "size_gb": 1,
                    "filesystem": "ext4",
                    "os_disk": False,
                },
            ],
            **overrides[host],
        }
    children: dict[str, Any] = {
        group: {"hosts": {}}
        for group in ("ecoma_cpl", "ecoma_ops", "ecoma_wkr", "ecoma_aws", "ecoma_gcp", "ecoma_oci")
    }
    children["ecoma_sts"] = {"hosts": hosts}
    children["ecoma_proxmox"] = {"hosts": {host: {} for host in hosts}}
    children["ecoma_burst"] = {"hosts": {}}
    return {
        "all": {
            "vars": {"ecoma_stack": "lab", "ecoma_cluster": CLUSTER, **LAB_SWITCHES},
            "children": children,
        }
    }


def _fingerprints(state: LabState, host: str) -> dict[str, str]:
    """The digest of every loop device of the host, read by device, whatever its by-id link
    says (on the disk, past the page cache: test_storage_lab._disk_digest)."""
    return {
        disk.by_id: _disk_digest(state, host, disk.loop_device) for disk in state.host(host).disks
    }


def _prepare(state: LabState) -> None:
    # Filesystems made here without lazy initialisation: a mounted ext4 then writes nothing by
    # itself, so any change of a byte is the role's.
    mkfs = "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0"
    _root(state, "tmpfs-1", "mkdir -p /var/storage/hot && mount -t tmpfs tmpfs /var/storage/hot"
          " && echo 'in RAM' > /var/storage/hot/ram.txt")  # fmt: skip
    old = "/dev/disk/by-id/virtio-old"
    _root(state, "swap-1", f"{mkfs} {old} && mkdir -p /var/storage/hot"
          f" && mount {old} /var/storage/hot && echo 'old data' > /var/storage/hot/old.txt && sync"
          f" && echo \"UUID=$(blkid -p -o value -s UUID {old}) /var/storage/hot ext4"
          " defaults,nofail 0 0\" >> /etc/fstab")  # fmt: skip
    _root(state, "hide-1", "mkdir -p /var/storage/warm/photos"
          " && echo 'keep me' > /var/storage/warm/notes.txt")  # fmt: skip
    hot = "/dev/disk/by-id/virtio-hot"
    line = f"UUID={OLD_UUID} /var/storage/hot ext4 defaults,nofail 0 0"
    _root(state, "adopt-1", f"{mkfs} -U {NEW_UUID} {hot} && mkdir -p /mnt/seed"
          f" && mount {hot} /mnt/seed && echo 'other machine' > /mnt/seed/theirs.txt"
          f" && umount /mnt/seed && echo '{line}' >> /etc/fstab")  # fmt: skip


@pytest.fixture(scope="module")
def mounts_lab(lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    factory = _lab_up_when_free(lab_cache_dir, tmp_path_factory.mktemp("mounts-lab"), spec=SPEC)
    try:
        state = lab_state.load_state(factory.state_dirs[-1])
        assert state is not None
        _prepare(state)
        before = {host: _fingerprints(state, host) for host in TIER}
        fstab_before = {host: _root(state, host, "cat /etc/fstab") for host in TIER}
        mounts_before = {host: _root(state, host, "findmnt -rn -o TARGET,SOURCE") for host in TIER}
        inventory = Path(state.state_dir).parent / "inventory.json"
        inventory.write_text(json.dumps(_inventory(state)))
        first = _playbook(inventory)
        yield {
            "state": state,
            "inventory": inventory,
            "output": first.stdout + first.stderr,
            "before": before,
            "after": {host: _fingerprints(state, host) for host in TIER},
            "fstab_before": fstab_before,
            "fstab_after": {host: _root(state, host, "cat /etc/fstab") for host in TIER},
            "mounts_before": mounts_before,
            "mounts_after": {
                host: _root(state, host, "findmnt -rn -o TARGET,SOURCE") for host in TIER
            },
        }
    finally:
        factory.down_all()


@pytest.mark.parametrize("host", sorted(TIER))
def test_a_mount_that_would_lie_stops_the_host_untouched(
    mounts_lab: dict[str, Any], host: str
) -> None:
    output = mounts_lab["output"]
    assert _recap(output, host)["failed"] == 1, output[-4000:]
    lines = [line for line in output.splitlines() if f"storage: host {host}: refusing" in line]
    assert lines, output[-4000:]
    tier = TIER[host]
    assert f"tier {tier}, device /dev/disk/by-id/virtio-{tier}" in lines[0]
    assert FOUND[host] in lines[0]
    assert "Nothing was written to any disk of this host" in lines[0]
    Path("/tmp/mounts_out.txt").write_text(output)
    assert mounts_lab["after"][host] == mounts_lab["before"][host], "a byte of a disk changed"
    assert mounts_lab["fstab_after"][host] == mounts_lab["fstab_before"][host]
    assert mounts_lab["mounts_after"][host] == mounts_lab["mounts_before"][host]


def test_the_files_and_mounts_in_the_way_are_still_there(mounts_lab: dict[str, Any]) -> None:
    state = mounts_lab["state"]
    assert _root(state, "tmpfs-1", "cat /var/storage/hot/ram.txt") == "in RAM\n"
    assert _root(state, "swap-1", "cat /var/storage/hot/old.txt") == "old data\n"
    assert _root(state, "hide-1", "cat /var/storage/warm/notes.txt") == "keep me\n"
    blank = _root(state, "tmpfs-1", "blkid -p /dev/disk/by-id/virtio-hot; echo rc=$?")
    assert blank.strip() == "rc=2", "the blank disk was not formatted"


# Last: it changes the adopt-1 host the tests above look at.
def test_a_tier_replaced_on_purpose_is_adopted_with_a_warning(mounts_lab: dict[str, Any]) -> None:
    state, inventory = mounts_lab["state"], mounts_lab["inventory"]
    result = _playbook(inventory, "--limit", "adopt-1", "-e", '{"storage_replaced_tiers": ["hot"]}')
    output = result.stdout + result.stderr
    assert _recap(output, "adopt-1")["failed"] == 0, output[-4000:]
    assert f"tier hot: /etc/fstab mounted UUID={OLD_UUID}" in output
    fstab = _root(state, "adopt-1", "cat /etc/fstab")
    assert OLD_UUID not in fstab
    assert re.search(
        r"^UUID=5e1f0d2c-0000-4000-8000-00000000a0a0 /var/storage/hot ext4 ", fstab, re.M
    )
    assert _root(state, "adopt-1", "cat /var/storage/hot/theirs.txt") == "other machine\n"
