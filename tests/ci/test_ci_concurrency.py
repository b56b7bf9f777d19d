"""The stack queues, proved against GitHub's documented concurrency rules.

What GitHub says ("Control the concurrency of workflows and jobs", docs.github.com, read for
issue 18):

    "This means that there can be at most one running job or workflow in a concurrency group at
    any time. When a concurrent job or workflow is queued, if another job or workflow using the
    same concurrency group in the repository is in progress, the queued job or workflow will be
    pending. By default, any existing pending job or workflow in the same concurrency group will be
    canceled and the new queued job or workflow will take its place."

    "To allow more than one pending job or workflow run to wait in the same concurrency group, use
    the optional queue property."

The same page goes on (paraphrased): with `queue: single`, the default, at most one job or run is
pending and a new one cancels and replaces it; with `queue: max` up to 100 are pending, and one
more arriving at a full queue is cancelled; `queue: max` with `cancel-in-progress: true` is a
validation error; pending ones are taken first in, first out by the time they began to wait, but
"ordering is not guaranteed" (the older edition's words). SchemaStore's workflow schema, which
check-jsonschema vendors, says it in one sentence, checked below:

    "With the default `single`, at most one run can be pending — additional pending runs cancel
    the previous one. With `max`, up to 100 runs can be pending and are processed in FIFO order."

`GitHub` below is that rule set and nothing more; the workflows are read from `.github/` (their
jobs, `needs`, matrices and rendered concurrency groups), and each scenario throws at them what
production does: a reaper every 15 minutes, an autoscaler every 5, bursts and deploys by people,
a prod deploy waiting a day for its reviewer. The design under test (docs/ci.md, "One queue per
stack"): every job that changes a stack queues in `stack-<stack>` with `queue: max`; the periodic
workflows add a workflow-level group, so at most one of their runs is going and one waiting; the
approvals are jobs of their own that hold no group.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import re
import subprocess
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_workflows import (
    ROOT,
    STACKS,
    WORKFLOWS,
    Value,
    bindings,
    dispatch_inputs,
    jobs,
    load,
    render,
    workflow_named,
)

QUEUE_LIMIT = 100  # "up to 100" pending with queue: max
STACK_GROUP = re.compile(r"stack-(?P<stack>\w+)")
# Workflows whose runs are requests that must happen (never cancelled, never replaced).
REQUESTED = {"burst", "deploy", "drill"}
# Workflows whose next run does the same work again: replacing a waiting run of the same workflow
# loses nothing.
PERIODIC = {"reaper", "autoscale"}


# --- GitHub's rules -------------------------------------------------------------------------------


@dataclass
class Entry:
    """A workflow run or a job waiting for, or holding, a concurrency group."""

    label: str
    start: Callable[[], None]
    cancel: Callable[[], None]


@dataclass
class Group:
    running: Entry | None = None
    pending: deque[Entry] = field(default_factory=deque)


class GitHub:
    """Concurrency groups exactly as documented (FIFO taken as the usual order)."""

    def __init__(self) -> None:
        self.groups: dict[str, Group] = {}
        self.pending_peak: dict[tuple[str, str], int] = {}

    def enter(self, name: str, settings: Mapping[str, Any], entry: Entry) -> None:
        queue = settings.get("queue", "single")
        cancel_in_progress = settings.get("cancel-in-progress", False) is True
        assert not (queue == "max" and cancel_in_progress), "a validation error on GitHub"
        group = self.groups.setdefault(name.lower(), Group())  # names are case-insensitive
        if cancel_in_progress and group.running is not None:
            running, group.running = group.running, None
            running.cancel()
        if group.running is None and not group.pending:
            group.running = entry
            entry.start()
            return
        if queue == "max":
            if len(group.pending) >= QUEUE_LIMIT:
                entry.cancel()
                return
        else:
            while group.pending:
                group.pending.popleft().cancel()
        group.pending.append(entry)
        for workflow in {e.label.split(":", 1)[0] for e in group.pending}:
            count = sum(e.label.startswith(f"{workflow}:") for e in group.pending)
            key = (name, workflow)
            self.pending_peak[key] = max(self.pending_peak.get(key, 0), count)

    def leave(self, name: str, entry: Entry) -> None:
        group = self.groups[name.lower()]
        assert group.running is entry
        group.running = None
        if group.pending:
            group.running = group.pending.popleft()
            group.running.start()


# --- the workflows, run ---------------------------------------------------------------------------


@dataclass
class JobRun:
    run: Run
    job_id: str
    label: str
    needs: list[str]
    group: tuple[str, dict[str, Any]] | None
    state: str = "waiting"  # waiting, queued, running, done, cancelled, skipped
    started: float | None = None
    ended: float | None = None


class Simulation:
    """Runs of the real workflows through `GitHub`, on a clock of minutes."""

    def __init__(
        self,
        durations: Mapping[tuple[str, str], float],
        workflows: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.github = GitHub()
        self.durations = durations
        self.workflows = workflows
        self.now = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.sequence = 0
        self.runs: list[Run] = []

    def at(self, time: float, action: Callable[[], None]) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, action))

    def dispatch(self, time: float, workflow: str, **inputs: Value) -> None:
        data = self.workflows[workflow] if self.workflows else workflow_named(workflow)
        self.at(time, lambda: self._arrive(Run(self, workflow, data, inputs)))

    def go(self, until: float = 7 * 24 * 60) -> None:
        while self.events and self.events[0][0] <= until:
            self.now, _, action = heapq.heappop(self.events)
            action()

    def _arrive(self, run: Run) -> None:
        self.runs.append(run)
        run.arrive()

    # What happened ---------------------------------------------------------------------------

    def job_runs(self, workflow: str | None = None) -> Iterator[JobRun]:
        for run in self.runs:
            if workflow is None or run.workflow == workflow:
                yield from run.jobs.values()

    def stack_jobs(self) -> Iterator[tuple[str, JobRun]]:
        for job in self.job_runs():
            if job.group is not None:
                match = STACK_GROUP.fullmatch(job.group[0])
                if match:
                    yield match.group("stack"), job


class Run:
    """One workflow run: its workflow-level group, then its jobs as their needs allow."""

    def __init__(
        self, sim: Simulation, workflow: str, data: dict[str, Any], inputs: Mapping[str, Value]
    ) -> None:
        self.sim = sim
        self.workflow = workflow
        self.data = data
        self.inputs = dict(inputs)
        self.state = "waiting"
        self.jobs: dict[str, JobRun] = {}
        for job_id, job in jobs(data).items():
            for context in self._contexts(job):
                matrix = ",".join(f"{k[7:]}={v}" for k, v in context.items() if k[:7] == "matrix.")
                label = f"{workflow}:{job_id}" + (f"[{matrix}]" if matrix else "")
                needs = job.get("needs") or []
                group = None
                if job.get("concurrency"):
                    settings = dict(job["concurrency"])
                    group = (render(settings["group"], context), settings)
                self.jobs[label] = JobRun(
                    self, job_id, label, [needs] if isinstance(needs, str) else needs, group
                )

    def _contexts(self, job: Mapping[str, Any]) -> list[dict[str, Value]]:
        """The job's contexts for this run: one per matrix entry, with this run's inputs (a
        scheduled or pushed run has every input empty)."""
        inputs: dict[str, Value] = {}
        for name in dispatch_inputs(self.data):
            value = self.inputs.get(name, "")
            inputs |= {f"inputs.{name}": value, f"github.event.inputs.{name}": value}
        assert set(self.inputs) <= set(dispatch_inputs(self.data)), self.inputs
        by_matrix: dict[tuple[tuple[str, Value], ...], dict[str, Value]] = {}
        for context in bindings(self.data, job):
            matrix = tuple(sorted((k, v) for k, v in context.items() if k.startswith("matrix.")))
            by_matrix[matrix] = {**context, **inputs}
        return list(by_matrix.values())

    def arrive(self) -> None:
        settings = self.data.get("concurrency")
        if settings:
            name = settings if isinstance(settings, str) else settings["group"]
            config = {} if isinstance(settings, str) else dict(settings)
            self.entry = Entry(f"{self.workflow}:run", self.start, self.cancel)
            self.sim.github.enter(name, config, self.entry)
        else:
            self.start()

    def start(self) -> None:
        self.state = "running"
        self.advance()

    def cancel(self) -> None:
        self.state = "cancelled"
        for job in self.jobs.values():
            if job.state == "waiting":
                job.state = "cancelled"

    def advance(self) -> None:
        for job in self.jobs.values():
            if job.state != "waiting":
                continue
            upstream = [j for j in self.jobs.values() if j.job_id in job.needs]
            if any(j.state in ("cancelled", "skipped") for j in upstream):
                job.state = "skipped"
            elif all(j.state == "done" for j in upstream):
                self._submit(job)
        finished = all(j.state in ("done", "cancelled", "skipped") for j in self.jobs.values())
        if finished and self.state == "running":
            self.state = "done"
            settings = self.data.get("concurrency")
            if settings:
                name = settings if isinstance(settings, str) else settings["group"]
                self.sim.github.leave(name, self.entry)

    def _submit(self, job: JobRun) -> None:
        job.state = "queued"

        def start() -> None:
            job.state, job.started = "running", self.sim.now
            minutes = self.sim.durations.get((self.workflow, job.job_id), 3.0)
            self.sim.at(self.sim.now + minutes, finish)

        def finish() -> None:
            job.state, job.ended = "done", self.sim.now
            if job.group is not None:
                self.sim.github.leave(job.group[0], entry)
            self.advance()

        def cancel() -> None:
            job.state = "cancelled"
            self.advance()

        entry = Entry(job.label, start, cancel)
        if job.group is None:
            start()
        else:
            self.sim.github.enter(job.group[0], job.group[1], entry)


def production_week(sim: Simulation, *, hours: float = 6) -> None:
    """The schedules: the reaper every 15 minutes, the autoscaler at minutes 2, 7, ..., 57."""
    minutes = int(hours * 60)
    for minute in range(0, minutes, 15):
        sim.dispatch(minute, "reaper")
    for minute in range(2, minutes, 5):
        sim.dispatch(minute, "autoscale")


# A prod burst that takes an hour (a scale-down draining several nodes), a day of waiting for a
# reviewer, and the rest at a few minutes each.
DURATIONS = {("burst", "burst"): 60.0, ("deploy", "approve-prod"): 24 * 60.0}


def busy_day() -> Simulation:
    sim = Simulation(DURATIONS)
    production_week(sim)
    sim.dispatch(0.5, "burst", stack="prod", provider="aws", count="3", ttl="")
    sim.dispatch(3, "burst", stack="prod", provider="gcp", count="2", ttl="")
    sim.dispatch(4, "burst", stack="prod", provider="oci", count="0", ttl="")
    sim.dispatch(5, "deploy")
    sim.dispatch(6, "drill", provider="aws")
    sim.dispatch(8, "burst", stack="staging", provider="aws", count="1", ttl="")
    sim.go()
    return sim


# --- the scenarios --------------------------------------------------------------------------------


def test_no_requested_burst_deploy_or_drill_is_ever_cancelled_or_replaced() -> None:
    sim = busy_day()
    for workflow in REQUESTED:
        for job in sim.job_runs(workflow):
            assert job.state == "done", f"{job.label}: {job.state}"


def test_every_periodic_run_that_started_did_its_work() -> None:
    sim = busy_day()
    for workflow in PERIODIC:
        for run in (r for r in sim.runs if r.workflow == workflow):
            # A periodic run is only ever replaced while it waits, by a newer one of its kind.
            expected = {"done"} if run.state != "cancelled" else {"cancelled"}
            assert {job.state for job in run.jobs.values()} == expected, run.workflow


def test_a_stack_never_has_two_changes_running_at_once() -> None:
    sim = busy_day()
    for stack in STACKS:
        spans = sorted(
            (job.started, job.ended)
            for name, job in sim.stack_jobs()
            if name == stack and job.started is not None
        )
        assert spans, stack
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end is not None
            assert start is not None
            assert start >= end, f"{stack}: two changes overlap"


def test_periodic_runs_do_not_pile_up_behind_a_long_change() -> None:
    sim = busy_day()
    for (group, workflow), peak in sim.github.pending_peak.items():
        if STACK_GROUP.fullmatch(group) and workflow in PERIODIC:
            assert peak <= 1, f"{group}: {peak} {workflow} jobs waiting at once"
    # ...which is what keeps a stack's queue far below GitHub's limit of 100.
    assert max(sim.github.pending_peak.values()) < 10


def test_a_prod_deploy_waiting_a_day_for_its_reviewer_holds_nothing_up() -> None:
    sim = busy_day()
    reaps = [
        job
        for job in sim.job_runs("reaper")
        if job.label.endswith("[stack=prod]") and job.state == "done"
    ]
    # The approval of the deploy at minute 5 waits 24 h; prod's reaper keeps going meanwhile.
    assert reaps
    assert max(job.ended or 0.0 for job in reaps) > 6 * 60 - 30


def test_the_model_catches_the_old_design_dropping_a_waiting_burst() -> None:
    # The workflows as they were: one group per stack, GitHub's default queue (one pending).
    old = {}
    for path in WORKFLOWS:
        data = load(path)
        for job in jobs(data).values():
            settings = job.get("concurrency")
            if isinstance(settings, dict):
                settings.pop("queue", None)
        if path.stem in PERIODIC:
            data.pop("concurrency", None)
        old[path.stem] = data
    sim = Simulation(DURATIONS, old)
    production_week(sim, hours=2)
    sim.dispatch(0.5, "burst", stack="prod", provider="aws", count="3", ttl="")
    sim.dispatch(3, "burst", stack="prod", provider="gcp", count="2", ttl="")
    sim.go()
    (gcp,) = [
        job
        for run in sim.runs
        if run.workflow == "burst" and run.inputs["provider"] == "gcp"
        for job in run.jobs.values()
        if job.job_id == "burst"
    ]
    assert gcp.state == "cancelled"


def test_the_model_follows_the_documented_rules() -> None:
    github, log = GitHub(), []

    def entry(label: str) -> Entry:
        return Entry(label, lambda: log.append(f"start {label}"), lambda: log.append(f"x {label}"))

    one, two, three = entry("a:1"), entry("a:2"), entry("a:3")
    github.enter("Single", {}, one)
    github.enter("single", {}, two)  # names are case-insensitive
    github.enter("single", {}, three)  # replaces the pending one
    github.leave("single", one)
    assert log == ["start a:1", "x a:2", "start a:3"]
    log.clear()
    entries = [entry(f"b:{n}") for n in range(QUEUE_LIMIT + 2)]
    for item in entries:
        github.enter("max", {"queue": "max"}, item)
    assert log == ["start b:0", f"x b:{QUEUE_LIMIT + 1}"]  # 100 wait; the next one is refused
    github.leave("max", entries[0])
    assert log[-1] == "start b:1"  # first in, first out
    with pytest.raises(AssertionError, match="validation error"):
        github.enter("bad", {"queue": "max", "cancel-in-progress": True}, entry("c:1"))


def test_the_model_matches_the_queue_property_in_githubs_schema() -> None:
    # check-jsonschema's vendored workflow schema (SchemaStore) describes the same rule.
    import check_jsonschema

    schema = Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/github-workflows.json"
    queue = json.loads(schema.read_text())["definitions"]["concurrency"]["properties"]["queue"]
    assert queue["enum"] == ["single", "max"]
    assert queue["default"] == "single"
    text = queue["description"]
    assert "at most one run can be pending" in text
    assert "up to 100 runs can be pending" in text
    assert "FIFO" in text


# --- the rules the design rests on, read off every workflow ---------------------------------------


def readme_environments() -> dict[str, bool]:
    """docs/ci.md's GitHub settings table: environment -> has required reviewers."""
    readme = (ROOT / "docs" / "ci.md").read_text(encoding="utf-8")
    section = re.search(r"^##+ GitHub settings$(?P<body>.*?)^#", readme, re.M | re.S)
    assert section, "docs/ci.md has no 'GitHub settings' section"
    found = {}
    for line in section.group("body").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`[\w-]+`", cells[0]):
            found[cells[0].strip("`")] = "required reviewers" in cells[1]
    assert found, "the GitHub settings section has no table of environments"
    return found


def job_instances() -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any], dict[str, Value]]]:
    for path in WORKFLOWS:
        workflow = load(path)
        for job_id, job in jobs(workflow).items():
            for context in bindings(workflow, job):
                yield path.stem, job_id, workflow, job, context


def test_every_environment_the_workflows_use_is_in_the_readme() -> None:
    environments = readme_environments()
    for workflow, job_id, _, job, context in job_instances():
        environment = job.get("environment")
        if environment:
            name = environment if isinstance(environment, str) else environment["name"]
            assert render(name, context) in environments, f"{workflow}:{job_id}"


def test_a_job_that_waits_for_a_reviewer_holds_no_shared_concurrency_group() -> None:
    # A job waiting at an environment's reviewers holds its group until someone acts (GitHub
    # cancels it only after 30 days). Such a job holds no group, or only its own pull request's
    # preview group (a newer push to that pull request replaces it, as it should).
    environments = readme_environments()
    gated = set()
    for workflow_name, job_id, workflow, job, context in job_instances():
        environment = job.get("environment")
        if not environment:
            continue
        name = environment if isinstance(environment, str) else environment["name"]
        if environments[render(name, context)]:
            gated.add(f"{workflow_name}:{job_id}")
            assert "concurrency" not in workflow, workflow_name
            group = str((job.get("concurrency") or {}).get("group", ""))
            assert group == "" or "github.event.pull_request.number" in group, group
    assert gated == {"deploy:approve-prod", "burst:approve", "preview:preview"}


def test_every_job_in_a_stack_queue_waits_for_nobody_and_is_never_replaced() -> None:
    environments = readme_environments()
    seen = set()
    for workflow_name, job_id, _, job, context in job_instances():
        settings = job.get("concurrency")
        if not settings or not str(settings["group"]).startswith("stack-"):
            continue
        assert STACK_GROUP.fullmatch(render(settings["group"], context)), settings["group"]
        seen.add(workflow_name)
        assert settings["queue"] == "max", f"{workflow_name}:{job_id}"
        assert settings["cancel-in-progress"] is False, f"{workflow_name}:{job_id}"
        environment = job["environment"]
        name = render(environment if isinstance(environment, str) else environment["name"], context)
        assert not environments[name], f"{workflow_name}:{job_id} waits for reviewers in {name}"
    assert seen == REQUESTED | PERIODIC


def test_only_periodic_workflows_have_a_workflow_level_group_that_replaces_waiting_runs() -> None:
    for path in WORKFLOWS:
        settings = load(path).get("concurrency")
        if path.stem in PERIODIC:
            assert settings == {"group": path.stem, "cancel-in-progress": False}, path.stem
        else:
            assert path.stem not in REQUESTED or settings is None, path.stem


# --- queued deploys that start out of order -------------------------------------------------------

HEAD_ACTION = ROOT / ".github" / "actions" / "head-of-main" / "action.yml"


def run_head_check(tmp_path: Path, head: str, sha: str) -> tuple[int, str, str]:
    (script,) = [s["run"] for s in load(HEAD_ACTION)["runs"]["steps"] if s.get("id") == "head"]
    tools = tmp_path / "bin"
    tools.mkdir()
    gh = tools / "gh"
    gh.write_text(
        f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >>"{tmp_path}/gh.calls"\necho {head}\n'
    )
    gh.chmod(0o755)
    output = tmp_path / "github_output"
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        env={
            "PATH": f"{tools}:{os.environ['PATH']}",
            "GITHUB_OUTPUT": str(output),
            "GH_TOKEN": "t",
            "REPOSITORY": "ecoma/ecoma-infra",
            "SHA": sha,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (tmp_path / "gh.calls").read_text() == (
        "api repos/ecoma/ecoma-infra/commits/main --jq .sha\n"
    )
    return result.returncode, output.read_text(), result.stdout


def test_a_deploy_of_the_head_of_main_goes_ahead(tmp_path: Path) -> None:
    code, output, _ = run_head_check(tmp_path, "a" * 40, "a" * 40)
    assert (code, output) == (0, "current=true\n")


def test_a_deploy_of_an_older_commit_steps_aside_and_says_for_which(tmp_path: Path) -> None:
    code, output, stdout = run_head_check(tmp_path, "b" * 40, "a" * 40)
    assert (code, output) == (0, "current=false\n")
    assert f"::notice title=superseded::{'a' * 40} is no longer the head of main" in stdout
    assert f"the deploy run of {'b' * 40} deploys both" in stdout


def test_every_deploy_job_checks_the_head_first_and_does_nothing_else_when_superseded() -> None:
    deploy = workflow_named("deploy")
    for job_id in ("staging", "prod"):
        job_steps = jobs(deploy)[job_id]["steps"]
        assert job_steps[0]["uses"] == "$/.github/actions/head-of-main"
        assert job_steps[0]["id"] == "head"
        for step in job_steps[1:]:
            assert step["if"] == "steps.head.outputs.current == 'true'", (job_id, step)
    assert jobs(deploy)["staging"]["outputs"]["current"] == "${{ steps.head.outputs.current }}"
