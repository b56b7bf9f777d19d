"""Template 9000 as code: the Debian 12 cloud image downloaded to a datastore, and the template VM
made from it, so that a new site gets the seed's prerequisite by `up`
(`ecoma:proxmox.template_image`; off by default, when the template is made by hand).

Facts that decide the shape (pulumi_proxmoxve 8.6 docstrings, and the bpg provider it wraps):

- `download.File` with `content_type="import"`: PVE downloads the image itself (download-url API,
  no SSH), checks `checksum`, and stores it as `<datastore>:import/<file>`. "The `import` content
  type is not enabled by default": the datastore must be a directory storage with `import`
  content (PVE 8.3+). `overwrite=False`: "no size checks are performed and the file is never
  automatically replaced", so an `up` never downloads again behind the template's back.
- The disk's `import_from` takes that id ("The image must be of `import` content type
  (uncompressed images only)"; imported through the API, no SSH). The provider resizes the
  imported disk to `size` afterwards, and PVE cannot shrink one: `size` is at least the image's.
- `template=True` converts the VM after creation; `started=False` keeps it off. The OS disk sits
  on `template_boot_interface` with `boot_orders` naming only it: clones inherit the boot order
  and keep their cloned disk only on the template's interface (`ProxmoxNode`).
- A cloud-init drive (the `initialization` block) and a serial console with `vga: serial0`
  ("For many Cloud-Init images, it is required to configure a serial console and use it as a
  display", PVE admin guide, Cloud-Init support).

Protected like the stateful VMs: Pulumi refuses to delete or replace it, `destroy` leaves it in
place, PVE's protection flag blocks its removal, and a new image never rewrites its disk
(`ignore_changes=["disks"]`: `import_from` is read only at creation).
"""

from __future__ import annotations

import posixpath
import urllib.parse
from dataclasses import dataclass

import pulumi
import pulumi_proxmoxve as proxmox

from ecoma_infra.stack.model import ProxmoxSettings, TemplateImage

# The template's cloud-init drive: the slot PVE's own recipe uses (`qm set 9000 --ide2 ...`) and
# the provider's default; clones set their own cloud-init data on it.
CLOUD_INIT_INTERFACE = "ide2"


def image_file_name(image: TemplateImage) -> str:
    """The file name in the datastore: the URL's last segment (a dated build keeps its date)."""
    return posixpath.basename(urllib.parse.urlsplit(image.url).path)


@dataclass(frozen=True)
class ProxmoxTemplateArgs:
    stack: str
    settings: ProxmoxSettings
    image: TemplateImage

    @property
    def node_name(self) -> str:
        return self.settings.template_node or self.settings.hypervisors[0]


class ProxmoxTemplate(pulumi.ComponentResource):
    """The image download and template VM `template_vm_id` on the template node."""

    def __init__(
        self,
        name: str,
        args: ProxmoxTemplateArgs,
        *,
        provider: pulumi.ProviderResource,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("ecoma:proxmox:Template", name, None, opts)
        settings, image = args.settings, args.image
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        self.image = proxmox.download.File(
            f"{name}-image",
            node_name=args.node_name,
            datastore_id=image.import_datastore,
            content_type="import",
            url=image.url,
            file_name=image_file_name(image),
            checksum=image.sha512,
            checksum_algorithm="sha512",
            overwrite=False,
            # "Default is 600": a slow site link may need longer for ~400 MB.
            upload_timeout=1800,
            opts=child,
        )
        boot_interface = settings.template_boot_interface
        self.vm = proxmox.VmLegacy(
            f"{name}-vm",
            node_name=args.node_name,
            vm_id=settings.template_vm_id,
            name=f"ecoma-{args.stack}-debian12",
            description=(
                f"Debian 12 cloud-image template of ecoma {args.stack}, from "
                f"{image_file_name(image)} (managed by Pulumi; every on-prem node is cloned "
                "from it)"
            ),
            tags=sorted({"ecoma", args.stack, "template"}),
            template=True,
            started=False,
            on_boot=False,
            protection=True,
            operating_system=proxmox.VmLegacyOperatingSystemArgs(type="l26"),
            boot_orders=[boot_interface],
            # IO threads on SCSI disks need one controller per disk (as in `ProxmoxNode`).
            scsi_hardware="virtio-scsi-single" if boot_interface.startswith("scsi") else None,
            disks=[
                proxmox.VmLegacyDiskArgs(
                    interface=boot_interface,
                    datastore_id=image.datastore,
                    import_from=self.image.id,
                    size=image.disk_size_gb,
                    discard="on",
                    iothread=True,
                )
            ],
            initialization=proxmox.VmLegacyInitializationArgs(
                datastore_id=image.datastore, interface=CLOUD_INIT_INTERFACE
            ),
            serial_devices=[proxmox.VmLegacySerialDeviceArgs(device="socket")],
            vga=proxmox.VmLegacyVgaArgs(type="serial0"),
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    protect=True,
                    retain_on_delete=True,
                    ignore_changes=["disks"],
                ),
            ),
        )
        self.register_outputs({"vm_id": self.vm.vm_id, "image_id": self.image.id})
