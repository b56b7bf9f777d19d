"""The staging stack's on-prem nodes as lab hosts, converged by `ecoma-infra configure` twice.

Real Debian 12 hosts (network namespaces on this machine) and the real playbook through
ansible-runner. What a lab cannot do (download Tailscale and k3s, run services) is switched off
by `labstack.LAB_ROLE_VARS` and must be reported in the output, not skipped silently.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_fixtures import LabFactory

from ecoma_infra.cli.main import main
from ecoma_infra.lab import stack as labstack
from ecoma_infra.lab.state import LabState
from ecoma_infra.stack.load import load_stack_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.lab


def _configure(inventory: Path, secrets: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    saved = {name: os.environ.get(name) for name in secrets}
    os.environ.update(secrets)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["configure", "--inventory", str(inventory), "--json"])
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]
    summary = next(line for line in lines if line["type"] == "summary")
    return code, out.getvalue() + err.getvalue(), summary


@pytest.fixture(scope="module")
def staging_lab(
    lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    config = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    workdir = tmp_path_factory.mktemp("staging-lab")
    factory = LabFactory(lab_cache_dir, workdir)
    try:
        state: LabState = factory(labstack.lab_spec(config))
        inventory = labstack.write_inventory(
            workdir, labstack.lab_inventory("staging", config, state)
        )
        secrets = labstack.lab_secrets(state)
        first = _configure(inventory, secrets)
        # Every role again (converged_full): the roles themselves must change nothing.
        full = json.loads(inventory.read_text())
        full["all"]["vars"]["converged_full"] = True
        (workdir / "full").mkdir()
        second = _configure(labstack.write_inventory(workdir / "full", full), secrets)
        # Then as a re-run goes: nothing changed since, so every node is only verified ...
        verified = _configure(inventory, secrets)
        # ... until a node drifts: sts-1 loses its warm tier's mount and a kernel setting.
        _on(state, "sts-1", "umount /var/storage/warm && echo 0 > /proc/sys/net/ipv4/ip_forward")
        drifted = _configure(inventory, secrets)
        yield {
            "state": state,
            "config": config,
            "first": first,
            "second": second,
            "verified": verified,
            "drifted": drifted,
            "secrets": secrets,
            "workdir": workdir,
        }
    finally:
        factory.down_all()


def _on(state: LabState, host: str, command: str) -> str:
    result = subprocess.run(
        # ssh joins its arguments into one remote command line: quote the script.
        state.ssh_argv(host, "sudo", "sh", "-c", shlex.quote(command)),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_first_converge_succeeds_on_every_host(staging_lab: dict[str, Any]) -> None:
    code, text, summary = staging_lab["first"]
    assert code == 0, text
    assert set(summary["hosts"]) == {"cpl-1", "ops-1", "sts-1", "wkr-1"}
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in summary["hosts"].values())
    assert sum(c["changed"] for c in summary["hosts"].values()) > 0


def test_second_converge_changes_nothing(staging_lab: dict[str, Any]) -> None:
    code, text, summary = staging_lab["second"]
    assert code == 0, text
    assert {name: c["changed"] for name, c in summary["hosts"].items()} == {
        "cpl-1": 0,
        "ops-1": 0,
        "sts-1": 0,
        "wkr-1": 0,
    }


VERIFIED = "Say which nodes are only verified"


def _results(text: str, task: str) -> dict[str, str]:
    """host -> status of `task` in a `configure --json` run."""
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return {r["host"]: r["status"] for r in records if r["type"] == "result" and r["task"] == task}


def test_a_rerun_on_unchanged_nodes_only_verifies_them(staging_lab: dict[str, Any]) -> None:
    code, text, summary = staging_lab["verified"]
    assert code == 0, text
    assert {name: c["changed"] for name, c in summary["hosts"].items()} == dict.fromkeys(
        ("cpl-1", "ops-1", "sts-1", "wkr-1"), 0
    )
    assert _results(text, VERIFIED) == dict.fromkeys(("cpl-1", "ops-1", "sts-1", "wkr-1"), "ok")
    # No role ran: nothing was probed, nothing written (the full run shows its probes).
    probe = "Probe the device with blkid"
    assert set(_results(staging_lab["second"][1], probe).values()) == {"ok"}
    assert _results(text, probe) == {}
    assert _results(text, "Render config.yaml") == {}


def test_a_node_that_drifted_is_converged_again_in_full(staging_lab: dict[str, Any]) -> None:
    code, text, summary = staging_lab["drifted"]
    assert code == 0, text
    verified = _results(text, VERIFIED)
    assert verified == {"cpl-1": "ok", "ops-1": "ok", "wkr-1": "ok", "sts-1": "skipped"}
    assert summary["hosts"]["sts-1"]["changed"] > 0
    assert set(_results(text, "Probe the device with blkid")) == {"sts-1"}
    state = staging_lab["state"]
    assert "/var/storage/warm" in _on(state, "sts-1", "findmnt -rn -o TARGET")
    assert _on(state, "sts-1", "cat /proc/sys/net/ipv4/ip_forward").strip() == "1"


def test_every_tier_is_mounted_where_the_stack_says(staging_lab: dict[str, Any]) -> None:
    state, config = staging_lab["state"], staging_lab["config"]
    for node in config.nodes:
        mounts = _on(state, node.name, "findmnt -rn -o TARGET,FSTYPE")
        swaps = _on(state, node.name, "cat /proc/swaps")
        listing = _on(state, node.name, "ls /var/storage").split()
        for disk in node.disks:
            if disk.os:
                assert disk.tier in listing, node.name
            elif disk.tier == "swap":
                device = _on(state, node.name, "readlink -f /dev/disk/by-id/virtio-swap").strip()
                assert device in swaps, node.name
            else:
                fs = config.storage.filesystem_for(disk)
                assert f"/var/storage/{disk.tier} {fs}" in mounts, node.name


def test_lab_skips_are_visible(staging_lab: dict[str, Any]) -> None:
    _, text, _ = staging_lab["first"]
    lowered = text.lower()
    for switch in ("tailscale", "k3s"):
        assert switch in lowered


def _files_under(place: Path) -> Iterator[Path]:
    """Every file below `place`; a directory that vanishes meanwhile (the machine is shared,
    /tmp is everyone's) is passed over instead of ending the walk."""
    for directory, _, names in os.walk(place):
        for name in names:
            yield Path(directory) / name


def test_no_secret_is_left_in_any_file(staging_lab: dict[str, Any]) -> None:
    secrets = [v for v in staging_lab["secrets"].values() if len(v) > 8]
    # The lab hosts' own disks (their roots live in the state dir) rightly hold the token file;
    # everything on the controller's side must not.
    hosts_dir = Path(staging_lab["state"].state_dir)
    places = [staging_lab["workdir"], ROOT / "ecoma_infra", ROOT / "ansible", ROOT / "tests"]
    places += [Path("/tmp"), Path("/var/tmp")]
    for place in places:
        for path in _files_under(place):
            if hosts_dir in path.parents or path.is_symlink() or not path.is_file():
                continue
            with contextlib.suppress(OSError):  # other runs' files come and go in /tmp
                if path.stat().st_size > 5_000_000:
                    continue
                data = path.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in data, f"{path} holds a secret"
    for run in ("first", "second", "verified", "drifted"):
        _, text, _ = staging_lab[run]
        assert all(secret not in text for secret in secrets)


def test_the_token_file_on_a_host_is_root_only(staging_lab: dict[str, Any]) -> None:
    listing = _on(staging_lab["state"], "cpl-1", "stat -c '%a %U' /etc/rancher/k3s/token")
    assert listing.split() == ["600", "root"]
