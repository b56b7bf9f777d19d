"""Stable disk identity per provider: how a disk is named for the guest, and the path it gets.

The playbook never guesses `/dev/sdX`: each tier disk carries an id the guest can see, and the
inventory carries the resulting path (docs/contracts.md has the table).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecoma_infra.stack.model import TIERS, Disk, StorageSettings, Tier

# The OS disk is the template's first disk; every other tier has a fixed slot, so that adding
# or removing one disk never renumbers (and so never rewrites) another.
PROXMOX_OS_INTERFACE = "virtio0"
PROXMOX_TIER_INTERFACES: dict[Tier, str] = {
    "swap": "virtio1",
    "hot": "virtio2",
    "warm": "virtio3",
    "cold": "virtio4",
}
OCI_DEVICE_LETTERS = "bcdefg"  # oraclevda is the boot volume


@dataclass(frozen=True)
class StorageFact:
    """One disk as the inventory and the playbook see it."""

    tier: Tier
    device: str
    size_gb: int
    filesystem: str | None
    os_disk: bool

    def as_inventory(self) -> dict[str, object]:
        return {
            "tier": self.tier,
            "device": self.device,
            "size_gb": self.size_gb,
            "filesystem": self.filesystem,
            "os_disk": self.os_disk,
        }


def ordered(disks: list[Disk]) -> list[Disk]:
    """OS disk first, then the others in tier order: a stable order for names and slots."""
    return sorted(disks, key=lambda d: (not d.os, TIERS.index(d.tier)))


def extra_disks(disks: list[Disk]) -> list[Disk]:
    return [d for d in ordered(disks) if not d.os]


def proxmox_interface(disk: Disk) -> str:
    return PROXMOX_OS_INTERFACE if disk.os else PROXMOX_TIER_INTERFACES[disk.tier]


def proxmox_serial(disk: Disk) -> str:
    # virtio-blk exposes the serial as /dev/disk/by-id/virtio-<serial>; 20 bytes at most.
    return disk.tier


def proxmox_device(disk: Disk) -> str:
    return f"/dev/disk/by-id/virtio-{proxmox_serial(disk)}"


def gcp_device_name(disk: Disk) -> str:
    return f"ecoma-{disk.tier}"


def gcp_device(disk: Disk) -> str:
    return f"/dev/disk/by-id/google-{gcp_device_name(disk)}"


def oci_device(disks: list[Disk], disk: Disk) -> str:
    if disk.os:
        return "/dev/oracleoci/oraclevda"
    index = extra_disks(disks).index(disk)
    return f"/dev/oracleoci/oraclevd{OCI_DEVICE_LETTERS[index]}"


def aws_device(volume_id: str) -> str:
    """Nitro exposes an EBS volume's id (without its hyphen) as the NVMe serial."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


def fact(disk: Disk, device: str, storage: StorageSettings) -> StorageFact:
    return StorageFact(
        tier=disk.tier,
        device=device,
        size_gb=disk.size_gb,
        filesystem=storage.filesystem_for(disk),
        os_disk=disk.os,
    )
