"""The SDK's floor for a preview of N resources: N trivial resources under the same SDK and the
same mock engine as `ecoma-infra preview --offline` (its recording monitor and mocks), in a
fresh process, as a user would wait for it.

Usage: .venv/bin/python benchmarks/floor_program.py N [--collector-off]

With --collector-off the process treats the garbage collector as the CLI does (off while it
runs, frozen at exit), for the strictest comparison.
"""

from __future__ import annotations

import sys

if "--collector-off" in sys.argv:
    import atexit
    import gc

    gc.disable()
    atexit.register(gc.freeze)

import pulumi
from pulumi.runtime import settings
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _sync_await

from ecoma_infra.program.offline import OfflineMocks, RecordingMonitor


def main() -> None:
    count = int(sys.argv[1])
    settings.reset_options()
    monitor = RecordingMonitor(OfflineMocks())
    pulumi.runtime.set_mocks(
        monitor.mocks, project="ecoma", stack="floor", preview=False, monitor=monitor
    )
    for index in range(count):
        pulumi.CustomResource("ecoma:bench:Trivial", f"trivial-{index}", {"index": index})
    _sync_await(wait_for_rpcs())
    assert len(monitor.records) == count


if __name__ == "__main__":
    main()
