"""The live autoscaler (`.github/workflows/autoscale.yml`) and who may preview prod.

The autoscale step runs for real with a stub `ecoma-infra` that logs its command line, so the
test sees what a run would execute for each stack, and what it does without a Prometheus URL.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_ci_concurrency import readme_environments
from test_workflows import (
    SETUP_USES,
    STACKS,
    WORKFLOWS,
    bindings,
    effective_permissions,
    environment_name,
    jobs,
    load,
    render,
    steps,
    triggers,
    workflow_named,
)

PROMETHEUS = "http://ops-1.tail4e2c1.ts.net:9090"


def autoscale_job() -> dict:
    (job,) = jobs(workflow_named("autoscale")).values()
    return job


def run_autoscale_step(tmp_path: Path, stack: str, prometheus: str) -> tuple[int, str, str]:
    job = autoscale_job()
    (step,) = [s for s in steps(job) if s.get("name") == "ecoma-infra autoscale"]
    context = {"matrix.stack": stack, "vars.ECOMA_PROMETHEUS_URL": prometheus}
    env = {name: render(value, context) for name, value in step["env"].items()}
    tools = tmp_path / "bin"
    tools.mkdir()
    stub = tools / "ecoma-infra"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"{tmp_path}/calls"\n')
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        env={"PATH": f"{tools}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    calls = tmp_path / "calls"
    return result.returncode, calls.read_text() if calls.exists() else "", result.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_autoscale_decides_for_each_stack_against_its_prometheus(
    tmp_path: Path, stack: str
) -> None:
    code, calls, _ = run_autoscale_step(tmp_path, stack, PROMETHEUS)
    assert code == 0
    assert calls == f"autoscale --stack {stack} --prometheus {PROMETHEUS} --yes\n"


def test_autoscale_without_a_prometheus_url_fails_and_names_the_variable(tmp_path: Path) -> None:
    code, calls, stdout = run_autoscale_step(tmp_path, "prod", "")
    assert code == 1
    assert calls == ""
    assert "::error title=ECOMA_PROMETHEUS_URL::" in stdout


def test_autoscale_runs_per_stack_with_the_drain_kubeconfig_in_the_unattended_environments() -> (
    None
):
    workflow = workflow_named("autoscale")
    job = autoscale_job()
    seen = {c["matrix.stack"]: environment_name(job, c) for c in bindings(workflow, job)}
    assert seen == {"staging": "staging", "prod": "production-scheduled"}
    assert job["strategy"]["fail-fast"] is False
    (setup,) = [s for s in steps(job) if s.get("uses") == SETUP_USES]
    assert setup["with"]["kubeconfig"] == "${{ secrets.KUBECONFIG_DATA }}"
    assert setup["with"].get("cloud-credentials", "true") == "true"
    # Longer than a scale-up's wait for Ready (15 min) plus the update and the setup.
    assert job["timeout-minutes"] >= 30


# --- previews of prod -----------------------------------------------------------------------------


def test_a_pull_request_job_gets_prod_credentials_only_through_a_reviewed_environment() -> None:
    environments = readme_environments()
    checked = 0
    for path in WORKFLOWS:
        workflow = load(path)
        if not {"pull_request", "pull_request_target"} & set(triggers(workflow)):
            continue
        for job_id, job in jobs(workflow).items():
            permissions = effective_permissions(workflow, job) or {}
            if permissions.get("id-token") != "write":
                continue
            for context in bindings(workflow, job):
                # Every OIDC job of a pull request runs in an environment: the roles trust
                # environment subjects only (docs/ci.md, "OIDC trust").
                name = environment_name(job, context)
                assert name in environments, f"{path.name}:{job_id}: no environment"
                if "prod" in context.values():
                    checked += 1
                    assert environments[name], f"{path.name}:{job_id}: {name} has no reviewers"
    assert checked >= 1


def test_previews_run_in_the_preview_environments() -> None:
    preview = workflow_named("preview")
    (job,) = jobs(preview).values()
    seen = {c["matrix.stack"]: environment_name(job, c) for c in bindings(preview, job)}
    assert seen == {"staging": "staging-preview", "prod": "production-preview"}
