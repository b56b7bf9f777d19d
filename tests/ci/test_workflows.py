"""The GitHub workflows under .github/: valid against GitHub's schemas, least privilege, OIDC
only, actions pinned to commits, one job per stack at a time, and every `ecoma-infra` command line
they run parses with the real CLI parser. How the stack queues behave under GitHub's concurrency
rules is in test_ci_concurrency.py.

Workflows are data here: a small evaluator of GitHub expressions (`${{ ... }}`) gives each
expression a plausible value per matrix entry and dispatch input, so the tests check the command
lines, concurrency groups and environments every run would actually get.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import required_tool

from ecoma_infra.stack.model import CLOUD_PROVIDERS, DURATION

ROOT = Path(__file__).resolve().parents[2]
GITHUB_DIR = ROOT / ".github"
WORKFLOW_DIR = GITHUB_DIR / "workflows"
WORKFLOWS = sorted(WORKFLOW_DIR.glob("*.y*ml"))
ACTIONS = sorted((GITHUB_DIR / "actions").glob("*/action.y*ml"))
SETUP_ACTION = GITHUB_DIR / "actions" / "setup" / "action.yml"
OIDC_SCRIPT = GITHUB_DIR / "actions" / "setup" / "oidc-stack-secrets.sh"

EXPECTED_WORKFLOWS = {
    "ci",
    "preview",
    "deploy",
    "burst",
    "reaper",
    "drill",
    "credentials",
    "autoscale",
}
STACKS = ("staging", "prod")

# Actions that exchange the job's GitHub OIDC token: their job needs `id-token: write`.
OIDC_ACTIONS = {
    "pulumi/auth-actions",
    "aws-actions/configure-aws-credentials",
    "google-github-actions/auth",
}
# Subcommands that change a stack: their job must hold the stack's concurrency group.
STACK_CHANGING = {"deploy", "burst", "reap", "drill", "autoscale"}
# The shared setup action, in GitHub's self-repository form (this repository at the running commit).
SETUP_USES = "$/.github/actions/setup"
# The secrets a workflow may read: the Tailscale OAuth client (no OIDC for joining a tailnet
# here), the drain-only kubeconfig and the nodes' SSH key (Ansible, the servers' certificates).
# Cloud and Pulumi access comes from OIDC alone.
ALLOWED_SECRETS = {"TS_OAUTH_SECRET", "KUBECONFIG_DATA", "ECOMA_SSH_PRIVATE_KEY", "GITHUB_TOKEN"}
# Subcommands that reach the nodes over SSH: configure runs Ansible; burst configures the nodes
# it adds, and autoscale and drill burst.
SSH_COMMANDS = {"configure", "burst", "autoscale", "drill"}
# The only scopes any job may write with.
ALLOWED_WRITE_SCOPES = {"id-token", "pull-requests"}
LONG_LIVED_CREDENTIALS = (
    "aws-access-key-id",
    "aws-secret-access-key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "credentials_json",
    "pulumi_access_token",
    "pulumi_config_passphrase",
    "google_credentials",
    "google_application_credentials_json",
    "authkey",
    "oci_cli_key",
)
# Values for string dispatch inputs without a default, as a person would type them.
SAMPLE_INPUTS = {"count": "2", "ttl": "4h"}
# Repository or environment variables that command lines read, as an operator would set them.
SAMPLE_VARIABLES = {"vars.ECOMA_PROMETHEUS_URL": "http://ops-1.tail4e2c1.ts.net:9090"}
# Variables the runner sets for every step.
RUNNER_VARIABLES = {
    "RUNNER_TEMP": "/home/runner/work/_temp",
    "GITHUB_WORKSPACE": "/home/runner/work/ecoma-infra/ecoma-infra",
    "GITHUB_ENV": "/home/runner/work/_temp/_runner_file_commands/set_env",
}


# --- loading --------------------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path.name}: not a YAML mapping"
    return data


def triggers(workflow: Mapping[Any, Any]) -> dict[str, Any]:
    """The `on:` block as a mapping. YAML 1.1 reads a bare `on` key as the boolean True."""
    raw = workflow["on"] if "on" in workflow else workflow.get(True)
    if raw is None:
        return {}
    if isinstance(raw, str):
        return {raw: None}
    if isinstance(raw, list):
        return dict.fromkeys(raw)
    return {str(name): (spec or {}) for name, spec in raw.items()}


def dispatch_inputs(workflow: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    dispatch = triggers(workflow).get("workflow_dispatch") or {}
    return dict(dispatch.get("inputs") or {})


def workflow_named(name: str) -> dict[str, Any]:
    return load(WORKFLOW_DIR / f"{name}.yml")


def jobs(workflow: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(workflow.get("jobs") or {})


def steps(job: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps") or [])


def action_name(uses: str) -> str:
    """`pulumi/auth-actions@<sha>` -> `pulumi/auth-actions`; `$/.github/actions/x` stays."""
    return uses.split("@", 1)[0]


def local_action(uses: str) -> dict[str, Any] | None:
    """The action.yml of an action of this repository: `$/path` (self-repository form, the
    running commit) or `./path` (the checkout in the workspace)."""
    prefix = next((p for p in ("$/", "./") if uses.startswith(p)), None)
    if prefix is None:
        return None
    folder = ROOT / uses.removeprefix(prefix)
    for name in ("action.yml", "action.yaml"):
        if (folder / name).is_file():
            return load(folder / name)
    raise AssertionError(f"{uses}: no action.yml in {folder}")


def used_actions(step_list: list[dict[str, Any]]) -> Iterator[str]:
    """Every action the steps use, local composite actions followed."""
    for step in step_list:
        uses = step.get("uses")
        if not uses:
            continue
        yield uses
        composite = local_action(uses)
        if composite is not None:
            yield from used_actions(list(composite["runs"].get("steps") or []))


# --- GitHub expressions ---------------------------------------------------------------------------

_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<op>==|!=|&&|\|\||!|\(|\))|(?P<ref>[A-Za-z_][A-Za-z0-9_.-]*))"
)

Value = str | bool | float | None


def _tokens(expression: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    expression = expression.rstrip()
    while position < len(expression):
        match = _TOKEN.match(expression, position)
        if match is None or match.end() == position:
            raise AssertionError(f"unsupported expression syntax at {expression[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


def evaluate(expression: str, context: Mapping[str, Value]) -> Value:
    """Evaluate the subset of GitHub's expression language the workflows use: string literals,
    context references, `==`, `!=`, `!`, `&&`, `||` (which return an operand, as GitHub's do)
    and parentheses. A reference not in `context` is an error: every value must be chosen."""
    tokens = _tokens(expression)
    position = 0

    def peek() -> str | None:
        return tokens[position][1] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        position += 1
        return tokens[position - 1]

    def either() -> Value:
        value = both()
        while peek() == "||":
            take()
            right = both()
            value = value if truthy(value) else right
        return value

    def both() -> Value:
        value = comparison()
        while peek() == "&&":
            take()
            right = comparison()
            value = right if truthy(value) else value
        return value

    def comparison() -> Value:
        value = unary()
        if peek() in ("==", "!="):
            _, op = take()
            right = unary()
            equal = as_text(value).lower() == as_text(right).lower()
            return equal if op == "==" else not equal
        return value

    def unary() -> Value:
        if peek() == "!":
            take()
            return not truthy(unary())
        return primary()

    def primary() -> Value:
        kind, text = take()
        if text == "(":
            value = either()
            assert take()[1] == ")", f"unbalanced parentheses in {expression!r}"
            return value
        if kind == "string":
            return text[1:-1].replace("''", "'")
        if kind == "number":
            return float(text)
        if kind == "ref":
            literals: dict[str, Value] = {"true": True, "false": False, "null": None}
            if text in literals:
                return literals[text]
            if text not in context:
                raise AssertionError(f"no value chosen for {text!r} in ${{{{ {expression} }}}}")
            return context[text]
        raise AssertionError(f"unexpected {text!r} in {expression!r}")

    value = either()
    assert position == len(tokens), f"trailing tokens in {expression!r}"
    return value


def truthy(value: Value) -> bool:
    return value not in (None, False, "", 0.0)


def as_text(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else str(value)
    return value


def render(template: Any, context: Mapping[str, Value]) -> str:
    """A string with every `${{ ... }}` replaced by its value."""
    return _EXPRESSION.sub(lambda m: as_text(evaluate(m.group(1), context)), str(template))


def bindings(workflow: Mapping[Any, Any], job: Mapping[str, Any]) -> Iterator[dict[str, Value]]:
    """One context per run the job can have: each matrix entry times each way it is triggered
    (each combination of choice inputs; for a schedule, no inputs at all)."""
    matrix = (job.get("strategy") or {}).get("matrix") or {}
    assert not set(matrix) & {"include", "exclude"}, "the binding helper reads plain matrices"
    matrix_keys = sorted(matrix)
    matrix_rows = [
        dict(zip(matrix_keys, row, strict=True))
        for row in itertools.product(*(matrix[key] for key in matrix_keys))
    ]
    inputs = dispatch_inputs(workflow)
    choices: dict[str, list[Value]] = {}
    for name, given in inputs.items():
        spec = given or {}
        if spec.get("type") == "choice":
            choices[name] = list(spec["options"])
        elif spec.get("type") == "boolean":
            choices[name] = [True, False]
        elif spec.get("default") not in (None, ""):
            choices[name] = [str(spec["default"])]
        else:
            assert name in SAMPLE_INPUTS, f"input {name!r}: add a sample value to SAMPLE_INPUTS"
            choices[name] = [SAMPLE_INPUTS[name]]
    input_rows: list[dict[str, Value]] = []
    if "workflow_dispatch" in triggers(workflow):
        names = sorted(choices)
        input_rows += [
            dict(zip(names, row, strict=True))
            for row in itertools.product(*(choices[name] for name in names))
        ]
    if set(triggers(workflow)) - {"workflow_dispatch"}:
        input_rows.append(dict.fromkeys(inputs, ""))  # push, schedule: inputs are empty
    for matrix_row, input_row in itertools.product(matrix_rows, input_rows):
        context: dict[str, Value] = {f"matrix.{k}": v for k, v in matrix_row.items()}
        context.update({f"inputs.{k}": v for k, v in input_row.items()})
        context.update({f"github.event.inputs.{k}": v for k, v in input_row.items()})
        context.update(SAMPLE_VARIABLES)
        yield context


# --- run steps and the command lines in them ------------------------------------------------------


def shell_lines(script: str) -> Iterator[str]:
    """The script's logical lines: continuations joined, comments and blank lines dropped."""
    for line in script.replace("\\\n", " ").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield stripped


_SHELL_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_]\w*))")
_SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}


def expand_shell_variables(line: str, env: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name in env:
            return env[name]
        if name in RUNNER_VARIABLES:
            return RUNNER_VARIABLES[name]
        raise AssertionError(f"${name} in {line!r} is set by no env: block of the workflow")

    return _SHELL_VARIABLE.sub(value, line)


def ecoma_infra_arguments(tokens: list[str]) -> list[str] | None:
    """The arguments after the `ecoma-infra` word of a command line, up to a shell operator."""
    for index, token in enumerate(tokens):
        if token == "ecoma-infra" or token.endswith("/ecoma-infra"):
            arguments = []
            for argument in tokens[index + 1 :]:
                if argument in _SHELL_OPERATORS:
                    break
                arguments.append(argument)
            return arguments
    return None


def step_env(
    workflow: Mapping[str, Any], job: Mapping[str, Any], step: Mapping[str, Any]
) -> dict[str, Any]:
    return {**(workflow.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}


def command_lines(
    workflow: Mapping[Any, Any], job: Mapping[str, Any], context: Mapping[str, Value]
) -> Iterator[tuple[str, list[str]]]:
    """(the rendered line, its ecoma-infra arguments) for each ecoma-infra call of the job's run
    steps, with `${{ ... }}` and the `$VARIABLES` of the env blocks substituted for `context`."""
    for step in steps(job):
        if "run" not in step:
            continue
        env_templates = step_env(workflow, job, step)
        for line in shell_lines(render(step["run"], context)):
            if "ecoma-infra" not in line:
                continue
            env = {
                name: render(template, context)
                for name, template in env_templates.items()
                if re.search(rf"\$\{{?{name}\b", line)
            }
            rendered = expand_shell_variables(line, env)
            arguments = ecoma_infra_arguments(shlex.split(rendered))
            if arguments is not None:
                yield rendered, arguments


def option_value(arguments: list[str], option: str) -> str | None:
    for index, argument in enumerate(arguments):
        if argument == option and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(f"{option}="):
            return argument.split("=", 1)[1]
    return None


def all_command_lines() -> list[tuple[str, str, str]]:
    """(workflow file, job id, command line) for every distinct ecoma-infra call of every run."""
    found: dict[tuple[str, str, str], None] = {}
    for path in WORKFLOWS:
        workflow = load(path)
        for job_id, job in jobs(workflow).items():
            for context in bindings(workflow, job):
                for _, arguments in command_lines(workflow, job, context):
                    found[(path.name, job_id, shlex.join(["ecoma-infra", *arguments]))] = None
    return list(found)


def job_commands(workflow: Mapping[Any, Any], job: Mapping[str, Any]) -> list[list[str]]:
    """Every ecoma-infra argument list the job runs, over all its bindings, in step order."""
    found: list[list[str]] = []
    for context in bindings(workflow, job):
        for _, arguments in command_lines(workflow, job, context):
            if arguments not in found:
                found.append(arguments)
    return found


def run_step(step_list: list[dict[str, Any]], step_id: str) -> dict[str, Any]:
    for step in step_list:
        if step.get("id") == step_id:
            return step
    raise AssertionError(f"no step with id {step_id!r}")


# --- cron -----------------------------------------------------------------------------------------

_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    (
        "month",
        1,
        12,
        {month: number for number, month in enumerate(_MONTHS, start=1)},
    ),
    ("day of week", 0, 6, {day: number for number, day in enumerate(_WEEKDAYS)}),
)


def _cron_number(text: str, low: int, high: int, names: Mapping[str, int], field: str) -> int:
    value = names.get(text.upper())
    if value is None:
        if not text.isdigit():
            raise ValueError(f"{field}: {text!r} is not a number")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is outside {low}-{high}")
    return value


def cron_fields(expression: str) -> list[set[int]]:
    """The values each of the 5 fields of a POSIX cron expression (as GitHub reads it) matches.
    Raises ValueError for anything else: 6 fields, @hourly, out-of-range values, empty lists."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError(f"{expression!r}: {len(parts)} fields, a cron has 5")
    expanded: list[set[int]] = []
    for text, (field, low, high, names) in zip(parts, _CRON_FIELDS, strict=True):
        values: set[int] = set()
        for item in text.split(","):
            match = re.fullmatch(
                r"(?P<range>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>\d+))?", item
            )
            if match is None:
                raise ValueError(f"{field}: {item!r} is not a cron item")
            step = int(match.group("step") or 1)
            if step < 1:
                raise ValueError(f"{field}: step {step} must be at least 1")
            span = match.group("range")
            if span == "*":
                first, last = low, high
            elif "-" in span:
                start, end = span.split("-")
                first = _cron_number(start, low, high, names, field)
                last = _cron_number(end, low, high, names, field)
                if first > last:
                    raise ValueError(f"{field}: range {span!r} runs backwards")
            else:
                first = _cron_number(span, low, high, names, field)
                last = high if match.group("step") else first
            values.update(range(first, last + 1, step))
        expanded.append(values)
    return expanded


def schedules(workflow: Mapping[Any, Any]) -> list[str]:
    return [entry["cron"] for entry in triggers(workflow).get("schedule") or []]


# --- which files ----------------------------------------------------------------------------------


def test_every_expected_workflow_exists() -> None:
    assert {path.stem for path in WORKFLOWS} == EXPECTED_WORKFLOWS
    assert all(path.suffix == ".yml" for path in WORKFLOWS)
    assert SETUP_ACTION in ACTIONS


def test_github_readme_is_absent_so_the_repository_readme_stays_the_front_page() -> None:
    # GitHub shows .github/README.md in place of the root README.md.
    assert not (GITHUB_DIR / "README.md").exists()


# --- schema ---------------------------------------------------------------------------------------


def check_jsonschema() -> str:
    beside = Path(sys.executable).parent / "check-jsonschema"
    if beside.is_file():
        return str(beside)
    found = shutil.which("check-jsonschema")
    if found is None:
        pytest.fail("check-jsonschema is not installed (dev dependency: uv sync)")
    return found


def validate(schema: str, path: Path) -> None:
    result = subprocess.run(
        [check_jsonschema(), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"{path.name}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_is_valid_against_the_github_workflow_schema(path: Path) -> None:
    validate("vendor.github-workflows", path)


@pytest.mark.parametrize("path", ACTIONS, ids=lambda p: p.parent.name)
def test_composite_action_is_valid_against_the_github_action_schema(path: Path) -> None:
    validate("vendor.github-actions", path)


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps: 3\n")
    with pytest.raises(AssertionError):
        validate("vendor.github-workflows", broken)


# --- YAML's `on` ----------------------------------------------------------------------------------


def test_on_key_is_read_whether_yaml_makes_it_a_string_or_true() -> None:
    as_true = yaml.safe_load("on:\n  push:\n  workflow_dispatch:\n")
    assert True in as_true
    assert set(triggers(as_true)) == {"push", "workflow_dispatch"}
    assert set(triggers({"on": ["push", "pull_request"]})) == {"push", "pull_request"}
    assert set(triggers({"on": "push"})) == {"push"}


# --- CI -------------------------------------------------------------------------------------------


def readme_test_command() -> str:
    """The Quick start's test command: the line of its bash block whose comment is about tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Quick start.*?$(?P<body>.*?)^## ", readme, re.M | re.S)
    assert section, "README.md has no Quick start section"
    block = re.search(r"```(?:bash|sh)\n(?P<code>.*?)```", section.group("body"), re.S)
    assert block, "the Quick start has no bash block"
    commands = []
    for line in block.group("code").splitlines():
        command, _, comment = line.partition("#")
        if command.strip() and re.search(r"\btests?\b", comment):
            commands.append(command.strip())
    assert len(commands) == 1, f"expected one test command in the Quick start, got {commands}"
    return commands[0]


def invoked_programs(script: str) -> set[str]:
    """The programs a shell script starts (normalized paths), through `exec`/`bash`/`sh`."""
    programs = set()
    for line in shell_lines(script):
        words = shlex.split(line)
        while words and words[0] in {"exec", "bash", "sh", "sudo"}:
            words = words[1:]
        if words:
            programs.add(os.path.normpath(words[0]))
    return programs


def test_ci_runs_the_readme_test_command() -> None:
    wanted = os.path.normpath(shlex.split(readme_test_command())[0])
    assert Path(ROOT / wanted).is_file(), f"the README names {wanted}, which does not exist"
    ci = workflow_named("ci")
    programs: set[str] = set()
    for job in jobs(ci).values():
        for step in steps(job):
            if "run" in step:
                programs |= invoked_programs(step["run"])
    # Follow the project's own CI entry point (.ci/run), which must start the same command.
    for program in list(programs):
        path = ROOT / program
        if path.is_file() and program != wanted and path.read_text().startswith("#!"):
            programs |= invoked_programs(path.read_text(encoding="utf-8"))
    assert wanted in programs, f"ci.yml runs {sorted(programs)}, not the README's {wanted}"


def test_ci_runs_as_root_in_a_privileged_debian_12_container() -> None:
    ci = workflow_named("ci")
    assert {"push", "pull_request"} <= set(triggers(ci))
    (job,) = jobs(ci).values()
    container = job["container"]
    assert container["image"] == "debian:12"
    assert "--privileged" in container.get("options", "").split()
    assert "user" not in container, "the lab tests need root"
    for step in steps(job):
        assert "sudo " not in step.get("run", ""), "the container already runs as root"


# --- credentials and permissions ------------------------------------------------------------------


@pytest.mark.parametrize("path", [*WORKFLOWS, *ACTIONS, OIDC_SCRIPT], ids=lambda p: p.name)
def test_no_long_lived_credentials(path: Path) -> None:
    text = path.read_text(encoding="utf-8").lower()
    found = [name for name in LONG_LIVED_CREDENTIALS if name in text]
    assert not found, f"{path.name} mentions long-lived credentials: {found}"
    expressions = " ".join(_EXPRESSION.findall(path.read_text(encoding="utf-8")))
    assert "secrets[" not in expressions, f"{path.name}: name secrets literally"
    secrets = set(re.findall(r"\bsecrets\.(\w+)", expressions))
    assert secrets <= ALLOWED_SECRETS, f"{path.name} reads secrets {secrets - ALLOWED_SECRETS}"


def effective_permissions(workflow: Mapping[str, Any], job: Mapping[str, Any]) -> Any:
    return job["permissions"] if "permissions" in job else workflow.get("permissions")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_least_privilege(path: Path) -> None:
    workflow = load(path)
    assert "permissions" in workflow, "set top-level permissions: the default token can write"
    assert workflow["permissions"] in ({}, {"contents": "read"}), workflow["permissions"]
    for job_id, job in jobs(workflow).items():
        permissions = effective_permissions(workflow, job)
        assert isinstance(permissions, dict), f"{job_id}: {permissions!r} (write-all/read-all)"
        writes = {scope for scope, level in permissions.items() if level == "write"}
        assert writes <= ALLOWED_WRITE_SCOPES, f"{job_id} writes {writes - ALLOWED_WRITE_SCOPES}"
        if "pull-requests" in writes:
            comments = [
                s
                for s in steps(job)
                if str((s.get("with") or {}).get("comment-on-pr")) == "True"
                or ("gh api" in str(s.get("run", "")) and "/comments" in str(s.get("run", "")))
            ]
            assert comments, f"{job_id}: pull-requests: write but no step comments on the PR"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_oidc_jobs_and_only_they_have_id_token_write(path: Path) -> None:
    workflow = load(path)
    for job_id, job in jobs(workflow).items():
        permissions = effective_permissions(workflow, job) or {}
        oidc = {action_name(uses) for uses in used_actions(steps(job))} & OIDC_ACTIONS
        has_id_token = permissions.get("id-token") == "write"
        assert has_id_token == bool(oidc), (
            f"{job_id}: uses {sorted(oidc) or 'no OIDC action'} but id-token is "
            f"{permissions.get('id-token', 'unset')}"
        )


_USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s+(?P<uses>\S+)(?P<comment>.*)$")
_PINNED = re.compile(r"(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})")
_VERSION_COMMENT = re.compile(r"\s+# (?P<version>v\d+\.\d+\.\d+)")


def pinned_uses(path: Path) -> list[tuple[str, str, str]]:
    """(action, commit, version) for each third-party `uses:` line of the file; a line that is
    not of the form `owner/repo@<40 hex> # vX.Y.Z` fails. YAML drops comments, so the file's
    text is read, and checked against the parsed steps so that no `uses:` is missed."""
    found: list[tuple[str, str, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = _USES_LINE.match(line)
        if match is None or match.group("uses").startswith("$/"):
            continue
        where = f"{path.name}:{number}: {line.strip()}"
        pin = _PINNED.fullmatch(match.group("uses"))
        version = _VERSION_COMMENT.match(match.group("comment"))
        assert pin is not None, f"{where}: pin the action to a full commit SHA"
        assert version is not None, f"{where}: say the release in a comment: # vX.Y.Z"
        found.append((pin.group("action"), pin.group("sha"), version.group("version")))
    data = load(path)
    step_lists = (
        [steps(job) for job in jobs(data).values()]
        if "jobs" in data
        else [list(data["runs"].get("steps") or [])]
    )
    parsed = [s["uses"] for step_list in step_lists for s in step_list if "uses" in s]
    third_party = [uses for uses in parsed if local_action(uses) is None]
    assert [f"{a}@{sha}" for a, sha, _ in found] == third_party, path.name
    return found


@pytest.mark.parametrize("path", [*WORKFLOWS, *ACTIONS], ids=lambda p: p.name)
def test_third_party_actions_are_pinned_to_a_commit_with_its_release_in_a_comment(
    path: Path,
) -> None:
    # A tag can be moved to other code; a commit cannot. Each commit was read off the action's
    # repository at the tag named in the comment (docs/ci.md, "Pinned actions").
    pinned_uses(path)


def test_each_action_is_pinned_to_one_commit_everywhere() -> None:
    pins: dict[str, set[tuple[str, str]]] = {}
    for path in [*WORKFLOWS, *ACTIONS]:
        for action, sha, version in pinned_uses(path):
            pins.setdefault(action, set()).add((sha, version))
    assert pins, "no third-party action found"
    assert {a: v for a, v in pins.items() if len(v) > 1} == {}


@pytest.mark.parametrize("path", [*WORKFLOWS, *ACTIONS], ids=lambda p: p.name)
def test_this_repositorys_actions_are_used_in_the_self_repository_form(path: Path) -> None:
    # `$/` is the repository at the running commit; `./` is whatever the workspace holds.
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _USES_LINE.match(line)
        if match is not None:
            assert not match.group("uses").startswith("./"), f"{path.name}: {line.strip()}"


def test_the_pulumi_cloud_token_outlives_the_longest_job_that_logs_in() -> None:
    action = load(SETUP_ACTION)
    (login,) = [
        s
        for s in action["runs"]["steps"]
        if action_name(s.get("uses", "")) == "pulumi/auth-actions"
    ]
    longest = max(
        int(job["timeout-minutes"])
        for path in WORKFLOWS
        for job in jobs(load(path)).values()
        if any(s.get("uses") == SETUP_USES for s in steps(job))
    )
    assert int(login["with"]["token-expiration"]) >= longest * 60


def test_the_setup_action_logs_in_through_oidc_and_joins_the_tailnet_as_ci() -> None:
    action = load(SETUP_ACTION)
    by_name = {action_name(s["uses"]): s for s in action["runs"]["steps"] if "uses" in s}
    login = by_name["pulumi/auth-actions"]["with"]
    assert login["requested-token-type"].startswith("urn:pulumi:token-type:access_token:")
    tailnet = by_name["tailscale/github-action"]["with"]
    assert tailnet["tags"] == "tag:ecoma-ci"
    gcp = by_name["google-github-actions/auth"]["with"]
    assert set(gcp) == {"workload_identity_provider", "service_account"}


# --- the stacks: concurrency, environments --------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_stack_changing_jobs_hold_the_stack_concurrency_group(path: Path) -> None:
    workflow = load(path)
    for job_id, job in jobs(workflow).items():
        for context in bindings(workflow, job):
            for rendered, arguments in command_lines(workflow, job, context):
                if not arguments or arguments[0] not in STACK_CHANGING:
                    continue
                if "--dry-run" in arguments:  # changes nothing: no place in the stack's queue
                    continue
                stack = option_value(arguments, "--stack")
                assert stack in STACKS, f"{job_id}: {rendered!r} names no known stack"
                concurrency = job.get("concurrency") or workflow.get("concurrency")
                assert isinstance(concurrency, dict), f"{job_id}: no concurrency group"
                assert render(concurrency["group"], context) == f"stack-{stack}", (
                    f"{job_id} ({context}): group {concurrency['group']!r} for {rendered!r}"
                )
                assert concurrency.get("cancel-in-progress") is False, (
                    f"{job_id}: a stack update must never be cancelled halfway"
                )
                assert concurrency.get("queue") == "max", (
                    f"{job_id}: without queue: max the group keeps one pending job and cancels "
                    "the one before it"
                )


def test_every_workflow_runs_its_commands_on_each_stack() -> None:
    expected = {
        "deploy": {("deploy", "staging"), ("configure", "staging")}
        | {("deploy", "prod"), ("configure", "prod")},
        "burst": {("burst", stack) for stack in STACKS},
        "reaper": {("reap", stack) for stack in STACKS},
        "drill": {("drill", "staging")},
        "credentials": {("credentials", stack) for stack in STACKS},
        "autoscale": {("autoscale", stack) for stack in STACKS},
        "ci": set(),
        "preview": {("deploy", stack) for stack in STACKS},
    }
    for name, wanted in expected.items():
        workflow = workflow_named(name)
        ran = {
            (arguments[0], option_value(arguments, "--stack"))
            for job in jobs(workflow).values()
            for arguments in job_commands(workflow, job)
        }
        assert ran == wanted, f"{name}.yml runs {sorted(ran)}"


def needs_of(job: Mapping[str, Any]) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


def upstream(workflow: Mapping[str, Any], job_id: str) -> set[str]:
    """Every job that must succeed before this one starts (`needs`, followed)."""
    found: set[str] = set()
    todo = needs_of(jobs(workflow)[job_id])
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += needs_of(jobs(workflow)[name])
    return found


def environment_name(job: Mapping[str, Any], context: Mapping[str, Value]) -> str:
    environment = job.get("environment") or ""
    name = environment if isinstance(environment, str) else environment["name"]
    return render(name, context)


def test_deploy_goes_to_prod_only_after_staging_and_through_the_production_environment() -> None:
    deploy = workflow_named("deploy")
    assert triggers(deploy) == {"push": {"branches": ["main"]}}
    staging, gate, prod = (jobs(deploy)[name] for name in ("staging", "approve-prod", "prod"))
    assert upstream(deploy, "prod") == {"staging", "approve-prod"}
    assert upstream(deploy, "approve-prod") == {"staging"}
    # The reviewers of `production` approve in the gate job; the work runs once they did.
    assert environment_name(gate, {}) == "production"
    assert gate["environment"]["deployment"] is False
    assert gate["permissions"] == {}
    # No approval is asked for a commit that staging did not deploy (a newer one superseded it).
    assert gate["if"] == "needs.staging.outputs.current == 'true'"
    assert environment_name(prod, {}) == "production-scheduled"
    assert "production" not in environment_name(staging, {})
    for job, stack in ((staging, "staging"), (prod, "prod")):
        commands = job_commands(deploy, job)
        assert commands == [
            ["deploy", "--stack", stack, "--yes"],
            ["configure", "--stack", stack],
        ], commands


def test_preview_shows_each_stack_as_deploy_would_apply_it_on_the_pull_request() -> None:
    preview = workflow_named("preview")
    assert set(triggers(preview)) == {"pull_request"}
    (job,) = jobs(preview).values()
    assert job["strategy"]["matrix"]["stack"] == list(STACKS)
    # No plain `pulumi preview` of the committed file: it would show running burst nodes deleted.
    assert not [s for s in steps(job) if action_name(s.get("uses", "")) == "pulumi/actions"]
    for context in bindings(preview, job):
        stack = str(context["matrix.stack"])
        (arguments,) = [a for _, a in command_lines(preview, job, context)]
        assert arguments[:2] == ["deploy", "--stack"]
        assert option_value(arguments, "--stack") == stack
        assert "--dry-run" in arguments  # previews with the carried burst state, changes nothing
        assert "--yes" not in arguments
        assert option_value(arguments, "--policy-pack") == "policy"
        config = option_value(arguments, "--policy-pack-config")
        assert config == f"policy/config/{stack}.json"
        assert (ROOT / config).is_file(), config
        # A preview takes no place in the stack's queue (it would wait behind a long burst).
        group = render(
            job["concurrency"]["group"], {**context, "github.event.pull_request.number": "7"}
        )
        assert not group.startswith("stack-"), group
    preview_step = run_step(steps(job), "preview")
    assert '[ "$code" -eq 0 ] || [ "$code" -eq 3 ]' in preview_step["run"]  # 3: changes pending
    (comment,) = [s for s in steps(job) if "gh api" in str(s.get("run", ""))]
    assert comment["if"] == "${{ !cancelled() && steps.preview.outcome != 'skipped' }}"
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert job["permissions"]["pull-requests"] == "write"


# --- burst ----------------------------------------------------------------------------------------


def test_burst_dispatch_inputs_are_stack_provider_count_ttl() -> None:
    burst = workflow_named("burst")
    assert set(triggers(burst)) == {"workflow_dispatch"}
    inputs = dispatch_inputs(burst)
    assert list(inputs) == ["stack", "provider", "count", "ttl"]
    assert inputs["stack"]["type"] == "choice"
    assert inputs["stack"]["options"] == list(STACKS)
    assert inputs["provider"]["type"] == "choice"
    assert inputs["provider"]["options"] == list(CLOUD_PROVIDERS)
    assert inputs["count"]["type"] == "string"
    assert inputs["count"]["required"] is True
    assert inputs["ttl"]["type"] == "string"
    assert inputs["ttl"].get("required", False) is False


def test_burst_and_reaper_use_a_per_stack_environment_and_prod_burst_needs_approval() -> None:
    burst = workflow_named("burst")
    gate, job = jobs(burst)["approve"], jobs(burst)["burst"]
    assert "approve" in upstream(burst, "burst")
    seen = {c["inputs.stack"]: environment_name(gate, c) for c in bindings(burst, gate)}
    # The gate: prod waits for a reviewer of `production`, staging goes on at once.
    assert seen == {"staging": "staging", "prod": "production"}
    assert gate["environment"]["deployment"] is False
    assert gate["permissions"] == {}
    seen = {c["inputs.stack"]: environment_name(job, c) for c in bindings(burst, job)}
    # The work holds the stack's queue: in an environment without reviewers, after the gate.
    assert seen == {"staging": "staging", "prod": "production-scheduled"}
    reaper = workflow_named("reaper")
    job = jobs(reaper)["reap"]
    seen = {c["matrix.stack"]: render(job["environment"], c) for c in bindings(reaper, job)}
    # Prod's reaper runs every 15 minutes unattended: not behind the reviewers of `production`.
    assert seen == {"staging": "staging", "prod": "production-scheduled"}


def burst_check_script() -> str:
    burst = workflow_named("burst")
    return str(run_step(steps(jobs(burst)["check-inputs"]), "check")["run"])


def run_burst_check(count: str, ttl: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-eo", "pipefail", "-c", burst_check_script()],
        env={"PATH": os.environ["PATH"], "COUNT": count, "TTL": ttl},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize("count", ["0", "1", "3", "12"])
def test_burst_count_check_accepts_a_non_negative_integer(count: str) -> None:
    assert run_burst_check(count).returncode == 0


@pytest.mark.parametrize("count", ["", "-1", "1.5", "two", "1 ", " 1", "01", "1; rm -rf /", "0x2"])
def test_burst_count_check_rejects_anything_else(count: str) -> None:
    result = run_burst_check(count)
    assert result.returncode != 0
    assert "::error title=count::" in result.stdout


@pytest.mark.parametrize("ttl", ["", "90m", "4h", "1d", "30s", "4H", "0h", "4", "h", "4 h", "-1h"])
def test_burst_ttl_check_agrees_with_the_config_duration_rule(ttl: str) -> None:
    valid = ttl == "" or re.fullmatch(DURATION, ttl) is not None
    assert (run_burst_check("1", ttl).returncode == 0) is valid


def test_burst_job_waits_for_the_input_check_and_gets_the_drain_kubeconfig() -> None:
    burst = workflow_named("burst")
    job = jobs(burst)["burst"]
    assert upstream(burst, "burst") == {"approve", "check-inputs"}
    assert upstream(burst, "approve") == {"check-inputs"}
    (setup,) = [s for s in steps(job) if s.get("uses") == SETUP_USES]
    assert setup["with"]["kubeconfig"] == "${{ secrets.KUBECONFIG_DATA }}"


@pytest.mark.parametrize("name", ["burst", "reaper", "drill", "autoscale"])
def test_metrics_workflows_pass_the_pushgateway(name: str) -> None:
    workflow = workflow_named(name)
    for job in jobs(workflow).values():
        if job_commands(workflow, job):
            env = {**(workflow.get("env") or {}), **(job.get("env") or {})}
            assert env.get("ECOMA_PUSHGATEWAY") == "${{ vars.ECOMA_PUSHGATEWAY }}"


def test_drill_defaults_to_aws_on_its_schedule() -> None:
    drill = workflow_named("drill")
    inputs = dispatch_inputs(drill)
    assert inputs["provider"]["options"] == list(CLOUD_PROVIDERS)
    assert inputs["provider"]["default"] == "aws"
    (job,) = jobs(drill).values()
    providers = {option_value(a, "--provider") for a in job_commands(drill, job)}
    assert providers == set(CLOUD_PROVIDERS)  # aws also when scheduled, with no inputs


# --- the command lines parse with the real CLI ----------------------------------------------------

COMMAND_LINES = all_command_lines()


def test_the_workflows_have_command_lines_to_check() -> None:
    assert len(COMMAND_LINES) >= 10, COMMAND_LINES


@pytest.fixture(scope="module")
def cli_parser() -> Any:
    from ecoma_infra.cli.main import build_parser

    return build_parser()


@pytest.mark.parametrize(
    ("workflow", "job_id", "line"),
    COMMAND_LINES,
    ids=[f"{w}:{j}:{line.split('ecoma-infra', 1)[1].strip()}" for w, j, line in COMMAND_LINES],
)
def test_ecoma_infra_command_line_parses_with_the_real_cli(
    workflow: str, job_id: str, line: str, cli_parser: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ecoma_infra_arguments(shlex.split(line))
    assert arguments is not None
    try:
        parsed = cli_parser.parse_args(arguments)
    except SystemExit:
        pytest.fail(f"{workflow} ({job_id}): {line!r} does not parse:\n{capsys.readouterr().err}")
    assert parsed.command == arguments[0]
    assert getattr(parsed, "stack", None) == option_value(arguments, "--stack")


# --- the setup action's scripts, run for real -----------------------------------------------------


def setup_step_script(step_id: str) -> str:
    return str(run_step(load(SETUP_ACTION)["runs"]["steps"], step_id)["run"])


def test_setup_writes_the_kubeconfig_0600_and_points_kubeconfig_at_it(tmp_path: Path) -> None:
    github_env = tmp_path / "github_env"
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", setup_step_script("kubeconfig")],
        env={
            "PATH": os.environ["PATH"],
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_ENV": str(github_env),
            "KUBECONFIG_DATA": "apiVersion: v1\nkind: Config\n",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "ecoma-kubeconfig"
    assert written.stat().st_mode & 0o777 == 0o600
    assert written.read_text() == "apiVersion: v1\nkind: Config\n\n"
    assert github_env.read_text() == f"KUBECONFIG={written}\n"
    assert "kind: Config" not in result.stdout + result.stderr


def fake_tools(folder: Path, record: Path) -> dict[str, str]:
    """`curl` answering like GitHub's OIDC endpoint and `pulumi` recording each call with its
    standard input, both logging their argv to `record`."""
    folder.mkdir()
    (folder / "curl").write_text(
        "#!/usr/bin/env bash\n"
        f'printf "curl %s\\n" "$*" >>"{record}"\n'
        'printf \'{"value": "eyJ.oidc-jwt.sig"}\'\n'
    )
    (folder / "pulumi").write_text(
        f'#!/usr/bin/env bash\nprintf "pulumi %s <<%s\\n" "$*" "$(cat)" >>"{record}"\n'
    )
    for tool in ("curl", "pulumi"):
        (folder / tool).chmod(0o755)
    python_dir = Path(sys.executable).parent  # python3 with PyYAML, like the runner's .venv
    return {"PATH": f"{folder}:{python_dir}:{os.environ['PATH']}"}


def run_oidc_script(
    workdir: Path, stack: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(OIDC_SCRIPT)],
        cwd=workdir,
        env={**env, "STACK": stack, "PULUMI_STACK_REF": f"ecoma/{stack}"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_oidc_script_gives_the_stack_this_runs_tokens_only_through_stdin(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    env = fake_tools(tmp_path / "bin", record)
    shutil.copy(ROOT / "Pulumi.staging.yaml", tmp_path / "Pulumi.staging.yaml")
    wif = tmp_path / "gha-creds.json"
    wif.write_text('{"type": "external_account"}')
    request_token = "request-bearer-value"
    env |= {
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.example/issue?api-version=2",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": request_token,
        "GCP_CREDENTIALS_FILE": str(wif),
    }
    result = run_oidc_script(tmp_path, "staging", env)
    assert result.returncode == 0, result.stderr
    calls = record.read_text().splitlines()
    assert calls[0].startswith("curl ")
    assert calls[0].endswith("https://token.example/issue?api-version=2&audience=sts.amazonaws.com")
    assert request_token not in record.read_text(), "the request token must not be in any argv"
    assert calls[1:] == [
        "pulumi config set --secret --stack ecoma/staging ecoma:aws_web_identity_token"
        " <<eyJ.oidc-jwt.sig",
        "pulumi config set --secret --stack ecoma/staging ecoma:gcp_credentials"
        ' <<{"type": "external_account"}',
    ]
    assert "::add-mask::eyJ.oidc-jwt.sig" in result.stdout


def test_oidc_script_fails_without_an_oidc_token_when_the_stack_assumes_a_role(
    tmp_path: Path,
) -> None:
    env = fake_tools(tmp_path / "bin", tmp_path / "calls")
    shutil.copy(ROOT / "Pulumi.staging.yaml", tmp_path / "Pulumi.staging.yaml")
    result = run_oidc_script(tmp_path, "staging", env)
    assert result.returncode == 1
    assert "id-token: write" in result.stderr
    assert not (tmp_path / "calls").exists()


def test_oidc_script_sets_nothing_for_a_stack_without_cloud_pools(tmp_path: Path) -> None:
    record = tmp_path / "calls"
    env = fake_tools(tmp_path / "bin", record)
    (tmp_path / "Pulumi.lab.yaml").write_text(
        "config:\n  ecoma:burst:\n    budget_usd_per_hour: 0\n"
    )
    result = run_oidc_script(tmp_path, "lab", env)
    assert result.returncode == 0, result.stderr
    assert not record.exists()


# --- schedules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "*/15 * * * *",
        "0 6 * * 1",
        "0 5 * * *",
        "30 2 1,15 * MON-FRI",
        "0 0 * JAN-MAR 0",
        "5-50/5 * * * *",
    ],
)
def test_cron_validator_accepts(expression: str) -> None:
    assert all(cron_fields(expression))


@pytest.mark.parametrize(
    "expression",
    [
        "* * * *",
        "0 6 * * 1 2026",
        "@hourly",
        "60 * * * *",
        "0 24 * * *",
        "0 0 0 * *",
        "0 0 * 13 *",
        "0 0 * * 7",
        "*/0 * * * *",
        "10-5 * * * *",
        "0 6 * * MOX",
        "0,,5 * * * *",
        "1.5 * * * *",
    ],
)
def test_cron_validator_rejects(expression: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        cron_fields(expression)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_schedules_are_valid_five_field_crons(path: Path) -> None:
    for expression in schedules(load(path)):
        cron_fields(expression)  # raises on anything invalid
        minutes = sorted(cron_fields(expression)[0])
        gaps = [b - a for a, b in itertools.pairwise([*minutes, minutes[0] + 60])]
        assert min(gaps) >= 5, f"{expression}: GitHub runs schedules at most every 5 minutes"


def test_schedules_match_their_purpose() -> None:
    every_hour, every_day = set(range(24)), set(range(1, 32))
    (reaper,) = schedules(workflow_named("reaper"))
    assert cron_fields(reaper) == [
        {0, 15, 30, 45},
        every_hour,
        every_day,
        set(range(1, 13)),
        set(range(7)),
    ]
    (drill,) = schedules(workflow_named("drill"))
    minute, hour, _, _, weekday = cron_fields(drill)
    assert (minute, hour, weekday) == ({0}, {6}, {1}), "Monday 06:00 UTC"
    (credentials,) = schedules(workflow_named("credentials"))
    minute, hour, day, month, weekday = cron_fields(credentials)
    assert (len(minute), len(hour)) == (1, 1), "once a day"
    assert (day, month, weekday) == (every_day, set(range(1, 13)), set(range(7)))
    (autoscale,) = schedules(workflow_named("autoscale"))
    minute, hour, day, month, weekday = cron_fields(autoscale)
    # Every 5 minutes (GitHub's shortest interval), off the top of the hour.
    assert minute == set(range(2, 60, 5))
    assert (hour, day, month, weekday) == (every_hour, every_day, set(range(1, 13)), set(range(7)))
    for name in ("reaper", "drill", "credentials", "autoscale"):
        assert "workflow_dispatch" in triggers(workflow_named(name))


def reaches_nodes_over_ssh(arguments: list[str]) -> bool:
    return arguments[0] in SSH_COMMANDS or "--k3s-certificates" in arguments


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_jobs_get_the_nodes_ssh_key_exactly_when_they_reach_nodes_over_ssh(path: Path) -> None:
    """Without the key an Ansible run in CI cannot log in (ecoma:ssh.authorized_keys holds only
    its public half); a job that never reaches a node does not get it."""
    workflow = load(path)
    for job_id, job in jobs(workflow).items():
        setups = [s for s in steps(job) if s.get("uses") == SETUP_USES]
        needs_key = any(reaches_nodes_over_ssh(a) for a in job_commands(workflow, job))
        given = [s.get("with", {}).get("ssh-private-key") for s in setups]
        if needs_key:
            assert given == ["${{ secrets.ECOMA_SSH_PRIVATE_KEY }}"], f"{path.name}: {job_id}"
        else:
            assert not any(given), f"{path.name}: {job_id} gets the SSH key but needs none"


def test_the_workflows_reach_nodes_over_ssh_somewhere() -> None:
    """The test above must have jobs of both kinds to check."""
    kinds = {
        reaches_nodes_over_ssh(arguments)
        for path in WORKFLOWS
        for job in jobs(load(path)).values()
        for arguments in job_commands(load(path), job)
    }
    assert kinds == {True, False}


def test_setup_holds_the_ssh_key_in_an_agent_and_never_in_a_file(tmp_path: Path) -> None:
    required_tool("ssh-agent", "apt-get install openssh-client", "the setup action's SSH step")
    key = tmp_path / "generated" / "id_ed25519"
    key.parent.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)], check=True
    )
    private = key.read_text()
    runner_temp, home, github_env = tmp_path / "temp", tmp_path / "home", tmp_path / "github_env"
    runner_temp.mkdir()
    home.mkdir()
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", setup_step_script("ssh")],
        env={
            "PATH": os.environ["PATH"],
            "RUNNER_TEMP": str(runner_temp),
            "HOME": str(home),
            "GITHUB_ENV": str(github_env),
            "SSH_PRIVATE_KEY": private,
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    socket = runner_temp / "ecoma-ssh-agent.sock"
    try:
        assert result.returncode == 0, result.stderr
        assert github_env.read_text() == f"SSH_AUTH_SOCK={socket}\n"
        listed = subprocess.run(
            ["ssh-add", "-L"],
            env={"PATH": os.environ["PATH"], "SSH_AUTH_SOCK": str(socket)},
            capture_output=True,
            text=True,
            check=True,
        )
        assert listed.stdout.split()[:2] == (key.with_suffix(".pub")).read_text().split()[:2]
        config = (home / ".ssh" / "config").read_text()
        assert "StrictHostKeyChecking accept-new" in config
        body = "".join(private.splitlines()[1:-1])[:40]  # a piece of the key itself
        for folder in (runner_temp, home):
            for written in folder.rglob("*"):
                if written.is_file():
                    assert body not in written.read_text(errors="replace"), written
        assert body not in result.stdout + result.stderr
    finally:
        subprocess.run(
            ["ssh-agent", "-k"],
            env={"PATH": os.environ["PATH"], "SSH_AUTH_SOCK": str(socket), "SSH_AGENT_PID": ""},
            capture_output=True,
            check=False,
        )
        for pid in _agents_on(socket):
            os.kill(pid, signal.SIGTERM)


def _agents_on(socket: Path) -> list[int]:
    """Pids of the ssh-agents listening on `socket` (the test's own, left running by the step)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            agent = cmdline[:1] and cmdline[0].endswith(b"ssh-agent")
            if agent and str(socket).encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_credentials_check_is_read_only_and_fails_the_job_on_findings() -> None:
    credentials = workflow_named("credentials")
    (job,) = jobs(credentials).values()
    assert "concurrency" not in job, "a read-only check takes no stack lock"
    (setup,) = [s for s in steps(job) if s.get("uses") == SETUP_USES]
    assert setup["with"]["cloud-credentials"] == "false"
    commands = job_commands(credentials, job)
    assert all(option_value(a, "--within-days") == "14" for a in commands)
    # The k3s servers' certificates too (read over SSH): they expire after a year.
    assert all("--k3s-certificates" in a for a in commands)
    for step in steps(job):
        assert not step.get("continue-on-error"), "a finding must fail the job"
        assert "|| true" not in step.get("run", "")
