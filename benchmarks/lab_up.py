"""Time the lab engine: base image build (fresh and cached), up of 2 and 6 hosts, down.

Run as root: `.venv/bin/python benchmarks/lab_up.py [--fresh-build]`. `--fresh-build` also
debootstraps a base image into a temporary cache (needs Debian's mirror; ~40 s) and removes it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ecoma_infra.lab.engine import lab_down, lab_up
from ecoma_infra.lab.image import default_cache_dir, ensure_base_image
from ecoma_infra.lab.state import LabDisk, LabHost, LabSpec

T = TypeVar("T")


def timed(label: str, action: Callable[[], T]) -> T:
    start = time.monotonic()
    result = action()
    print(f"{label:<40} {time.monotonic() - start:8.3f} s", flush=True)
    return result


def spec(hosts: int) -> LabSpec:
    disks = [
        LabDisk("hot", "virtio-hot", 320),
        LabDisk("warm", "virtio-warm", 320),
        LabDisk("swap", "virtio-swap", 64),
    ]
    return LabSpec(hosts=[LabHost(f"node-{i}", f"10.41.1.{11 + i}", disks) for i in range(hosts)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fresh-build", action="store_true", help="also time an uncached build")
    args = parser.parse_args()
    if args.fresh_build:
        fresh = Path(tempfile.mkdtemp(prefix="ecoma-lab-bench-cache-"))
        try:
            timed("base image, fresh debootstrap", lambda: ensure_base_image(fresh))
        finally:
            shutil.rmtree(fresh)
    cache = default_cache_dir()
    timed("base image, first call (maybe a build)", lambda: ensure_base_image(cache))
    timed("base image, cached", lambda: ensure_base_image(cache))
    with tempfile.TemporaryDirectory(prefix="ecoma-lab-bench-") as tmp:
        for count in (2, 6):
            bench_lab(count, Path(tmp) / f"lab{count}", cache)


def bench_lab(count: int, state_dir: Path, cache: Path) -> None:
    try:
        state = timed(f"lab up, {count} hosts (ssh answering)",
                      lambda: lab_up(spec(count), state_dir, cache_dir=cache))  # fmt: skip
        last = state.hosts[-1].name
        timed(f"  first ssh command on {last}",
              lambda: subprocess.run(state.ssh_argv(last, "true"), check=True))  # fmt: skip
    finally:
        timed(f"lab down, {count} hosts", lambda: lab_down(state_dir))


if __name__ == "__main__":
    main()
