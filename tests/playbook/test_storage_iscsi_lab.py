"""OCI burst workers' data disks over iSCSI: the storage role logs in to each disk's target
before it probes, then mounts the disk found at its by-path link, on real Debian hosts of the
lab. No iSCSI target can run here, so `iscsiadm` is a simulated stand-in installed in the host:
it records every call, keeps the recorded targets and sessions, and on login links the target's
LUN at `/dev/disk/by-path/ip-<address>:<port>-iscsi-<iqn>-lun-1` to the host's loop disk, as
Debian's udev does for a real session.

- wkr-oci-1: its hot disk's target answers: recorded, set to log in at boot, logged in, formatted
  and mounted; a second run logs in to nothing and changes nothing.
- wkr-oci-2: the login "works" but the LUN never appears: the host stops with a message naming
  the tier, the target and the missing path, and its disk is not written to.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_storage_lab import (
    CLUSTER,
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
from ecoma_infra.program.disks import iscsi_device

pytestmark = pytest.mark.lab

SPEC = LabSpec(
    hosts=[
        LabHost("wkr-oci-1", "10.41.1.51", [LabDisk("hot", "virtio-hot", 320)]),
        LabHost("wkr-oci-2", "10.41.1.52", [LabDisk("hot", "virtio-hot", 320)]),
    ]
)
TARGET = {"address": "169.254.2.7", "port": 3260, "iqn": "iqn.2015-12.com.oracleiaas:lab-hot"}
DEVICE = iscsi_device(TARGET["address"], TARGET["port"], TARGET["iqn"])

# The simulated iscsiadm: the subset of its command line the role uses, state in files.
STAND_IN = r"""#!/bin/sh
# Simulated iscsiadm for the lab (no iSCSI target can run here): records calls and state, and on
# login links the target's LUN where Debian's udev would.
state=/var/lib/simulated-iscsi
mkdir -p "$state"; touch "$state/nodes" "$state/sessions"
echo "$*" >> "$state/calls"
mode=""; op=""; target=""; portal=""; login=""; name=""; value=""
while [ $# -gt 0 ]; do
  case "$1" in
    -m) mode=$2; shift ;;
    -o) op=$2; shift ;;
    -T) target=$2; shift ;;
    -p) portal=$2; shift ;;
    -n) name=$2; shift ;;
    -v) value=$2; shift ;;
    -l) login=1 ;;
  esac
  shift
done
case "$mode" in
  session) [ -s "$state/sessions" ] || { echo "iscsiadm: No active sessions." >&2; exit 21; }
           cat "$state/sessions" ;;
  node)
    if [ -z "$target" ]; then
      [ -s "$state/nodes" ] || { echo "iscsiadm: No records found" >&2; exit 21; }
      cat "$state/nodes"; exit 0
    fi
    if [ "$op" = new ]; then echo "$portal,1 $target" >> "$state/nodes"; exit 0; fi
    if [ "$op" = update ]; then echo "$target $name=$value" >> "$state/settings"; exit 0; fi
    if [ -n "$login" ]; then
      grep -q " $target\$" "$state/nodes" || { echo "no record: $target" >&2; exit 21; }
      echo "tcp: [1] $portal,1 $target (non-flash)" >> "$state/sessions"
      lun=$(sed -n "s|^$target ||p" /etc/simulated-iscsi-luns)
      if [ -n "$lun" ]; then
        mkdir -p /dev/disk/by-path
        ln -sf "$(readlink -f "$lun")" "/dev/disk/by-path/ip-$portal-iscsi-$target-lun-1"
      fi
      exit 0
    fi ;;
esac
"""


def _hostvars(host: str) -> dict[str, Any]:
    return {
        "ecoma_node_name": host,
        "ecoma_role": "wkr",
        "ecoma_provider": "oci",
        "ecoma_burst": True,
        "ecoma_expires_at": None,
        "ecoma_node_labels": {"topology.ecoma.io/provider": "oci", "node.ecoma.io/role": "wkr"},
        "ecoma_server_labels": {"node-role.kubernetes.io/wkr": "true"},
        "ecoma_node_taints": [],
        "ecoma_tailscale_router": False,
        "ecoma_tailscale_accept_routes": True,
        "storage_iscsi_timeout": 3,
        "ecoma_storage": [
            {"tier": "warm", "device": "", "size_gb": 50, "filesystem": "ext4", "os_disk": True},
            {
                "tier": "hot",
                "device": DEVICE,
                "size_gb": 1,
                "filesystem": "ext4",
                "os_disk": False,
                "iscsi": dict(TARGET),
            },
        ],
    }


def _inventory(state: LabState) -> dict[str, Any]:
    overrides = lab_inventory_overrides(state)
    hosts = {h.name: {**_hostvars(h.name), **overrides[h.name]} for h in SPEC.hosts}
    children: dict[str, Any] = {
        group: {"hosts": {}}
        for group in ("ecoma_cpl", "ecoma_ops", "ecoma_sts", "ecoma_proxmox", "ecoma_aws")
    }
    children |= {
        "ecoma_wkr": {"hosts": hosts},
        "ecoma_oci": {"hosts": {name: {} for name in hosts}},
        "ecoma_burst": {"hosts": {name: {} for name in hosts}},
        "ecoma_gcp": {"hosts": {}},
    }
    return {
        "all": {
            "vars": {"ecoma_stack": "lab", "ecoma_cluster": CLUSTER, **LAB_SWITCHES},
            "children": children,
        }
    }


@pytest.fixture(scope="module")
def iscsi_lab(lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    factory = _lab_up_when_free(lab_cache_dir, tmp_path_factory.mktemp("iscsi-lab"), spec=SPEC)
    try:
        state = lab_state.load_state(factory.state_dirs[-1])
        assert state is not None
        for host in ("wkr-oci-1", "wkr-oci-2"):
            install = "cat > /usr/local/sbin/iscsiadm && chmod 0755 /usr/local/sbin/iscsiadm"
            done = _root_stdin(state, host, install, STAND_IN)
            assert done == "", done
        # Only wkr-oci-1's target has a LUN behind it.
        luns = f"{TARGET['iqn']} /dev/disk/by-id/virtio-hot\n"
        _root_stdin(state, "wkr-oci-1", "cat > /etc/simulated-iscsi-luns", luns)
        _root_stdin(state, "wkr-oci-2", "cat > /etc/simulated-iscsi-luns", "")
        before = _disk_digest(state, "wkr-oci-2", "/dev/disk/by-id/virtio-hot")
        inventory = Path(state.state_dir).parent / "inventory.json"
        inventory.write_text(json.dumps(_inventory(state)))
        first = _playbook(inventory)
        calls_first = _root(state, "wkr-oci-1", "cat /var/lib/simulated-iscsi/calls", check=False)
        # Every role again (converged_full): an unchanged node would otherwise only be verified,
        # and the storage role must prove on its own that a re-run logs in to nothing.
        second = _playbook(inventory, "--limit", "wkr-oci-1", "-e", "converged_full=true")
        calls_second = _root(state, "wkr-oci-1", "cat /var/lib/simulated-iscsi/calls", check=False)
        yield {
            "state": state,
            "first": first,
            "second": second,
            "calls_first": calls_first.splitlines(),
            "calls_second": calls_second.splitlines()[len(calls_first.splitlines()) :],
            "before": before,
        }
    finally:
        factory.down_all()


def _root_stdin(state: LabState, host: str, command: str, text: str) -> str:
    done = subprocess.run(
        state.ssh_argv(host, command, user="root"),
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{host}: {command}: {done.stderr}"
    return done.stdout


def test_simulated_iscsi_login_comes_before_the_disk_is_probed_and_mounted(
    iscsi_lab: dict[str, Any],
) -> None:
    portal = f"{TARGET['address']}:{TARGET['port']}"
    calls = iscsi_lab["calls_first"]
    assert calls, iscsi_lab["first"].stdout[-4000:]
    assert calls[:2] == ["-m session", "-m node"]
    assert calls[2:] == [
        f"-m node -o new -T {TARGET['iqn']} -p {portal}",
        f"-m node -T {TARGET['iqn']} -p {portal} -o update -n node.startup -v automatic",
        f"-m node -T {TARGET['iqn']} -p {portal} -l",
    ]
    state = iscsi_lab["state"]
    source = _root(state, "wkr-oci-1", "findmnt -n -o SOURCE /var/storage/hot").strip()
    device = _root(state, "wkr-oci-1", f"readlink -f {shlex.quote(DEVICE)}").strip()
    assert source == device
    assert _recap(iscsi_lab["first"].stdout, "wkr-oci-1")["failed"] == 0


def test_simulated_iscsi_rerun_logs_in_to_nothing_and_changes_nothing(
    iscsi_lab: dict[str, Any],
) -> None:
    second = iscsi_lab["second"]
    assert second.returncode == 0, second.stdout[-3000:]
    assert _recap(second.stdout, "wkr-oci-1")["changed"] == 0
    assert iscsi_lab["calls_second"] == ["-m session", "-m node"]


def test_simulated_iscsi_lun_that_never_appears_stops_the_host_untouched(
    iscsi_lab: dict[str, Any],
) -> None:
    first = iscsi_lab["first"]
    assert _recap(first.stdout, "wkr-oci-2")["failed"] == 1
    assert "tier hot: logged in to" in first.stdout
    assert f"{DEVICE} did not appear within 3 s" in first.stdout
    assert "Nothing was written to any disk" in first.stdout
    state = iscsi_lab["state"]
    after = _disk_digest(state, "wkr-oci-2", "/dev/disk/by-id/virtio-hot")
    assert after == iscsi_lab["before"]
    assert _root(state, "wkr-oci-2", "findmnt -n /var/storage/hot", check=False) == ""
