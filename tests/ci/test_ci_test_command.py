"""`scripts/test` (and `.ci/run`, which CI runs) stop at the first failing step, with its code.

The real scripts run in a copy of the project's layout whose `.venv/bin` holds stubs of ruff,
mypy and pytest, and whose PATH holds stubs of `uv` and `dpkg-query` (every apt package
"installed", so nothing is installed; `apt-get` fails if anything calls it). The stubs log their
command lines, so a test sees which steps ran and in which order, and one stub fails on demand.
Nothing in the scripts knows about the stubs: the setup steps (`ensure_apt_packages`,
`ensure_python_env`) run for real against them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = [
    "ruff check .",
    "ruff format --check .",
    "mypy",
    "pytest -n auto --dist loadscope -m not lab",
    "pytest -m lab",
]

# Logs "<name> <args>" and fails with 3 when the call starts with $STUB_FAIL.
_STUB = """#!/usr/bin/env bash
call="$(basename "$0") $*"
call="${call% }"
printf '%s\\n' "$call" >>"$STUB_LOG"
if [ "$(basename "$0")" = pytest ]; then
  printf 'ECOMA_LAB_REQUIRED=%s\\n' "${ECOMA_LAB_REQUIRED:-}" >>"$STUB_LOG"
fi
if [ -n "${STUB_FAIL:-}" ] && [[ "$call" == "$STUB_FAIL"* ]]; then exit "${STUB_CODE:-3}"; fi
exit 0
"""


def _stub(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The scripts in a project root of their own, with stubbed tools."""
    root = tmp_path / "project"
    for script in ("scripts/test", "scripts/lib.sh", ".ci/run"):
        (root / script).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / script, root / script)
    for tool in ("ruff", "mypy", "pytest"):
        _stub(root / ".venv" / "bin" / tool, _STUB)
    tools = tmp_path / "tools"
    _stub(tools / "uv", '#!/usr/bin/env bash\nprintf "uv %s\\n" "$*" >>"$STUB_LOG"\n')
    _stub(tools / "dpkg-query", "#!/usr/bin/env bash\nprintf 'install ok installed'\n")
    _stub(tools / "apt-get", '#!/usr/bin/env bash\necho "apt-get called" >&2\nexit 99\n')
    return root


def run(
    project: Path, command: str, *args: str, fail: str = "", code: int = 3
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    log = project.parent / "calls.log"
    log.unlink(missing_ok=True)
    env = {
        "PATH": f"{project.parent / 'tools'}:/usr/bin:/bin",
        "HOME": str(project.parent),
        "STUB_LOG": str(log),
        "STUB_FAIL": fail,
        "STUB_CODE": str(code),
    }
    result = subprocess.run(
        [str(project / command), *args],
        cwd=project.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def steps_run(calls: list[str]) -> list[str]:
    """The check steps among the logged calls (setup calls and env lines left out)."""
    return [c for c in calls if c.split(" ", 1)[0] in {"ruff", "mypy", "pytest"}]


@pytest.mark.parametrize("failing", range(len(STEPS)), ids=STEPS)
def test_the_test_command_stops_at_the_first_failing_step_with_its_code(
    project: Path, failing: int
) -> None:
    result, calls = run(project, "scripts/test", fail=STEPS[failing])
    assert result.returncode == 3, result.stderr
    assert steps_run(calls) == STEPS[: failing + 1], calls
    assert "apt-get called" not in result.stderr


def test_the_test_command_runs_every_step_in_order_and_passes_arguments_to_pytest(
    project: Path,
) -> None:
    result, calls = run(project, "scripts/test", "-q", "-k", "lab")
    assert result.returncode == 0, result.stderr
    assert steps_run(calls) == [
        *STEPS[:3],
        "pytest -n auto --dist loadscope -m not lab -q -k lab",
        "pytest -m lab -q -k lab",
    ]
    # The locked environment was synced first, from the lock file only.
    assert calls[0] == "uv sync --frozen --quiet"
    lab_required = "1" if os.geteuid() == 0 else ""
    assert f"ECOMA_LAB_REQUIRED={lab_required}" in calls


def test_ci_entry_point_fails_when_a_lint_step_fails(project: Path) -> None:
    result, calls = run(project, ".ci/run", fail="ruff check")
    assert result.returncode == 3, result.stderr
    assert steps_run(calls) == ["ruff check ."]


def test_ci_entry_point_passes_when_every_step_passes(project: Path) -> None:
    result, calls = run(project, ".ci/run")
    assert result.returncode == 0, result.stderr
    assert steps_run(calls) == STEPS


def test_why_each_step_is_its_own_command_under_set_e() -> None:
    # Bash's rule the old `ruff check . && ruff format --check .` fell into: `set -e` ignores a
    # failure of any command of an && list but the last, so the script went on.
    result = subprocess.run(
        ["bash", "-c", "set -euo pipefail; false && true; echo went on"],
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    assert (result.returncode, result.stdout) == (0, "went on\n")


def test_the_first_setup_shows_its_progress_and_says_how_big_it_is(project: Path) -> None:
    shutil.rmtree(project / ".venv")  # a fresh checkout: nothing installed yet

    result, calls = run(project, "scripts/test")

    # uv's progress is shown (no --quiet), and the log says what is coming before it starts.
    assert calls[0] == "uv sync --frozen"
    assert "first setup" in result.stderr
    assert "220 MB" in result.stderr
    assert "1.4 GB" in result.stderr


def test_the_environment_is_synced_again_only_when_the_lock_changed(project: Path) -> None:
    (project / "uv.lock").write_text("version = 1\n")
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (project / ".venv").mkdir(exist_ok=True)
    first, calls = run(project, "scripts/test")
    assert first.returncode == 0, first.stderr
    assert calls[0] == "uv sync --frozen --quiet"
    # Nothing changed: no sync (with compile-bytecode even an empty sync costs seconds).
    again, calls = run(project, "scripts/test")
    assert again.returncode == 0, again.stderr
    assert not [c for c in calls if c.startswith("uv ")], calls
    assert steps_run(calls) == STEPS
    # A changed lock (or pyproject.toml) syncs once more.
    (project / "uv.lock").write_text("version = 1\n# a new pin\n")
    _, calls = run(project, "scripts/test")
    assert calls[0] == "uv sync --frozen --quiet"
    (project / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    _, calls = run(project, "scripts/test")
    assert calls[0] == "uv sync --frozen --quiet"
    _, calls = run(project, "scripts/test")
    assert not [c for c in calls if c.startswith("uv ")], calls


def test_a_pytest_run_that_selects_no_test_is_no_failure(project: Path) -> None:
    # `scripts/test -k storage` selects no test of one of the two pytest runs: exit 5.
    result, calls = run(project, "scripts/test", "-k", "storage", fail="pytest -m lab", code=5)
    assert result.returncode == 0, result.stderr
    assert steps_run(calls)[-1] == "pytest -m lab -k storage"
    # Any other code still stops the command with it.
    result, _ = run(project, "scripts/test", fail="pytest -n auto", code=1)
    assert result.returncode == 1
