"""The lab: real local Debian 12 hosts in network namespaces, for running the real playbook.

Each lab host is a set of namespaces on this machine, not a VM:

- a network namespace ``<lab_id>-<host>`` whose ``eth0`` is one end of a veth pair; the other end
  (``<lab_id>-v<i>``) sits on the bridge ``<lab_id>-br0`` that holds the gateway address;
- mount, uts and pid namespaces (``unshare``) whose root is an overlay of one cached debootstrap
  rootfs, with a private ``/dev`` that holds only this host's loop devices and the
  ``/dev/disk/by-id/<by_id>`` links to them (the proxmox row of docs/contracts.md);
- sshd as the only service, reachable with a lab key pair kept in the state dir.

Everything a lab makes is recorded in ``<state_dir>/lab.json`` as soon as it exists, and is also
found by name (netns/veth/bridge prefix, loop devices backed by files in the state dir), so
``lab_down`` cleans up after a crash or a half-made lab. Swap is kernel-global: a ``swapon`` in a
host shows in the machine's /proc/swaps, so teardown swaps off every lab loop device.

Only one lab may exist per machine (the bridge holds the gateway address); a marker under
/run/ecoma-infra names the state dir of the lab that is up.
"""

from __future__ import annotations

from pathlib import Path

from ecoma_infra.lab.hosts import (
    build_hosts,
    host_status,
    new_state,
    refuse_foreign_state_dir,
    refuse_if_a_lab_exists,
    refuse_to_take_down_another_lab,
    validate_spec,
)
from ecoma_infra.lab.image import DEFAULT_MIRROR, ensure_base_image
from ecoma_infra.lab.state import (
    DEFAULT_LAB_ID,
    READY_TIMEOUT_S,
    LabHostStatus,
    LabSpec,
    LabState,
    load_state,
    machine_lock,
    read_marker,
    require_root,
    write_marker,
)
from ecoma_infra.lab.teardown import present_lab_objects, teardown_lab

# --------------------------------------------------------------------------------------------
# Public functions


def lab_up(
    spec: LabSpec,
    state_dir: Path,
    *,
    cache_dir: Path | None = None,
    mirror: str = DEFAULT_MIRROR,
    ready_timeout: float = READY_TIMEOUT_S,
) -> LabState:
    """Build the lab described by ``spec`` and return once sshd answers on every host.

    On any failure the half-made lab is torn down before the error is raised.
    """
    require_root("lab up")
    validate_spec(spec)
    state_dir = state_dir.resolve()
    base = ensure_base_image(cache_dir, mirror=mirror)
    refuse_foreign_state_dir(state_dir)
    with machine_lock():
        refuse_if_a_lab_exists(spec.lab_id, state_dir)
        teardown_lab(state_dir, spec.lab_id)  # leftovers of an earlier crash in this state dir
        state = new_state(spec, state_dir, base)
        write_marker(state)
        try:
            build_hosts(state, ready_timeout)
        except BaseException:
            teardown_lab(state_dir, spec.lab_id)
            raise
    return state


def lab_down(state_dir: Path, *, lab_id: str | None = None) -> None:
    """Remove every namespace, process, loop device, swap, veth and bridge of the lab.

    Idempotent; works from the recorded state and, where the record is missing or incomplete,
    from discovery by name prefix and by loop backing files inside ``state_dir``.
    """
    require_root("lab down")
    state_dir = state_dir.resolve()
    with machine_lock():
        refuse_to_take_down_another_lab(state_dir)
        teardown_lab(state_dir, lab_id)


def lab_status(state_dir: Path) -> list[LabHostStatus]:
    """Per host of the recorded lab: running? ssh login works? each by-id disk present?"""
    # Without root every host would look down (other users cannot see into the namespaces).
    require_root("lab status")
    state = load_state(state_dir)
    if state is None:
        return []
    return [host_status(state, host) for host in state.hosts]


def current_lab() -> Path | None:
    """The state dir of the lab that is up on this machine, or None when no lab is up."""
    marker = read_marker()
    if marker is None or not present_lab_objects(str(marker.get("lab_id", DEFAULT_LAB_ID))):
        return None
    return Path(marker["state_dir"]) if marker.get("state_dir") else None


def lab_inventory_overrides(state: LabState) -> dict[str, dict[str, str]]:
    """Hostvars that point the real inventory at the lab hosts; merge them per host."""
    return {
        host.name: {
            "ansible_host": host.ip,
            "ansible_user": state.user,
            "ansible_ssh_private_key_file": state.private_key,
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        }
        for host in state.hosts
    }
