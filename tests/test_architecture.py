"""The package's layers (docs/architecture.md) hold: imports only point down, checked by
import-linter's contracts in pyproject.toml, and the check fails when a module imports upward."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from stacks import ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root, env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


def test_the_package_keeps_every_import_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward_import", "contract"),
    [
        ("stack/model.py", "import ecoma_infra.cli.main", "Layers"),
        ("program/disks.py", "import ecoma_infra.platforms.seams", "Layers"),
        ("ops/telemetry.py", "import ecoma_infra.burst.plan", "Layers"),
        ("lab/state.py", "import ecoma_infra.configure.run", "Layers"),
        ("migrate/plan.py", "import ecoma_infra.burst.plan", "Layers"),
        ("migrate/state.py", "import ecoma_infra.ops.telemetry", "Layers"),
        ("burst/run.py", "import ecoma_infra.day2.upgrade", "Layers"),
        ("day2/common.py", "import ecoma_infra.cli.day2_session", "Layers"),
        ("errors.py", "import ecoma_infra.stack.model", "Leaves import no layer"),
        (
            "platforms/kubernetes_simulated.py",
            "import ecoma_infra.configure.inputs",
            "Stand-ins never import",
        ),
    ],
)
def test_an_upward_import_breaks_the_check(
    tmp_path: Path, module: str, upward_import: str, contract: str
) -> None:
    shutil.copytree(ROOT / "ecoma_infra", tmp_path / "ecoma_infra")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "ecoma_infra" / module
    target.write_text(target.read_text() + f"\n{upward_import}  # an import that points up\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
