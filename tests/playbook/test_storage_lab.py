"""The storage role against real Debian hosts of the lab: every case of the seed's disk rules.

One lab, one host per case, one run of the real playbook (lab switches off only what needs a
download or a running k3s), then a second run that must change nothing:

- cpl-1: blank hot disk, warm disk already ext4 with a file, blank swap disk: formatted, mounted
  by UUID, swap on; the warm disk's UUID and file survive both runs.
- sts-1: cold disk holds xfs where ext4 is asked (and a blank hot disk beside it).
- sts-2: hot disk holds a GPT partition table.
- sts-3: warm disk holds an unknown signature (a LUKS header).
- sts-4: warm disk holds a swap signature.
- wkr-1: the inventory names a disk that is not attached.
Each refused host fails with a message naming host, tier, device and what was found, and not a
byte of any of its disks changes (the blank disk beside the refused one stays blank too).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import LabFactory

from ecoma_infra.lab import state as lab_state
from ecoma_infra.lab.engine import lab_inventory_overrides
from ecoma_infra.lab.state import LabDisk, LabError, LabHost, LabSpec, LabState

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
VENV_BIN = Path(sys.executable).parent
DATA_MB = 320  # mkfs.xfs refuses filesystems under 300 MB; sparse files cost nothing
SWAP_MB = 64

# What only a machine with internet and a running kernel for containers can do.
LAB_SWITCHES = {
    "prereq_install_packages": False,
    "tailscale_install": False,
    "tailscale_join": False,
    "k3s_install_binary": False,
    "k3s_start_service": False,
}

# The keys ecoma_infra.program.inventory.cluster_vars emits.
CLUSTER = {
    "stack": "lab",
    "sdn_subnet": "10.41.1.0/24",
    "sdn_gateway": "10.41.1.1",
    "kube_vip": "10.41.1.254",
    "pod_cidr": "10.42.0.0/16",
    "service_cidr": "10.43.0.0/16",
    "cluster_dns": "10.43.0.10",
    "node_local_dns": "169.254.20.10",
    "tailscale_cidr": "100.64.0.0/10",
    "k3s_version": "v1.32.5+k3s1",
    "node_local_dns_enabled": True,
    "flannel_backend": "vxlan",
    "k3s_server_args": [],
    "k3s_agent_args": [],
    "first_server": "cpl-1",
}


def _disk(tier: str, size_mb: int = DATA_MB) -> LabDisk:
    return LabDisk(tier=tier, by_id=f"virtio-{tier}", size_mb=size_mb)


SPEC = LabSpec(
    hosts=[
        LabHost("cpl-1", "10.41.1.11", [_disk("hot"), _disk("warm"), _disk("swap", SWAP_MB)]),
        LabHost("sts-1", "10.41.1.31", [_disk("hot"), _disk("cold")]),
        LabHost("sts-2", "10.41.1.32", [_disk("hot")]),
        LabHost("sts-3", "10.41.1.33", [_disk("warm")]),
        LabHost("sts-4", "10.41.1.34", [_disk("warm")]),
        LabHost("wkr-1", "10.41.1.21", [_disk("hot")]),
    ]
)

# ecoma_storage per host: (tier, filesystem, os_disk); the OS disk is the lab's root.
STORAGE = {
    "cpl-1": [("cold", "ext4", True), ("hot", "ext4", False), ("warm", "ext4", False),
              ("swap", "swap", False)],
    "sts-1": [("warm", "ext4", True), ("hot", "ext4", False), ("cold", "ext4", False)],
    "sts-2": [("warm", "ext4", True), ("hot", "ext4", False)],
    "sts-3": [("hot", "ext4", True), ("warm", "ext4", False)],
    "sts-4": [("hot", "ext4", True), ("warm", "ext4", False)],
    "wkr-1": [("warm", "ext4", True), ("hot", "ext4", False), ("cold", "ext4", False)],
}  # fmt: skip

REFUSED = {
    "sts-1": ("cold", "xfs"),
    "sts-2": ("hot", "gpt partition table"),
    "sts-3": ("warm", "crypto_LUKS"),
    "sts-4": ("warm", "swap signature"),
}


def _group(host: str) -> str:
    return f"ecoma_{host.split('-', maxsplit=1)[0]}"


def _hostvars(host: str) -> dict[str, Any]:
    role = host.split("-", maxsplit=1)[0]
    return {
        "ecoma_node_name": host,
        "ecoma_role": role,
        "ecoma_provider": "proxmox",
        "ecoma_burst": False,
        "ecoma_expires_at": None,
        "ecoma_node_labels": {"topology.ecoma.io/provider": "proxmox", "node.ecoma.io/role": role},
        "ecoma_server_labels": {f"node-role.kubernetes.io/{role}": "true"},
        "ecoma_node_taints": [f"node.ecoma.io/role={role}:NoSchedule"] if role == "cpl" else [],
        "ecoma_tailscale_router": role == "cpl",
        "ecoma_tailscale_accept_routes": False,
        "ecoma_storage": [
            {
                "tier": tier,
                "device": "/dev/vda" if os_disk else f"/dev/disk/by-id/virtio-{tier}",
                "size_gb": 1,
                "filesystem": filesystem,
                "os_disk": os_disk,
            }
            for tier, filesystem, os_disk in STORAGE[host]
        ],
    }


def _inventory(state: LabState) -> dict[str, Any]:
    overrides = lab_inventory_overrides(state)
    children: dict[str, Any] = {
        g: {"hosts": {}} for g in ("ecoma_cpl", "ecoma_ops", "ecoma_sts", "ecoma_wkr")
    }
    for host in STORAGE:
        children[_group(host)]["hosts"][host] = {**_hostvars(host), **overrides[host]}
    children["ecoma_proxmox"] = {"hosts": {h: {} for h in STORAGE}}
    for group in ("ecoma_aws", "ecoma_gcp", "ecoma_oci", "ecoma_burst"):
        children[group] = {"hosts": {}}
    return {
        "all": {
            "vars": {"ecoma_stack": "lab", "ecoma_cluster": CLUSTER, **LAB_SWITCHES},
            "children": children,
        }
    }


def _root(state: LabState, host: str, command: str, *, check: bool = True) -> str:
    result = subprocess.run(
        state.ssh_argv(host, command, user="root"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert result.returncode == 0, f"{host}: `{command}`: {result.stderr}"
    return result.stdout


def _playbook(
    inventory: Path, *args: str, playbook: str = "playbook.yaml"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ECOMA_"))}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ECOMA_K3S_TOKEN="lab-server-token",
        ECOMA_K3S_AGENT_TOKEN="lab-agent-token",
    )
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"),
            "-i",
            str(inventory),
            *args,
            str(ANSIBLE_DIR / playbook),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _recap(output: str, host: str) -> dict[str, int]:
    match = re.search(rf"^{re.escape(host)}\s+:\s+(.*)$", output, re.M)
    assert match, f"no recap line for {host}:\n{output[-3000:]}"
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _disk_digest(state: LabState, host: str, device: str) -> str:
    """sha256 of the bytes on `device`, read on the host past the page cache (O_DIRECT) after a
    sync: what is on the disk. A cached read is not that: after a mount, ext4 initialises the
    bitmaps of its unused block groups in memory (the prefetch of its lazyinit thread), and a
    cached read of the device shows them for a while though nothing was written."""
    command = f"sync && dd if={shlex.quote(device)} bs=1M iflag=direct status=none | sha256sum"
    return _root(state, host, command).split()[0]


def _fingerprints(state: LabState, host: str) -> dict[str, str]:
    """The digest of every lab disk of the host, read on the host through its by-id link."""
    return {disk.tier: _disk_digest(state, host, disk.path) for disk in state.host(host).disks}


def _lab_up_when_free(
    cache_dir: Path, tmp_root: Path, timeout: float = 900, *, spec: LabSpec = SPEC
) -> LabFactory:
    """Bring `spec` up, waiting while another test run holds the machine's one lab."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        while lab_state.MARKER_FILE.exists() and time.monotonic() < deadline:
            time.sleep(3)
        factory = LabFactory(cache_dir, tmp_root / f"attempt{attempt}")
        attempt += 1
        try:
            factory(spec)
        except LabError as error:
            if "already up" not in str(error) or time.monotonic() > deadline:
                raise
            continue  # another run took the lab between our check and our lab_up
        return factory


@pytest.fixture(scope="module")
def storage_lab(lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    factory = _lab_up_when_free(lab_cache_dir, tmp_path_factory.mktemp("storage-lab"))
    try:
        state = lab_state.load_state(factory.state_dirs[-1])
        assert state is not None
        _prepare_disks(state)
        before = {host: _fingerprints(state, host) for host in REFUSED | {"wkr-1": ()}}
        inventory = Path(state.state_dir).parent / "inventory.json"
        inventory.write_text(json.dumps(_inventory(state)))
        first = _playbook(inventory)
        after_first = {host: _fingerprints(state, host) for host in before}
        # Every role again (not only verified: see the converged role), to prove them idempotent.
        second = _playbook(inventory, "-e", "converged_full=true")
        yield {
            "inventory": inventory,
            "state": state,
            "first": first.stdout + first.stderr,
            "second": second.stdout + second.stderr,
            "before": before,
            "after_first": after_first,
        }
    finally:
        factory.down_all()


WARM_FILE = "/var/storage/warm/precious.txt"


def _prepare_disks(state: LabState) -> None:
    # cpl-1: warm already holds ext4 with a file; hot and swap stay blank.
    _root(state, "cpl-1", "mkfs.ext4 -q -L keepme /dev/disk/by-id/virtio-warm && "
          "mkdir -p /mnt/seed && mount /dev/disk/by-id/virtio-warm /mnt/seed && "
          "echo 'do not lose me' > /mnt/seed/precious.txt && umount /mnt/seed")  # fmt: skip
    _root(state, "sts-1", "mkfs.xfs -q /dev/disk/by-id/virtio-cold")
    _root(state, "sts-2", "sgdisk -o -n 1:0:+50M /dev/disk/by-id/virtio-hot >/dev/null")
    # A LUKS2 header magic and version: no filesystem, but a signature all the same.
    _root(state, "sts-3", r"printf 'LUKS\272\276\000\002' | "
          "dd of=/dev/disk/by-id/virtio-warm conv=notrunc status=none")  # fmt: skip
    _root(state, "sts-4", "mkswap /dev/disk/by-id/virtio-warm >/dev/null")


# --------------------------------------------------------------------------------------------


def test_blank_disks_are_formatted_and_mounted_by_uuid(storage_lab: dict[str, Any]) -> None:
    state = storage_lab["state"]
    assert _recap(storage_lab["first"], "cpl-1")["failed"] == 0, storage_lab["first"][-4000:]
    mounts = _root(state, "cpl-1", "findmnt -rn -o TARGET,FSTYPE,OPTIONS")
    assert re.search(r"^/var/storage/hot ext4 ", mounts, re.M), mounts
    assert re.search(r"^/var/storage/warm ext4 ", mounts, re.M), mounts
    fstab = _root(state, "cpl-1", "cat /etc/fstab")
    for tier in ("hot", "warm"):
        uuid = _root(state, "cpl-1", f"blkid -p -o value -s UUID /dev/disk/by-id/virtio-{tier}")
        assert f"UUID={uuid.strip()} /var/storage/{tier} ext4 defaults,nofail 0 0" in fstab
    assert "/dev/loop" not in fstab
    assert "by-id" not in fstab
    assert _root(state, "cpl-1", "test -d /var/storage/cold && echo os-tier-dir").strip()


def test_existing_ext4_keeps_its_uuid_and_content(storage_lab: dict[str, Any]) -> None:
    state = storage_lab["state"]
    assert _root(state, "cpl-1", f"cat {WARM_FILE}") == "do not lose me\n"
    assert _root(state, "cpl-1", "blkid -p -o value -s LABEL /dev/disk/by-id/virtio-warm") == (
        "keepme\n"
    )


def test_swap_disk_is_in_fstab_by_uuid_and_active(storage_lab: dict[str, Any]) -> None:
    state = storage_lab["state"]
    uuid = _root(state, "cpl-1", "blkid -p -o value -s UUID /dev/disk/by-id/virtio-swap").strip()
    assert f"UUID={uuid} none swap sw,nofail 0 0" in _root(state, "cpl-1", "cat /etc/fstab")
    loop = state.host("cpl-1").disks[2].loop_device
    assert loop in Path("/proc/swaps").read_text()


def test_second_run_changes_nothing(storage_lab: dict[str, Any]) -> None:
    recap = _recap(storage_lab["second"], "cpl-1")
    assert recap["failed"] == 0, storage_lab["second"][-4000:]
    assert recap["changed"] == 0, storage_lab["second"][-6000:]


def test_lab_switches_are_reported_not_silent(storage_lab: dict[str, Any]) -> None:
    output = storage_lab["first"]
    for message in (
        "skipped in lab: tailscale_install=false",
        "skipped in lab: tailscale_join=false",
        "skipped in lab: k3s_install_binary=false",
        "skipped in lab: k3s_start_service=false",
    ):
        assert message in output


def test_k3s_files_are_rendered_for_real_in_the_lab(storage_lab: dict[str, Any]) -> None:
    state = storage_lab["state"]
    listing = _root(state, "cpl-1", "stat -c '%a %U %n' /etc/rancher/k3s/config.yaml "
                    "/etc/rancher/k3s/token /etc/systemd/system/k3s.service")  # fmt: skip
    assert listing.splitlines() == [
        "600 root /etc/rancher/k3s/config.yaml",
        "600 root /etc/rancher/k3s/token",
        "644 root /etc/systemd/system/k3s.service",
    ]
    assert _root(state, "cpl-1", "cat /etc/rancher/k3s/token") == "lab-server-token\n"
    config = _root(state, "cpl-1", "cat /etc/rancher/k3s/config.yaml")
    assert "lab-server-token" not in config
    assert "cluster-init: true" in config
    assert '"fail-swap-on=false"' in config  # cpl-1 has a swap tier
    kube_vip = _root(state, "cpl-1", "cat /var/lib/rancher/k3s/agent/pod-manifests/kube-vip.yaml")
    assert '{name: vip_interface, value: "eth0"}' in kube_vip


@pytest.mark.parametrize("host", sorted(REFUSED))
def test_unexpected_content_stops_the_host_untouched(
    storage_lab: dict[str, Any], host: str
) -> None:
    tier, found = REFUSED[host]
    output = storage_lab["first"]
    assert _recap(output, host)["failed"] == 1
    messages = [line for line in output.splitlines() if f"storage: host {host}: refusing" in line]
    assert messages, output[-4000:]
    assert f"tier {tier}, device /dev/disk/by-id/virtio-{tier}" in messages[0]
    assert found in messages[0]
    assert storage_lab["after_first"][host] == storage_lab["before"][host]
    state = storage_lab["state"]
    assert "/var/storage" not in _root(state, host, "cat /etc/fstab")
    assert "/var/storage" not in _root(state, host, "findmnt -rn -o TARGET")


def test_refused_host_leaves_its_blank_disk_blank(storage_lab: dict[str, Any]) -> None:
    out = _root(storage_lab["state"], "sts-1", "blkid -p /dev/disk/by-id/virtio-hot; echo rc=$?")
    assert out.strip() == "rc=2"


def test_missing_device_stops_the_host_naming_it(storage_lab: dict[str, Any]) -> None:
    output = storage_lab["first"]
    assert _recap(output, "wkr-1")["failed"] == 1
    assert (
        "storage: host wkr-1, tier cold, device /dev/disk/by-id/virtio-cold: device not found"
        in output
    )
    assert storage_lab["after_first"]["wkr-1"] == storage_lab["before"]["wkr-1"]


# Last: it changes the state the tests above look at.
def test_reset_unmounts_when_asked_and_never_wipes(storage_lab: dict[str, Any]) -> None:
    state, inventory = storage_lab["state"], storage_lab["inventory"]
    refused = _playbook(inventory, playbook="reset.yaml")
    assert refused.returncode != 0
    assert "pass --limit" in refused.stdout
    result = _playbook(
        inventory, "--limit", "cpl-1", "-e", "storage_reset_unmount=true", playbook="reset.yaml"
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    assert "/var/storage" not in _root(state, "cpl-1", "findmnt -rn -o TARGET")
    loop = state.host("cpl-1").disks[2].loop_device
    assert loop not in Path("/proc/swaps").read_text()
    assert _root(state, "cpl-1", "test -e /etc/rancher/k3s || echo gone").strip() == "gone"
    fstab = _root(state, "cpl-1", "cat /etc/fstab")
    assert fstab.count("nofail") == 3  # the fstab lines stay: a reboot mounts the data again
    _root(state, "cpl-1", "mount /var/storage/warm")
    try:
        assert _root(state, "cpl-1", f"cat {WARM_FILE}") == "do not lose me\n"
    finally:
        _root(state, "cpl-1", "umount /var/storage/warm")
