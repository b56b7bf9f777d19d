"""The lab's base image: one cached debootstrap rootfs of Debian 12 that every host overlays."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ecoma_infra.lab.state import IMAGE_REVISION, LabError, file_lock, require_root
from ecoma_infra.lab.teardown import remove_tree

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What the playbook needs on a host: python3 for Ansible, sshd, and the storage role's tools
# (blkid/wipefs/lsblk/findmnt/mount/swapon: util-linux + mount; mkfs.ext4: e2fsprogs;
# mkfs.xfs: xfsprogs; mkswap: util-linux); sudo for a non-root ansible_user; gdisk/parted so
# tests can put unexpected partition tables on a disk; iputils-ping for reachability checks.
BASE_PACKAGES: tuple[str, ...] = (
    "python3",
    "openssh-server",
    "openssh-sftp-server",
    "e2fsprogs",
    "xfsprogs",
    "util-linux",
    "mount",
    "iproute2",
    "iputils-ping",
    "sudo",
    "procps",
    "udev",
    "gdisk",
    "parted",
)
# Bump when the image's post-build customisation changes, so cached images are rebuilt.


def default_cache_dir() -> Path:
    """Where the base image lives: $ECOMA_LAB_CACHE, else /var/cache/ecoma-infra/lab for root,
    else $XDG_CACHE_HOME/ecoma-infra/lab."""
    if env := os.environ.get("ECOMA_LAB_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/ecoma-infra/lab")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "ecoma-infra" / "lab"


def base_image_path(cache_dir: Path | None = None, *, mirror: str = DEFAULT_MIRROR) -> Path:
    """The rootfs path ``ensure_base_image`` builds for these settings (it may not exist yet)."""
    key = json.dumps([SUITE, mirror, sorted(BASE_PACKAGES), IMAGE_REVISION]).encode()
    name = f"{SUITE}-minbase-{hashlib.sha256(key).hexdigest()[:12]}"
    return (cache_dir or default_cache_dir()).resolve() / name / "rootfs"


def ensure_base_image(cache_dir: Path | None = None, *, mirror: str = DEFAULT_MIRROR) -> Path:
    """Return the cached Debian 12 rootfs, building it with debootstrap the first time.

    The build goes to a temporary directory beside the cache entry and is renamed into place
    only when complete, so an interrupted build never leaves a cache entry that looks valid.
    """
    rootfs = base_image_path(cache_dir, mirror=mirror)
    if (rootfs.parent / "image.json").is_file():
        return rootfs
    require_root("building the lab base image")
    if shutil.which("debootstrap") is None:
        raise LabError(
            "debootstrap is not installed; install it with `apt-get install debootstrap`"
        )
    entry = rootfs.parent
    entry.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(entry.parent / ".build.lock", "lab base image build"):
        if (entry / "image.json").is_file():  # another process built it while we waited
            return rootfs
        _remove_stale_builds(entry.parent)
        build = Path(tempfile.mkdtemp(prefix=f".build-{entry.name}-", dir=entry.parent))
        try:
            _debootstrap(build / "rootfs", mirror)
            _customise_image(build / "rootfs")
            manifest = {
                "suite": SUITE,
                "mirror": mirror,
                "packages": list(BASE_PACKAGES),
                "revision": IMAGE_REVISION,
                "built_at": time.time(),
            }
            (build / "image.json").write_text(json.dumps(manifest, indent=2) + "\n")
            build.chmod(0o755)
            build.rename(entry)
        except BaseException:
            remove_tree(build)
            raise
    return rootfs


# --------------------------------------------------------------------------------------------
# Base image


def _debootstrap(target: Path, mirror: str) -> None:
    # Its own mount namespace: debootstrap mounts /proc and /sys in the target, and an
    # interrupted run would otherwise leave them mounted under the cache.
    argv = [
        "unshare", "--mount", "--propagation", "private", "--",
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
        SUITE, str(target), mirror,
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        log = target / "debootstrap" / "debootstrap.log"
        raise LabError(
            f"debootstrap of {SUITE} from {mirror} failed (exit {result.returncode}); "
            f"check that the mirror is reachable (see {log} if it exists):\n{tail}"
        )


def _customise_image(rootfs: Path) -> None:
    # Host keys are made per host at lab up: hosts must not share them.
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # No init system runs in a lab host: package scripts must not try to start services.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# ecoma lab: no init system, never start services\nexit 101\n")
    policy.chmod(0o755)
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def _remove_stale_builds(cache_root: Path) -> None:
    for stale in cache_root.glob(".build-*"):
        remove_tree(stale)
