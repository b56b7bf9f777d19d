"""zizmor (the GitHub Actions security linter, a dev dependency) over `.github/`, offline.

Run with the `auditor` persona, its widest: every finding, false positives included. The tree must
have none, except the suppressions listed here, each of which says why in the file, on the lines
just above its `# zizmor: ignore[...]` marker. A suppression that no longer hides a finding fails
too, so the list stays true.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GITHUB_DIR = ROOT / ".github"

# (file under .github, audit) -> how many findings its suppressions hide.
SUPPRESSED = {
    # Writes to GITHUB_PATH/GITHUB_ENV of values no input reaches (the .venv path, the
    # kubeconfig's and the ssh-agent's paths under the runner's temp dir).
    ("actions/setup/action.yml", "github-env"): 3,
    # The CI container is Debian 12 as published, with its security updates.
    ("workflows/ci.yml", "unpinned-images"): 1,
    # A workflow-level group would keep one pending run and cancel the one before it.
    ("workflows/burst.yml", "concurrency-limits"): 1,
    ("workflows/deploy.yml", "concurrency-limits"): 1,
}
_MARKER = re.compile(r"#\s*zizmor:\s*ignore\[(?P<audits>[^\]]+)\]")


def zizmor() -> str:
    beside = Path(sys.executable).parent / "zizmor"
    if beside.is_file():
        return str(beside)
    found = shutil.which("zizmor")
    if found is None:
        pytest.fail("zizmor is not installed (dev dependency: uv sync)")
    return found


def audit(*targets: Path, honour_ignores: bool = True) -> tuple[int, list[dict[str, Any]]]:
    """zizmor's exit code and its findings (JSON). Offline: no audit needs the network, and a
    file zizmor cannot parse is an error, not a silent skip."""
    command = [
        zizmor(),
        "--offline",
        "--strict-collection",
        "--persona",
        "auditor",
        "--no-progress",
        "--format",
        "json",
        *([] if honour_ignores else ["--no-ignores"]),
        *map(str, targets),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.stdout.strip(), f"zizmor printed no report:\n{result.stderr}"
    return result.returncode, json.loads(result.stdout)


def finding_places(findings: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    places: Counter[tuple[str, str]] = Counter()
    for finding in findings:
        for location in finding["locations"]:
            if location["symbolic"]["kind"] != "Primary":
                continue
            key = location["symbolic"]["key"]
            path = (ROOT / key["Local"]["verbatim_path"]).resolve()
            relative = path.relative_to(GITHUB_DIR).as_posix()
            places[(relative, finding["ident"])] += 1
    return places


def test_zizmor_finds_nothing_in_the_workflows_and_actions() -> None:
    code, findings = audit(GITHUB_DIR)
    assert findings == [], json.dumps(findings, indent=1)[:4000]
    assert code == 0


def test_each_suppression_hides_exactly_the_findings_it_names() -> None:
    _, findings = audit(GITHUB_DIR, honour_ignores=False)
    assert finding_places(findings) == Counter(SUPPRESSED)


def test_each_suppression_says_why_on_the_lines_above_it() -> None:
    seen: Counter[tuple[str, str]] = Counter()
    for path in sorted(GITHUB_DIR.rglob("*.y*ml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            match = _MARKER.search(line)
            if match is None:
                continue
            relative = path.relative_to(GITHUB_DIR).as_posix()
            for name in match.group("audits").split(","):
                seen[(relative, name.strip())] += 1
            above = lines[number - 1].strip() if number else ""
            reason = above.lstrip("#").strip()
            where = f"{relative}:{number + 1}: say why on the comment line above the suppression"
            assert above.startswith("#"), where
            assert len(reason.split()) >= 5, where
    assert set(seen) == set(SUPPRESSED), sorted(seen)


def test_the_zizmor_gate_can_fail(tmp_path: Path) -> None:
    workflow = tmp_path / "unpinned.yml"
    workflow.write_text(
        "on: push\n"
        "permissions: {}\n"
        "jobs:\n"
        "  build:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
    )
    code, findings = audit(workflow)
    assert code != 0
    assert "unpinned-uses" in {finding["ident"] for finding in findings}
