"""Pytest fixtures for tests that need real lab hosts (see ecoma_infra.lab.engine).

Use from a conftest with ``pytest_plugins = ["lab_fixtures"]`` (or import the fixtures).

- ``lab_cache_dir`` (session): the base image is built once (or found in the cache).
- ``lab_factory`` (function): ``lab_factory(spec)`` brings a lab up; it is torn down after the
  test whatever happened.
- ``lab_two_hosts`` (class; module for tests outside a class): ``cpl-1`` and ``wkr-1`` (see
  ``two_host_spec``), shared by the tests of a class. Only one lab runs at a time, so keep the
  tests that share it in one class: a ``lab_factory`` test of the same module can then run after
  the class, once the shared lab is down.

Lab tests skip only when the lab cannot exist here (not root, no debootstrap, the Debian mirror
unreachable for the first build), with the reason. Set ECOMA_LAB_REQUIRED=1 (CI) to turn those
skips into failures, so a broken runner never passes by skipping.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoma_infra.lab.engine import current_lab, lab_down, lab_up
from ecoma_infra.lab.image import base_image_path, default_cache_dir, ensure_base_image
from ecoma_infra.lab.state import LabDisk, LabError, LabHost, LabSpec, LabState

LAB_REQUIRED_ENV = "ECOMA_LAB_REQUIRED"
# How long a lab test waits for another test run's lab (other worktrees share the machine).
OTHER_LAB_WAIT_S = 2700.0


def two_host_spec() -> LabSpec:
    """Two hosts like the proxmox row of the contract: a server with swap, a worker.

    Disks are sparse files: the 320 MB ones cost nothing until written, and are large enough for
    mkfs.xfs (which refuses filesystems under 300 MB).
    """
    return LabSpec(
        hosts=[
            LabHost(
                name="cpl-1",
                ip="10.41.1.11",
                disks=[
                    LabDisk(tier="hot", by_id="virtio-hot", size_mb=320),
                    LabDisk(tier="swap", by_id="virtio-swap", size_mb=64),
                ],
            ),
            LabHost(
                name="wkr-1",
                ip="10.41.1.21",
                disks=[
                    LabDisk(tier="hot", by_id="virtio-hot", size_mb=320),
                    LabDisk(tier="warm", by_id="virtio-warm", size_mb=320),
                ],
            ),
        ]
    )


def lab_unavailable_reason() -> str | None:
    """Why a lab cannot be built on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, loop devices, mounts)"
    if not base_image_path().parent.joinpath("image.json").is_file() and not shutil.which(
        "debootstrap"
    ):
        return "lab tests need debootstrap to build the base image: apt-get install debootstrap"
    return None


def skip_lab(reason: str) -> None:
    if os.environ.get(LAB_REQUIRED_ENV) == "1":
        pytest.fail(f"{reason} ({LAB_REQUIRED_ENV}=1: lab tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_cache_dir() -> Path:
    """The cache dir holding a built base image."""
    if reason := lab_unavailable_reason():
        skip_lab(reason)
    _reclaim_lab_of_a_killed_test_run(_pytest_root())
    cache = default_cache_dir()
    try:
        ensure_base_image(cache)
    except LabError as error:
        if "debootstrap" not in str(error):
            raise
        skip_lab(f"cannot build the lab base image: {error}")
    return cache


def _pytest_root() -> Path:
    """Where every pytest run of this user keeps its numbered temp dirs (without --basetemp)."""
    return Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"


def _reclaim_lab_of_a_killed_test_run(pytest_tmp_root: Path) -> None:
    # A pytest run killed before its fixtures' teardown leaves its lab up, and every later run
    # would be refused. Take down only a lab that lived in pytest's own temp dirs, and only when
    # the pytest run that made it is gone: several worktrees share this machine and
    # /tmp/pytest-of-<user>, and another run's live lab is waited for, never taken down.
    _wait_for_another_runs_lab(pytest_tmp_root)
    stale = current_lab()
    if stale is not None and stale.is_relative_to(pytest_tmp_root):
        lab_down(stale)


def _owner_is_running(lab: Path, pytest_tmp_root: Path) -> bool:
    """Whether the pytest run whose temp dir holds `lab` still runs: pytest keeps its pid in
    the `.lock` of its numbered temp dir while it runs."""
    locks = [d / ".lock" for d in lab.parents if d.is_relative_to(pytest_tmp_root)]
    try:
        pid = int(next(lock for lock in locks if lock.is_file()).read_text().strip())
    except (StopIteration, OSError, ValueError):
        return False
    if pid == os.getpid():
        return False  # this run's own lab: a fixture of ours left it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_for_another_runs_lab(pytest_tmp_root: Path) -> None:
    """Only one lab runs at a time: wait while another lab is up (another running pytest run's,
    or one made by hand with `ecoma-infra lab up`); a lab a killed pytest run left is not
    waited for (it is taken down)."""
    deadline = time.monotonic() + OTHER_LAB_WAIT_S
    while True:
        other = current_lab()
        if other is None or (
            other.is_relative_to(pytest_tmp_root) and not _owner_is_running(other, pytest_tmp_root)
        ):
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"another lab ({other}) stayed up for {OTHER_LAB_WAIT_S:.0f} s: only one lab "
                "runs at a time; try again when it is down"
            )
        time.sleep(5)


class LabFactory:
    """Brings labs up and remembers them, so that every one is torn down."""

    def __init__(self, cache_dir: Path, tmp_root: Path) -> None:
        self.cache_dir = cache_dir
        self.tmp_root = tmp_root
        self.state_dirs: list[Path] = []

    def __call__(self, spec: LabSpec, state_dir: Path | None = None) -> LabState:
        state_dir = state_dir or self.tmp_root / f"lab{len(self.state_dirs)}"
        self.state_dirs.append(state_dir)
        _wait_for_another_runs_lab(_pytest_root())
        return lab_up(spec, state_dir, cache_dir=self.cache_dir)

    def down_all(self) -> None:
        errors = []
        for state_dir in reversed(self.state_dirs):
            try:
                lab_down(state_dir)
            except LabError as error:  # keep tearing down the others
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def lab_factory(lab_cache_dir: Path, tmp_path: Path) -> Iterator[LabFactory]:
    factory = LabFactory(lab_cache_dir, tmp_path)
    try:
        yield factory
    finally:
        factory.down_all()


@pytest.fixture(scope="class")
def lab_two_hosts(
    lab_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabState]:
    factory = LabFactory(lab_cache_dir, tmp_path_factory.mktemp("lab-two-hosts"))
    try:
        yield factory(two_host_spec())
    finally:
        factory.down_all()
