"""The user's path through the lab CLI on the staging stack (real hosts, needs root).

Its own module: only one lab runs at a time, and other modules keep a lab up for their tests.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from ecoma_infra.cli.main import main

pytestmark = pytest.mark.lab


def test_lab_cli_up_converge_status_down_leaves_the_machine_as_it_was(
    lab_cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user's path: `lab up`, `lab converge`, `lab status`, `lab down` on staging."""

    def machine() -> list[str]:
        probes = (["ip", "netns", "list"], ["losetup", "-a"], ["cat", "/proc/swaps"],
                  ["ip", "-o", "link"])  # fmt: skip
        return [subprocess.run(p, check=True, capture_output=True, text=True).stdout
                for p in probes]  # fmt: skip

    before = machine()
    try:
        assert main(["lab", "up", "--stack", "staging"]) == 0
        assert "lab up: 4 hosts" in capsys.readouterr().out
        assert main(["lab", "status", "--stack", "staging"]) == 0
        assert "sts-1" in capsys.readouterr().out
        assert main(["lab", "converge", "--stack", "staging", "--tags", "storage", "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["success"] is True
        assert set(summary["hosts"]) == {"cpl-1", "ops-1", "sts-1", "wkr-1"}
    finally:
        assert main(["lab", "down", "--stack", "staging"]) == 0
    assert machine() == before
    assert main(["lab", "status", "--stack", "staging"]) == 2
