"""Stable disk identity per provider: how a disk is named for the guest, and the path it gets.

The playbook never guesses `/dev/sdX`: each tier disk carries an id the guest can see, and the
inventory carries the resulting path (docs/contracts.md has the table).
"""

from __future__ import annotations

from dataclasses import dataclass

from ecoma_infra.stack.model import TIERS, Disk, StorageSettings, Tier

# The OS disk stays on the interface the template boots from (`proxmox.template_boot_interface`):
# the provider keeps a cloned disk only where the interface matches. Every other tier has a fixed
# virtio slot, so that adding or removing one disk never renumbers (and so never rewrites) another.
PROXMOX_TIER_INTERFACES: dict[Tier, str] = {
    "swap": "virtio1",
    "hot": "virtio2",
    "warm": "virtio3",
    "cold": "virtio4",
}
# What Debian's udev (60-persistent-storage.rules) links a disk's serial as, per bus: virtio-blk
# exposes the serial itself; a QEMU SCSI disk's page-0x83 id is vendor "QEMU", model
# "QEMU HARDDISK" and the serial, which scsi_id joins as 0QEMU_QEMU_HARDDISK_<serial>.
_BY_ID_PREFIX = {"virtio": "virtio-", "scsi": "scsi-0QEMU_QEMU_HARDDISK_"}


@dataclass(frozen=True)
class StorageFact:
    """One disk as the inventory and the playbook see it."""

    tier: Tier
    device: str
    size_gb: int
    filesystem: str | None
    os_disk: bool
    iscsi: dict[str, object] | None = None  # {address, port, iqn}: log in before `device` exists

    def as_inventory(self) -> dict[str, object]:
        found: dict[str, object] = {
            "tier": self.tier,
            "device": self.device,
            "size_gb": self.size_gb,
            "filesystem": self.filesystem,
            "os_disk": self.os_disk,
        }
        if self.iscsi is not None:
            found["iscsi"] = dict(self.iscsi)
        return found


def ordered(disks: list[Disk]) -> list[Disk]:
    """OS disk first, then the others in tier order: a stable order for names and slots."""
    return sorted(disks, key=lambda d: (not d.os, TIERS.index(d.tier)))


def extra_disks(disks: list[Disk]) -> list[Disk]:
    return [d for d in ordered(disks) if not d.os]


def proxmox_interface(disk: Disk, boot_interface: str) -> str:
    return boot_interface if disk.os else PROXMOX_TIER_INTERFACES[disk.tier]


def proxmox_serial(disk: Disk) -> str:
    # The guest sees the serial in its /dev/disk/by-id link; Proxmox allows 20 bytes.
    return disk.tier


def proxmox_device(disk: Disk, boot_interface: str) -> str:
    bus = proxmox_interface(disk, boot_interface).rstrip("0123456789")
    return f"/dev/disk/by-id/{_BY_ID_PREFIX[bus]}{proxmox_serial(disk)}"


def gcp_device_name(disk: Disk) -> str:
    return f"ecoma-{disk.tier}"


def gcp_device(disk: Disk) -> str:
    return f"/dev/disk/by-id/google-{gcp_device_name(disk)}"


def iscsi_device(address: str, port: int, iqn: str) -> str:
    """Where Debian's udev links the one LUN of a logged-in iSCSI session (OCI exports each
    volume as LUN 1 of its own target)."""
    return f"/dev/disk/by-path/ip-{address}:{port}-iscsi-{iqn}-lun-1"


def aws_device(volume_id: str) -> str:
    """Nitro exposes an EBS volume's id (without its hyphen) as the NVMe serial."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


def fact(
    disk: Disk,
    device: str,
    storage: StorageSettings,
    iscsi: dict[str, object] | None = None,
) -> StorageFact:
    return StorageFact(
        tier=disk.tier,
        device=device,
        size_gb=disk.size_gb,
        filesystem=storage.filesystem_for(disk),
        os_disk=disk.os,
        iscsi=iscsi,
    )
