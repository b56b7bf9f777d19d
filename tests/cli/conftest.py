"""A project directory of its own for CLI tests: the real program and package, the repo's stack
files, no ambient stack selection or confirmation switch from the machine running the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from stacks import ROOT, stack_variant


@pytest.fixture
def offline_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        (root / name).write_text((ROOT / name).read_text())
    (root / "ecoma_infra").symlink_to(ROOT / "ecoma_infra")
    stack_variant(root, "staging")
    stack_variant(root, "prod")
    monkeypatch.chdir(root)
    for name in ("ECOMA_METRICS_FILE", "ECOMA_PUSHGATEWAY", "PULUMI_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PULUMI_SKIP_CONFIRMATIONS", raising=False)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "pulumi-home"))
    return root
