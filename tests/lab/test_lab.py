"""The lab engine: real Debian 12 hosts in namespaces, reachable by ssh, torn down without trace."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ecoma_infra.lab import hosts, image, teardown
from ecoma_infra.lab.engine import lab_down, lab_inventory_overrides, lab_status, lab_up
from ecoma_infra.lab.state import (
    LabDisk,
    LabDiskState,
    LabError,
    LabHost,
    LabHostState,
    LabSpec,
    LabState,
    load_state,
)

pytest.register_assert_rewrite("lab_fixtures")

from lab_fixtures import LabFactory, lab_unavailable_reason, two_host_spec  # noqa: E402 - rewrite registered first


def ssh(state: LabState, host: str, command: str, *, user: str | None = None) -> str:
    result = subprocess.run(
        state.ssh_argv(host, command, user=user),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, f"{host}: `{command}` failed: {result.stderr}"
    return result.stdout


def leftovers(state_dir: Path, lab_id: str, loop_devices: list[str]) -> list[str]:
    """Everything of a lab that a teardown must have removed, as found by asking the kernel."""
    found = [f"netns {ns}" for ns in teardown._list_netns() if ns.startswith(f"{lab_id}-")]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    found += [f"link {line}" for line in links.stdout.splitlines() if f": {lab_id}-" in line]
    loops = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    found += [f"loop {line}" for line in loops.stdout.splitlines() if str(state_dir) in line]
    swaps = Path("/proc/swaps").read_text().splitlines()[1:]
    found += [f"swap {line}" for line in swaps if line.split()[0] in loop_devices]
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    found += [f"mount {line}" for line in mounts if str(state_dir) in line]
    return found


# --------------------------------------------------------------------------------------------
# Without hosts: validation, errors, inventory


def test_spec_validation_names_every_problem() -> None:
    spec = LabSpec(
        hosts=[
            LabHost("cpl-1", "10.41.1.1", [LabDisk("hot", "virtio-hot", 0)]),
            LabHost("cpl-1", "10.41.2.5", []),
            LabHost("Bad_Name", "10.41.1.12", [LabDisk("hot", "a/b", 8)]),
        ],
        lab_id="way-too-long-id",
    )
    with pytest.raises(LabError) as caught:
        hosts.validate_spec(spec)
    message = str(caught.value)
    for expected in ("lab_id", "10.41.1.1 must be a free host", "size_mb > 0", "duplicate name",
                     "10.41.2.5", "'Bad_Name'", "'a/b'"):  # fmt: skip
        assert expected in message


def test_lab_up_and_down_without_root_say_that_root_is_needed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="lab up needs root"):
        lab_up(two_host_spec(), tmp_path)
    with pytest.raises(LabError, match="lab down needs root"):
        lab_down(tmp_path)


def test_lab_tests_skip_for_non_root_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    assert lab_unavailable_reason() == (
        "lab tests need root (network namespaces, loop devices, mounts)"
    )


def test_lab_status_without_root_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(image.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="lab status needs root"):
        lab_status(tmp_path)


def test_lab_up_refuses_a_foreign_non_empty_state_dir(tmp_path: Path) -> None:
    (tmp_path / "hosts").mkdir()  # e.g. somebody's Ansible inventory dir
    with pytest.raises(LabError, match="was not made by the lab"):
        hosts.refuse_foreign_state_dir(tmp_path)
    assert (tmp_path / "hosts").is_dir()


def test_inventory_overrides_give_address_user_key_and_no_host_key_checking() -> None:
    state = LabState(
        state_dir="/s", lab_id="ecoma", subnet="10.41.1.0/24", gateway="10.41.1.1",
        bridge="ecoma-br0", user="ecoma", private_key="/s/ssh/id_ed25519", base_image="/b",
        hosts=[LabHostState("cpl-1", "10.41.1.11", "ecoma-cpl-1", "ecoma-v0",
                            [LabDiskState("hot", "virtio-hot", 8, "/s/hot.img")])],
    )  # fmt: skip
    overrides = lab_inventory_overrides(state)
    host = overrides["cpl-1"]
    assert host["ansible_host"] == "10.41.1.11"
    assert host["ansible_user"] == "ecoma"
    assert host["ansible_ssh_private_key_file"] == "/s/ssh/id_ed25519"
    assert "StrictHostKeyChecking=no" in host["ansible_ssh_common_args"]
    assert "UserKnownHostsFile=/dev/null" in host["ansible_ssh_common_args"]


def test_interrupted_base_build_leaves_no_cache_entry(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def half_debootstrap(target: Path, mirror: str) -> None:
        (target / "etc").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(image.os, "geteuid", lambda: 0)
    monkeypatch.setattr(image.shutil, "which", lambda name: f"/usr/sbin/{name}")
    monkeypatch.setattr(image, "_debootstrap", half_debootstrap)
    with pytest.raises(KeyboardInterrupt):
        image.ensure_base_image(tmp_path)
    entries = [p.name for p in tmp_path.iterdir() if p.name != ".build.lock"]
    assert entries == []


# --------------------------------------------------------------------------------------------
# Two real hosts, shared by the tests below


@pytest.mark.lab
class TestTwoHostLab:
    """cpl-1 and wkr-1, up once for the whole class."""

    def test_each_host_answers_ssh_with_its_name_ip_and_disk_links(
        self, lab_two_hosts: LabState
    ) -> None:
        spec = {h.name: h for h in two_host_spec().hosts}
        for host in lab_two_hosts.hosts:
            out = ssh(lab_two_hosts, host.name, "hostname; ip -4 -o addr show dev eth0; "
                      "ls -l /dev/disk/by-id/; getent hosts $(hostname)")  # fmt: skip
            lines = out.splitlines()
            assert lines[0] == host.name
            assert f"inet {host.ip}/24" in lines[1]
            for disk in spec[host.name].disks:
                assert f"{disk.by_id} -> ../../loop" in out
            assert f"{host.ip}" in lines[-1]
            assert host.name in lines[-1]
            links = ssh(lab_two_hosts, host.name, "ls /dev/disk/by-id/").split()
            assert sorted(links) == sorted(d.by_id for d in spec[host.name].disks)

    def test_lab_user_has_passwordless_sudo_and_root_logs_in_by_key(
        self, lab_two_hosts: LabState
    ) -> None:
        assert ssh(lab_two_hosts, "cpl-1", "id -un").strip() == "ecoma"
        assert ssh(lab_two_hosts, "cpl-1", "sudo -n id -u").strip() == "0"
        assert ssh(lab_two_hosts, "wkr-1", "id -u", user="root").strip() == "0"

    def test_hosts_reach_each_other_and_the_gateway(self, lab_two_hosts: LabState) -> None:
        for host in lab_two_hosts.hosts:
            for target in [lab_two_hosts.gateway, *(h.ip for h in lab_two_hosts.hosts)]:
                ssh(lab_two_hosts, host.name, f"ping -c1 -W2 {target}")
        ssh(lab_two_hosts, "cpl-1", "ping -c1 -W2 wkr-1")  # by name, through /etc/hosts

    def test_mkfs_on_one_host_is_not_visible_in_another_hosts_dev(
        self, lab_two_hosts: LabState
    ) -> None:
        ssh(lab_two_hosts, "cpl-1", "sudo mkfs.ext4 -q -L lab-probe /dev/disk/by-id/virtio-hot")
        assert "lab-probe" in ssh(lab_two_hosts, "cpl-1", "sudo blkid /dev/disk/by-id/virtio-hot")
        cpl_loop = Path(lab_two_hosts.host("cpl-1").disks[0].loop_device).name
        wkr_dev = ssh(lab_two_hosts, "wkr-1", "ls /dev").split()
        assert cpl_loop not in wkr_dev
        wkr_loops = {Path(d.loop_device).name for d in lab_two_hosts.host("wkr-1").disks}
        assert {name for name in wkr_dev if name.startswith("loop")} == wkr_loops
        # wkr-1's own hot disk is still blank: blkid finds nothing (exit 2) and prints nothing.
        out = subprocess.run(
            lab_two_hosts.ssh_argv("wkr-1", "sudo blkid -p /dev/disk/by-id/virtio-hot; echo rc=$?"),
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert out.stdout.strip() == "rc=2"

    def test_lab_status_reports_every_host_running_reachable_with_disks(
        self,
        lab_two_hosts: LabState,
    ) -> None:
        statuses = lab_status(Path(lab_two_hosts.state_dir))
        assert [s.name for s in statuses] == ["cpl-1", "wkr-1"]
        for status in statuses:
            assert status.healthy, status
        assert statuses[1].disks_present == {"virtio-hot": True, "virtio-warm": True}

    def test_ansible_reaches_hosts_through_inventory_overrides(
        self, lab_two_hosts: LabState, tmp_path: Path
    ) -> None:
        hosts = lab_inventory_overrides(lab_two_hosts)
        inventory = tmp_path / "inventory.json"
        inventory.write_text(json.dumps({"all": {"hosts": hosts}}))
        ansible = Path(sys.executable).with_name("ansible")
        result = subprocess.run(
            [str(ansible), "all", "-i", str(inventory), "-b", "-m", "ansible.builtin.command",
             "-a", "cat /etc/hostname"],
            capture_output=True, text=True, timeout=120, check=False,
            env={"PATH": f"{ansible.parent}:/usr/sbin:/usr/bin:/sbin:/bin",
                 "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        for host in lab_two_hosts.hosts:
            assert f"{host.name} | CHANGED | rc=0 >>\n{host.name}" in result.stdout

    def test_second_lab_up_is_refused_naming_the_running_labs_state_dir(
        self, lab_two_hosts: LabState, tmp_path: Path
    ) -> None:
        with pytest.raises(LabError) as caught:
            lab_up(two_host_spec(), tmp_path / "second")
        message = str(caught.value)
        assert "already up" in message
        assert lab_two_hosts.state_dir in message
        assert "lab down" in message
        assert not (tmp_path / "second" / "lab.json").exists()
        assert all(s.healthy for s in lab_status(Path(lab_two_hosts.state_dir)))

    def test_down_of_another_state_dir_leaves_the_running_lab_alone(
        self, lab_two_hosts: LabState, tmp_path: Path
    ) -> None:
        with pytest.raises(LabError, match=f"belongs to {lab_two_hosts.state_dir}"):
            lab_down(tmp_path / "not-a-lab")
        assert all(s.healthy for s in lab_status(Path(lab_two_hosts.state_dir)))


# --------------------------------------------------------------------------------------------
# Teardown, each with a lab of its own


@pytest.mark.lab
def test_down_removes_everything_even_with_swap_and_mounts_active(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    state_dir = tmp_path / "lab"
    state = lab_factory(two_host_spec(), state_dir)
    loops = [d.loop_device for h in state.hosts for d in h.disks]
    ssh(state, "cpl-1", "sudo mkswap -q /dev/disk/by-id/virtio-swap && "
        "sudo swapon /dev/disk/by-id/virtio-swap && sudo mkfs.ext4 -q /dev/disk/by-id/virtio-hot"
        " && sudo mkdir -p /var/storage/hot && "
        "sudo mount /dev/disk/by-id/virtio-hot /var/storage/hot && "
        "(nohup sleep 600 >/dev/null 2>&1 &)")  # fmt: skip
    assert any(line.split()[0] in loops for line in Path("/proc/swaps").read_text().splitlines())
    assert leftovers(state_dir, state.lab_id, loops)  # the check below can see a lab

    lab_down(state_dir)
    assert leftovers(state_dir, state.lab_id, loops) == []
    assert load_state(state_dir) is None
    assert lab_status(state_dir) == []
    lab_down(state_dir)  # a second down is a no-op
    assert leftovers(state_dir, state.lab_id, loops) == []


@pytest.mark.lab
def test_down_after_the_state_file_is_lost_finds_the_lab_by_name(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    state_dir = tmp_path / "lab"
    state = lab_factory(two_host_spec(), state_dir)
    loops = [d.loop_device for h in state.hosts for d in h.disks]
    (state_dir / "lab.json").unlink()
    lab_down(state_dir)
    assert leftovers(state_dir, state.lab_id, loops) == []


@pytest.mark.lab
def test_failed_lab_up_tears_its_half_made_lab_down(
    lab_factory: LabFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def host_never_ready(state: LabState, timeout: float) -> None:
        raise LabError("host did not come up (simulated)")

    monkeypatch.setattr(hosts, "_wait_ready", host_never_ready)
    state_dir = tmp_path / "lab"
    with pytest.raises(LabError, match="simulated"):
        lab_factory(two_host_spec(), state_dir)
    assert leftovers(state_dir, "ecoma", []) == []
    assert not (state_dir / "lab.json").exists()
