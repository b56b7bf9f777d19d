"""The Proxmox checks of `doctor`, read-only through the Proxmox API (`ProxmoxApi`, proxmoxer):
the API and its TLS, the token's privileges, the hypervisors, the datastores and their content
types, template 9000, the SDN zone, and the stack's VM ids.

Where PVE decides what the token may see, the checks say so: datastores, zones and VMs the token
cannot audit are left out of PVE's listings (pve-storage `API2/Storage/Status.pm`, pve-network
`SDN/Zones.pm`, pve-manager `API2/Cluster.pm`), so "not listed" reads "absent, or not visible to
the token"; a VM id is tested with `/cluster/nextid?vmid=N`, which sees every VM.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ecoma_infra.errors import EcomaError
from ecoma_infra.ops.doctor.report import Check, fail, not_checked, ok, warn
from ecoma_infra.platforms.proxmox import PROXMOX_TOKEN_ENV, ProxmoxApi, ProxmoxApiError
from ecoma_infra.program.disks import ordered
from ecoma_infra.stack.model import NAMESPACE, Node, StackConfig

AREA = "proxmox"
ApiFactory = Callable[[StackConfig, Mapping[str, str]], ProxmoxApi]

# The privileges `up` needs, path by path, from the API's permission checks: clone ("'VM.Clone'
# permissions on /vms/{vmid}, and 'VM.Allocate' permissions on /vms/{newid}", qemu-server), disk
# and cloud-init settings, power, migrating a clone made on the template node to its own
# hypervisor (the provider clones there first on non-shared storage), the datastores' space, and
# SDN objects (pve-network: zones on /sdn/zones, vnets on /sdn/zones/<zone>, subnets and a NIC's
# use on /sdn/zones/<zone>/<vnet>, apply on /sdn).
VM_PRIVILEGES = (
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
)
# Reading the guest agent (the provider waits for it): PVE 9 replaced VM.Monitor by
# VM.GuestAgent.* (pve-access-control 9.0.2).
AGENT_PRIVILEGE = {8: "VM.Monitor", 9: "VM.GuestAgent.Audit"}
DATASTORE_PRIVILEGES = ("Datastore.AllocateSpace", "Datastore.Audit")
# download.File: "Besides the `Datastore.AllocateTemplate` privilege, this resource requires both
# the `Sys.Audit` and `Sys.Modify` privileges" (pulumi_proxmoxve download/file.py).
DOWNLOAD_PRIVILEGES = ("Sys.Audit", "Sys.Modify")

# qemu-server Drive.pm: a cloud-init volume is named `[vm-<id>-]cloudinit[.<format>]`.
_CLOUDINIT_VOLUME = re.compile(r"[:/](?:vm-\d+-)?cloudinit(?:\.(?:raw|qcow2|vmdk))?$")
_DRIVE_KEY = re.compile(r"^(ide|sata|scsi|virtio)\d+$")
_SIZE = re.compile(r"(?:^|,)size=(\d+(?:\.\d+)?)([KMGT]?)(?:,|$)")
_UNITS_GB = {"K": 1 / 1024**2, "M": 1 / 1024, "G": 1.0, "T": 1024.0, "": 1 / 1024**3}
MIN_MAJOR = 8  # the provider supports PVE 8 ("with some limitations") and 9
IMPORT_CONTENT_SINCE = (8, 3)  # directory storages gained the `import` content type in 8.3


def from_environment(config: StackConfig, environ: Mapping[str, str]) -> ProxmoxApi:
    return ProxmoxApi.from_environment(config.proxmox, environ, timeout=15.0)


def proxmox_checks(
    config: StackConfig,
    environ: Mapping[str, str],
    *,
    stack: str,
    api_factory: ApiFactory = from_environment,
) -> list[Check]:
    """Every Proxmox check, in the order a failure explains the next ones."""
    later = ("privileges", "hypervisors", "datastores", "template", "sdn", "vm ids")
    if not environ.get(PROXMOX_TOKEN_ENV):
        why = f"{PROXMOX_TOKEN_ENV} is not set"
        return [
            not_checked(
                AREA,
                "api",
                why,
                f"export {PROXMOX_TOKEN_ENV}=USER@REALM!TOKENID=SECRET (the stack's secret: "
                f"`pulumi config get {NAMESPACE}:proxmox_api_token`)",
            ),
            *(not_checked(AREA, name, why) for name in later),
        ]
    try:
        api = api_factory(config, environ)
        info = api.version_info()
    except EcomaError as error:
        return [
            fail(AREA, "api", str(error), _api_fix(error)),
            *(not_checked(AREA, name, "the Proxmox API did not answer") for name in later),
        ]
    return _Session(config, api, stack, info).run()


def _api_fix(error: EcomaError) -> str:
    status = getattr(error, "status", 0)
    if "is not of the form" in str(error):
        return f"export {PROXMOX_TOKEN_ENV} as USER@REALM!TOKENID=SECRET"
    if status == 401:
        return f"export a valid, unexpired token in {PROXMOX_TOKEN_ENV}"
    if "TLS" in str(error):
        return (
            f"set {NAMESPACE}:proxmox.insecure: true for PVE's self-signed certificate, or "
            "export REQUESTS_CA_BUNDLE=<PEM of the CA that signed it>"
        )
    return f"check {NAMESPACE}:proxmox.endpoint and that this machine reaches it"


@dataclass
class _Session:
    config: StackConfig
    api: ProxmoxApi
    stack: str
    info: dict[str, object]

    @property
    def template_node(self) -> str:
        return self.config.proxmox.template_node or self.config.proxmox.hypervisors[0]

    @property
    def release(self) -> tuple[int, int]:
        text = str(self.info.get("release") or self.info.get("version") or "0.0")
        major, minor, *_ = [*(int(part) for part in re.findall(r"\d+", text)[:2]), 0, 0]
        return major, minor

    def run(self) -> list[Check]:
        checks = [self._version()]
        checks.append(self._privileges())
        online = self._hypervisors(checks)
        checks += self._datastores(online)
        try:
            resources = {
                int(item["vmid"]): item
                for item in self.api.vm_resources()
                if str(item.get("vmid", "")).isdigit()
            }
        except ProxmoxApiError as error:
            checks.append(not_checked(AREA, "template", f"listing VMs failed: {error}"))
            checks.append(not_checked(AREA, "vm ids", f"listing VMs failed: {error}"))
            checks += self._sdn(online)
            return checks
        checks += self._template(resources)
        checks += self._sdn(online)
        checks += self._vm_ids(resources)
        return checks

    # --- the API ------------------------------------------------------------------------------

    def _version(self) -> Check:
        settings = self.config.proxmox
        tls = (
            f"TLS not verified ({NAMESPACE}:proxmox.insecure)"
            if settings.insecure
            else "TLS verified"
        )
        version = self.info.get("version", "?")
        seen = f"PVE {version} answers at {settings.endpoint} ({tls})"
        major, minor = self.release
        if major < MIN_MAJOR:
            return fail(
                AREA,
                "api",
                f"{seen}; the Proxmox provider (bpg) supports PVE 8 and 9",
                "upgrade the cluster to PVE 8 or 9",
            )
        if settings.template_image is not None and (major, minor) < IMPORT_CONTENT_SINCE:
            return fail(
                AREA,
                "api",
                f"{seen}; {NAMESPACE}:proxmox.template_image downloads the image as `import` "
                "content, which directory storages have since PVE 8.3",
                f"upgrade to PVE 8.3 or later, or remove {NAMESPACE}:proxmox.template_image and "
                "make the template by hand (docs/first-deployment.md)",
            )
        return ok(AREA, "api", seen)

    # --- privileges ---------------------------------------------------------------------------

    def required_privileges(self) -> dict[str, set[str]]:
        """Path -> the privileges `up` needs there."""
        config, settings = self.config, self.config.proxmox
        major = self.release[0]
        agent = AGENT_PRIVILEGE[9] if major >= 9 else AGENT_PRIVILEGE[8]
        needed: dict[str, set[str]] = {}

        def add(path: str, privileges: Iterable[str]) -> None:
            needed.setdefault(path, set()).update(privileges)

        template = f"/vms/{settings.template_vm_id}"
        add(template, ("VM.Audit", "VM.Clone"))
        if settings.template_image is not None:
            add(template, VM_PRIVILEGES)
            add(f"/storage/{settings.template_image.import_datastore}", ("Datastore.Audit",))
            add(
                f"/storage/{settings.template_image.import_datastore}",
                ("Datastore.AllocateTemplate",),
            )
            add(f"/storage/{settings.template_image.datastore}", DATASTORE_PRIVILEGES)
            add("/", DOWNLOAD_PRIVILEGES)
        for node in config.nodes:
            add(f"/vms/{node.vm_id}", (*VM_PRIVILEGES, agent))
            if node.hypervisor != self.template_node:
                add(f"/vms/{node.vm_id}", ("VM.Migrate",))
            for disk in node.disks:
                add(f"/storage/{settings.datastores[disk.tier]}", DATASTORE_PRIVILEGES)
        # Snippets are uploaded over SSH; the provider reads the datastore through the API.
        add(f"/storage/{settings.snippets_datastore}", ("Datastore.Audit",))
        sdn = settings.sdn
        add("/sdn", ("SDN.Allocate",))  # apply (PUT /cluster/sdn)
        add("/sdn/zones", ("SDN.Allocate",))  # create the zone
        add(f"/sdn/zones/{sdn.zone}", ("SDN.Allocate", "SDN.Audit"))  # the vnet in it
        add(f"/sdn/zones/{sdn.zone}/{sdn.vnet}", ("SDN.Allocate", "SDN.Use"))  # subnet, NICs
        return needed

    def _privileges(self) -> Check:
        token = self.api.token_id.full
        try:
            held = self.api.permissions()
        except ProxmoxApiError as error:
            return fail(
                AREA,
                "privileges",
                f"reading the token's own permissions failed: {error}",
                "check that the token may read /access/permissions (every token may)",
            )
        missing: dict[str, list[str]] = {}
        needed = self.required_privileges()
        for path, privileges in sorted(needed.items()):
            lacking = sorted(p for p in privileges if not holds(held, path, p))
            if lacking:
                missing[path] = lacking
        count = sum(len(p) for p in needed.values())
        if not missing:
            return ok(
                AREA,
                "privileges",
                f"{token} holds all {count} privileges `up` needs on {len(needed)} paths",
            )
        shown = "; ".join(f"{path}: {', '.join(privs)}" for path, privs in missing.items())
        every = sorted({p for privs in needed.values() for p in privs})
        return fail(
            AREA,
            "privileges",
            f"{token} lacks {sum(len(p) for p in missing.values())} privileges `up` needs: {shown}",
            f'`pveum role add EcomaInfra --privs "{",".join(every)}"` (or `pveum role modify`), '
            f"then `pveum acl modify <path> --users {self.api.token_id.userid} --tokens {token} "
            f"--roles EcomaInfra` for {', '.join(_covering_paths(missing))} (a "
            "privilege-separated token holds only what both it and its user hold)",
        )

    # --- hypervisors --------------------------------------------------------------------------

    def _hypervisors(self, checks: list[Check]) -> set[str]:
        """One check per hypervisor; returns those online."""
        wanted = list(dict.fromkeys(self.config.proxmox.hypervisors))
        try:
            listed = {str(item.get("node")): item for item in self.api.nodes()}
        except ProxmoxApiError as error:
            checks.append(fail(AREA, "hypervisors", f"listing nodes failed: {error}", _read_fix()))
            return set()
        online: set[str] = set()
        for name in wanted:
            item = listed.get(name)
            check_name = f"hypervisor {name}"
            if item is None:
                checks.append(
                    fail(
                        AREA,
                        check_name,
                        f"no node {name} in the cluster (it has: {', '.join(sorted(listed))})",
                        f"correct {NAMESPACE}:proxmox.hypervisors (and the nodes' `hypervisor`) "
                        "to the cluster's node names (`pvecm nodes`)",
                    )
                )
            elif item.get("status") != "online":
                checks.append(
                    fail(
                        AREA,
                        check_name,
                        f"{name} is {item.get('status', 'in an unknown state')}",
                        f"start {name} or bring it back into the cluster (`pvecm status` on "
                        "another node); clones to it would fail",
                    )
                )
            else:
                online.add(name)
                checks.append(ok(AREA, check_name, f"{name} is online"))
        return online

    # --- datastores ---------------------------------------------------------------------------

    def needed_content(self) -> dict[str, dict[str, set[str]]]:
        """Hypervisor -> datastore -> the content types `up` puts there."""
        settings = self.config.proxmox
        needed: dict[str, dict[str, set[str]]] = {}

        def add(hypervisor: str, datastore: str, content: str) -> None:
            needed.setdefault(hypervisor, {}).setdefault(datastore, set()).add(content)

        for node in self.config.nodes:
            for disk in node.disks:
                add(node.hypervisor, settings.datastores[disk.tier], "images")
            # The user data snippet is written to this datastore on the VM's hypervisor.
            add(node.hypervisor, settings.snippets_datastore, "snippets")
            if node.hypervisor != self.template_node:
                # A clone to another node is made on the template's node first, then migrated,
                # keeping its datastore (bpg provider, virtual_environment_vm `clone`).
                os_disk = ordered(node.disks)[0]
                add(self.template_node, settings.datastores[os_disk.tier], "images")
        if settings.template_image is not None:
            add(self.template_node, settings.template_image.import_datastore, "import")
            add(self.template_node, settings.template_image.datastore, "images")
        return needed

    def _datastores(self, online: set[str]) -> list[Check]:
        checks: list[Check] = []
        for hypervisor, datastores in sorted(self.needed_content().items()):
            if hypervisor not in online:
                checks += [
                    not_checked(
                        AREA, f"datastore {name} on {hypervisor}", f"{hypervisor} is not online"
                    )
                    for name in sorted(datastores)
                ]
                continue
            try:
                listed = {
                    str(item.get("storage")): item for item in self.api.node_storage(hypervisor)
                }
            except ProxmoxApiError as error:
                checks.append(
                    fail(
                        AREA, f"datastores on {hypervisor}", f"listing failed: {error}", _read_fix()
                    )
                )
                continue
            for name, contents in sorted(datastores.items()):
                checks.append(self._datastore(hypervisor, name, contents, listed.get(name)))
        return checks

    def _datastore(
        self, hypervisor: str, name: str, contents: set[str], item: Mapping[str, object] | None
    ) -> Check:
        check_name = f"datastore {name} on {hypervisor}"
        wanted = ", ".join(sorted(contents))
        if item is None:
            return fail(
                AREA,
                check_name,
                f"{name} is not listed on {hypervisor}: it does not exist there, or "
                f"{self.api.token_id} lacks Datastore.Audit on /storage/{name}",
                f"add {name} for {hypervisor} (Datacenter > Storage > Nodes) with content "
                f"{wanted}, or name an existing one in the stack file, or grant Datastore.Audit "
                f"on /storage/{name}",
            )
        have = {part.strip() for part in str(item.get("content", "")).split(",") if part.strip()}
        lacking = sorted(contents - have)
        if lacking:
            kept = ",".join(sorted(have | contents))
            extra = (
                " (`import` needs a directory storage on PVE 8.3+)" if "import" in lacking else ""
            )
            return fail(
                AREA,
                check_name,
                f"{name} on {hypervisor} holds {', '.join(sorted(have)) or 'nothing'}, not "
                f"{', '.join(lacking)}{extra}",
                f"`pvesm set {name} --content {kept}`",
            )
        if str(item.get("enabled", 1)) in ("0", "False") or str(item.get("active", 1)) in (
            "0",
            "False",
        ):
            return fail(
                AREA,
                check_name,
                f"{name} on {hypervisor} is not enabled and active",
                f"enable it (`pvesm set {name} --disable 0`) and check its backing storage "
                f"(`pvesm status` on {hypervisor})",
            )
        return ok(AREA, check_name, f"{name} takes {wanted} on {hypervisor}, enabled and active")

    # --- template -----------------------------------------------------------------------------

    def _template(self, resources: Mapping[int, Mapping[str, object]]) -> list[Check]:
        settings = self.config.proxmox
        vmid = settings.template_vm_id
        name = f"template {vmid}"
        item = resources.get(vmid)
        if settings.template_image is not None:
            return [self._made_template(name, vmid, item)]
        if item is None:
            return [self._missing_template(name, vmid)]
        node = str(item.get("node"))
        if node != self.template_node:
            return [
                fail(
                    AREA,
                    name,
                    f"VM {vmid} is on {node}, not on the template node {self.template_node}",
                    f"set {NAMESPACE}:proxmox.template_node: {node}",
                )
            ]
        try:
            config = self.api.vm_config(node, vmid)
        except ProxmoxApiError as error:
            return [fail(AREA, name, f"reading its configuration failed: {error}", _read_fix())]
        return [
            self._is_template(name, vmid, node, config),
            self._cloud_init_drive(name, vmid, config),
            self._boot(name, vmid, config),
            self._disk_size(name, vmid, config),
        ]

    def _made_template(self, name: str, vmid: int, item: Mapping[str, object] | None) -> Check:
        where = f"{NAMESPACE}:proxmox.template_image"
        if item is None:
            free = self._free(vmid)
            if isinstance(free, Check):
                return free.renamed(name)
            if free:
                return ok(AREA, name, f"VM {vmid} does not exist yet: `up` makes it ({where})")
            return fail(
                AREA,
                name,
                f"VM id {vmid} is taken by a VM or container {self.api.token_id} cannot see, so "
                "`up` could not make the template",
                f"grant VM.Audit on /vms/{vmid} to see it, or choose another "
                f"{NAMESPACE}:proxmox.template_vm_id",
            )
        tags = _tags(item.get("tags"))
        if {"ecoma", self.stack, "template"} <= tags:
            return ok(AREA, name, f"VM {vmid} is this stack's template, made by `up` ({where})")
        return fail(
            AREA,
            name,
            f"VM {vmid} ('{item.get('name', '')}' on {item.get('node')}) already exists and is "
            f"not this stack's: `up` would fail making the template ({where})",
            f"remove {where} to use the existing template as it is (doctor then checks it), or "
            f"choose another {NAMESPACE}:proxmox.template_vm_id",
        )

    def _missing_template(self, name: str, vmid: int) -> Check:
        free = self._free(vmid)
        if isinstance(free, Check):
            return free.renamed(name)
        if free:
            return fail(
                AREA,
                name,
                f"VM {vmid} does not exist; every on-prem node is cloned from it",
                f"make it (docs/first-deployment.md, 'The template'), or set "
                f"{NAMESPACE}:proxmox.template_image to have `up` make it",
            )
        return fail(
            AREA,
            name,
            f"VM {vmid} exists but {self.api.token_id} cannot see it (no VM.Audit on /vms/{vmid})",
            f"grant VM.Audit and VM.Clone on /vms/{vmid} to the token",
        )

    def _is_template(self, name: str, vmid: int, node: str, config: Mapping[str, object]) -> Check:
        if str(config.get("template", 0)) in ("1", "True", "true"):
            return ok(AREA, f"{name} is a template", f"VM {vmid} on {node} is a template")
        return fail(
            AREA,
            f"{name} is a template",
            f"VM {vmid} on {node} is a plain VM, not a template",
            f"once it is prepared (image disk, cloud-init drive), run `qm template {vmid}` on "
            f"{node}; it cannot be turned back",
        )

    def _cloud_init_drive(self, name: str, vmid: int, config: Mapping[str, object]) -> Check:
        for key, value in sorted(config.items()):
            if not _DRIVE_KEY.match(key) or key.startswith("virtio"):
                continue
            volume, _, options = str(value).partition(",")
            if _CLOUDINIT_VOLUME.search(volume) and "media=cdrom" in options.split(","):
                return ok(AREA, f"{name} cloud-init drive", f"{key}: {volume}")
        boot_disk = str(config.get(self.config.proxmox.template_boot_interface, ""))
        datastore = boot_disk.partition(":")[0] if ":" in boot_disk else "local-lvm"
        return fail(
            AREA,
            f"{name} cloud-init drive",
            f"VM {vmid} has no cloud-init drive: clones would boot without their network and "
            "user data",
            f"`qm set {vmid} --ide2 {datastore}:cloudinit`",
        )

    def _boot(self, name: str, vmid: int, config: Mapping[str, object]) -> Check:
        expected = self.config.proxmox.template_boot_interface
        where = f"{NAMESPACE}:proxmox.template_boot_interface"
        boot = str(config.get("boot", ""))
        order = next(
            (part.split("=", 1)[1] for part in boot.split(",") if part.startswith("order=")), None
        )
        check_name = f"{name} boot"
        if order is None:
            return warn(
                AREA,
                check_name,
                f"VM {vmid} has a legacy boot setting ({boot or 'none: PVE default cdn'}): PVE "
                "boots the first disk it finds, which clones inherit",
                f"`qm set {vmid} --boot order={expected}`",
            )
        first = order.split(";")[0]
        disk = str(config.get(first, ""))
        if first != expected:
            return fail(
                AREA,
                check_name,
                f"VM {vmid} boots from {first} (order={order}); the stack says {expected}, so "
                f"clones would get a blank {expected} beside the template's disk",
                f"set {where}: {first} if the image disk is there (`qm config {vmid}`), or move "
                f"the disk and `qm set {vmid} --boot order={expected}`",
            )
        if not disk or "media=cdrom" in disk:
            return fail(
                AREA,
                check_name,
                f"VM {vmid} boots from {expected}, which holds {'a CD-ROM' if disk else 'nothing'}",
                f"attach the image disk at {expected} (`qm disk import`, `qm set {vmid} "
                f"--{expected} <volume>`)",
            )
        return ok(AREA, check_name, f"boots from {expected} ({disk.partition(',')[0]})")

    def _disk_size(self, name: str, vmid: int, config: Mapping[str, object]) -> Check:
        expected = self.config.proxmox.template_boot_interface
        match = _SIZE.search(str(config.get(expected, "")))
        check_name = f"{name} disk size"
        if match is None:
            return not_checked(AREA, check_name, f"no size on {expected} in VM {vmid}'s config")
        size_gb = float(match.group(1)) * _UNITS_GB[match.group(2)]
        smaller = [
            f"{node.name} ({_os_size(node)} GB)"
            for node in self.config.nodes
            if _os_size(node) < size_gb
        ]
        if smaller:
            return fail(
                AREA,
                check_name,
                f"the template's disk is {size_gb:g} GB; the OS disk of {', '.join(smaller)} is "
                "smaller, and Proxmox cannot shrink a cloned disk",
                f"give those OS disks at least {size_gb:g} GB in {NAMESPACE}:nodes",
            )
        return ok(AREA, check_name, f"{size_gb:g} GB, no node's OS disk is smaller")

    # --- SDN ----------------------------------------------------------------------------------

    def _sdn(self, online: set[str]) -> list[Check]:
        sdn = self.config.proxmox.sdn
        try:
            zones = {str(item.get("zone")): item for item in self.api.sdn_zones()}
            vnets = {str(item.get("vnet")): item for item in self.api.sdn_vnets()}
        except ProxmoxApiError as error:
            if error.status in (404, 501):
                return [
                    fail(
                        AREA,
                        "sdn",
                        f"this PVE has no SDN API: {error}",
                        "install SDN (`apt install libpve-network-perl` on every node, part of "
                        "PVE since 8.1) or upgrade to PVE 8.1+",
                    )
                ]
            return [fail(AREA, "sdn", f"listing SDN zones failed: {error}", _read_fix())]
        checks = [self._zone(zones.get(sdn.zone)), self._vnet(vnets.get(sdn.vnet))]
        if sdn.kind == "vlan" and sdn.bridge:
            checks += self._bridges(sdn.bridge, online)
        return checks

    def _zone(self, item: Mapping[str, object] | None) -> Check:
        sdn = self.config.proxmox.sdn
        name = f"sdn zone {sdn.zone}"
        if item is None:
            return ok(
                AREA,
                name,
                f"no zone {sdn.zone} listed: `up` creates it as {sdn.kind} (a zone the token "
                "cannot audit is not listed either: see privileges)",
            )
        kind = str(item.get("type"))
        if kind != sdn.kind:
            return fail(
                AREA,
                name,
                f"zone {sdn.zone} exists as type {kind}; the stack wants {sdn.kind}, and `up` "
                "cannot change a zone's type",
                f"name another zone in {NAMESPACE}:proxmox.sdn.zone, or set kind: {kind} if "
                "that zone is this stack's",
            )
        nodes = {part.strip() for part in str(item.get("nodes") or "").split(",") if part.strip()}
        outside = sorted(set(self.config.proxmox.hypervisors) - nodes) if nodes else []
        if outside:
            return warn(
                AREA,
                name,
                f"zone {sdn.zone} ({kind}) is limited to {', '.join(sorted(nodes))}; `up` adds "
                f"{', '.join(outside)}",
            )
        return ok(AREA, name, f"zone {sdn.zone} exists as {kind}, as the stack says")

    def _vnet(self, item: Mapping[str, object] | None) -> Check:
        sdn = self.config.proxmox.sdn
        name = f"sdn vnet {sdn.vnet}"
        if item is None:
            return ok(AREA, name, f"no vnet {sdn.vnet} listed: `up` creates it in {sdn.zone}")
        zone = str(item.get("zone"))
        if zone != sdn.zone:
            return fail(
                AREA,
                name,
                f"vnet {sdn.vnet} already belongs to zone {zone}, not {sdn.zone}",
                f"name another vnet in {NAMESPACE}:proxmox.sdn.vnet",
            )
        return ok(AREA, name, f"vnet {sdn.vnet} exists in {zone}")

    def _bridges(self, bridge: str, online: set[str]) -> list[Check]:
        checks: list[Check] = []
        for hypervisor in sorted(set(self.config.proxmox.hypervisors)):
            name = f"sdn bridge {bridge} on {hypervisor}"
            if hypervisor not in online:
                checks.append(not_checked(AREA, name, f"{hypervisor} is not online"))
                continue
            try:
                found = {str(item.get("iface")) for item in self.api.node_bridges(hypervisor)}
            except ProxmoxApiError as error:
                if error.status == 403:
                    checks.append(
                        not_checked(
                            AREA,
                            name,
                            f"listing {hypervisor}'s bridges needs Sys.Audit on "
                            f"/nodes/{hypervisor}",
                        )
                    )
                else:
                    checks.append(fail(AREA, name, f"listing failed: {error}", _read_fix()))
                continue
            if bridge in found:
                checks.append(ok(AREA, name, f"{bridge} exists on {hypervisor}"))
            else:
                checks.append(
                    fail(
                        AREA,
                        name,
                        f"{hypervisor} has no bridge {bridge} (it has: "
                        f"{', '.join(sorted(found)) or 'none'}); the vlan zone rides on it",
                        f"create {bridge} on {hypervisor} on the trunk that carries VLAN "
                        f"{self.config.proxmox.sdn.tag}, or set {NAMESPACE}:proxmox.sdn.bridge",
                    )
                )
        return checks

    # --- VM ids -------------------------------------------------------------------------------

    def _vm_ids(self, resources: Mapping[int, Mapping[str, object]]) -> list[Check]:
        checks: list[Check] = []
        for node in sorted(self.config.nodes, key=lambda n: n.vm_id):
            name = f"vm id {node.vm_id} ({node.name})"
            item = resources.get(node.vm_id)
            if item is None:
                free = self._free(node.vm_id)
                if isinstance(free, Check):
                    checks.append(free.renamed(name))
                elif free:
                    checks.append(ok(AREA, name, f"free: `up` makes {node.name} there"))
                else:
                    checks.append(
                        fail(
                            AREA,
                            name,
                            f"taken by a VM or container {self.api.token_id} cannot see",
                            f"choose a free vm_id for {node.name} in {NAMESPACE}:nodes "
                            "(`pvesh get /cluster/nextid`), or grant VM.Audit on "
                            f"/vms/{node.vm_id} to see what holds it",
                        )
                    )
                continue
            tags = _tags(item.get("tags"))
            shown_tags = ", ".join(sorted(tags)) or "none"
            owner = f"'{item.get('name', '')}' on {item.get('node')} (tags: {shown_tags})"
            if item.get("name") == node.name and {"ecoma", self.stack} <= tags:
                if item.get("node") != node.hypervisor:
                    checks.append(
                        warn(
                            AREA,
                            name,
                            f"this stack's {node.name} runs on {item.get('node')}, the stack file "
                            f"says {node.hypervisor}: `up` would replace it",
                            f"set hypervisor: {item.get('node')} for {node.name}, or migrate it",
                        )
                    )
                else:
                    checks.append(ok(AREA, name, f"already this stack's {node.name}"))
                continue
            checks.append(
                fail(
                    AREA,
                    name,
                    f"taken by {owner}, not this stack's {node.name}",
                    f"choose a free vm_id for {node.name} in {NAMESPACE}:nodes "
                    "(`pvesh get /cluster/nextid`)",
                )
            )
        return checks

    def _free(self, vmid: int) -> bool | Check:
        """Whether `vmid` is free; a not-checked finding when PVE could not be asked."""
        try:
            return self.api.vm_id_free(vmid)
        except ProxmoxApiError as error:
            return not_checked(AREA, "", f"asking whether VM id {vmid} is free failed: {error}")


def holds(permissions: Mapping[str, Mapping[str, object]], path: str, privilege: str) -> bool:
    """Whether `privilege` applies at `path`, read from `/access/permissions`: PVE lists the
    effective privileges at every path that has an ACL (and at /, /vms, /storage, /sdn, ...),
    each with its propagate flag. The nearest listed path decides: at `path` itself any listed
    privilege counts, above it only a propagated one (pve-access-control
    `get_effective_permissions`)."""
    probe = path
    while True:
        if probe in permissions:
            value = permissions[probe].get(privilege)
            if probe == path:
                return value is not None
            return bool(value) and str(value) not in ("0", "False")
        if probe == "/":
            return False
        probe = probe.rsplit("/", 1)[0] or "/"


def _covering_paths(missing: Mapping[str, list[str]]) -> list[str]:
    """The paths to grant on, /vms/<id> folded into /vms when several VMs lack the same."""
    paths = sorted(missing)
    vms = [p for p in paths if p.startswith("/vms/")]
    if len(vms) > 1:
        paths = [p for p in paths if not p.startswith("/vms/")] + ["/vms (propagated)"]
    return paths


def _tags(value: object) -> set[str]:
    """PVE stores tags as one string, `;`-separated (older versions also took , and spaces)."""
    return {tag for tag in re.split(r"[;,\s]+", str(value or "")) if tag}


def _os_size(node: Node) -> int:
    return ordered(node.disks)[0].size_gb


def _read_fix() -> str:
    return "check the message above, the token's privileges and the PVE node's logs"
