"""Run the Ansible playbook through ansible-runner, with secrets kept off disk and off screen.

The contract (docs/contracts.md, "Secrets at run time"): secrets reach Ansible only through the
environment of the ansible-runner process. ansible-runner helps with that only in part, so this
module closes the gaps it leaves:

- `suppress_env_files=True`: no `env/envvars`, `env/extravars`, `env/passwords`, `env/ssh_key`.
- ansible-runner copies the whole `os.environ` into the job; we cut that back to an allow-list.
- ansible-runner 2.4 writes `artifacts/<ident>/command` with the job's full environment (our
  secrets included) before it starts Ansible. That path is made a FIFO that a thread drains into
  nothing, so the environment never lands in a file.
- stdout/stderr artifact files are suppressed; the inventory file, job events (which carry
  task output) and Ansible's controller temp files live in a fresh 0700 private dir that is
  removed after every run, whatever happens. The fact cache is left to the playbook's
  ansible.cfg instead of ansible-runner's on-disk default.
- everything this module prints goes through a `Redactor` that masks configured secret values
  and secret-looking tokens, even if a task forgot `no_log`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import sysconfig
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

from ecoma_infra.adapters import AutomationStack
from ecoma_infra.errors import EcomaError, UsageError

OutputMode = Literal["progress", "json", "quiet"]

#: Secrets the roles read with `lookup('ansible.builtin.env', ...)` (docs/contracts.md).
SECRET_ENV_VARS: tuple[str, ...] = (
    "ECOMA_K3S_TOKEN",
    "ECOMA_K3S_AGENT_TOKEN",
    "ECOMA_TAILSCALE_AUTH_KEYS",
)
#: Secret stack outputs and the variable each one becomes.
SECRET_STACK_OUTPUTS: dict[str, str] = {
    "k3s_token": "ECOMA_K3S_TOKEN",
    "k3s_agent_token": "ECOMA_K3S_AGENT_TOKEN",
    "tailscale_auth_keys": "ECOMA_TAILSCALE_AUTH_KEYS",
}
INVENTORY_OUTPUT = "ansible_inventory"

#: Variables of the caller that Ansible may see. Everything else of `os.environ` is dropped.
PASSTHROUGH_ENV: tuple[str, ...] = (
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "SSH_AUTH_SOCK",
)

REDACTED = "<redacted>"
# Shorter values would mask ordinary words; a real token is never this short.
_MIN_SECRET_LENGTH = 4
_SECRET_PATTERNS = (
    re.compile(r"K10[0-9a-fA-F]{16,}::[^\s'\",}]+"),  # k3s secure token
    re.compile(r"tskey-[A-Za-z0-9_-]+"),  # Tailscale auth key
)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RUN_IDENT = "run"
_MAX_MESSAGE = 2000


class Redactor:
    """Masks secret values in any text before it is printed or kept in a result.

    A JSON secret (the Tailscale keys map) is masked whole and leaf by leaf, because a task may
    show one node's key on its own."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            values.add(secret)
            values.update(_json_leaves(secret))
        # Longest first, so a value that contains another is masked whole.
        self._values = sorted(
            (v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def found_in(self, text: str) -> bool:
        return any(value in text for value in self._values)


def _json_leaves(text: str) -> list[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return []
    leaves: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            leaves.append(node)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return leaves


@dataclass
class HostCounts:
    """Ansible's recap for one host. As in Ansible's own recap, `ok` includes `changed`."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    msg: str
    unreachable: bool = False


@dataclass(frozen=True)
class RunResult:
    """What a run did. Every text in it has already been redacted."""

    rc: int
    status: str
    hosts: dict[str, HostCounts]
    failures: list[TaskFailure] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.failed)

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.unreachable)

    @property
    def success(self) -> bool:
        return (
            self.rc == 0
            and self.status == "successful"
            and bool(self.hosts)
            and not self.failed_hosts
            and not self.unreachable_hosts
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rc": self.rc,
            "status": self.status,
            "hosts": {name: asdict(counts) for name, counts in sorted(self.hosts.items())},
            "failures": [asdict(failure) for failure in self.failures],
            "messages": list(self.messages),
        }


# --- inputs: inventory files, stack outputs, the caller's environment -----------------------


def inventory_from_document(document: object, source: str) -> dict[str, Any]:
    """The inventory inside a JSON document: a bare inventory (`{"all": ...}`), a preview or
    Automation API document (`{"outputs": {"ansible_inventory": ...}}`), or `pulumi stack output
    --json` (`{"ansible_inventory": ...}`). `source` names the file or stack in errors."""
    inventory: object = document
    if isinstance(document, dict):
        outputs = document.get("outputs")
        if isinstance(outputs, dict) and INVENTORY_OUTPUT in outputs:
            inventory = outputs[INVENTORY_OUTPUT]
        elif INVENTORY_OUTPUT in document:
            inventory = document[INVENTORY_OUTPUT]
    if isinstance(inventory, str):  # an output exported as a JSON string
        try:
            inventory = json.loads(inventory)
        except ValueError as error:
            raise UsageError(f"{source}: `{INVENTORY_OUTPUT}` is not valid JSON: {error}") from None
    if not isinstance(inventory, dict) or not isinstance(inventory.get("all"), dict):
        raise UsageError(
            f"{source}: no inventory found: expected an Ansible inventory object "
            f'{{"all": {{...}}}}, or a document with `outputs.{INVENTORY_OUTPUT}` '
            f"(preview JSON) or `{INVENTORY_OUTPUT}` (pulumi stack output --json)"
        )
    return inventory


def load_inventory_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: cannot read the inventory file: {error.strerror}") from None
    try:
        document = json.loads(text)
    except ValueError as error:
        raise UsageError(f"{path}: not valid JSON: {error}") from None
    return inventory_from_document(document, str(path))


def read_stack_outputs(stack_name: str, work_dir: Path) -> dict[str, Any]:
    """The stack's outputs, secrets in plain text, through the Pulumi Automation API (the
    `adapters.AutomationStack` seam); it needs the Pulumi CLI and a logged-in backend."""
    try:
        return AutomationStack(stack_name, work_dir).outputs()
    except EcomaError as error:
        raise EcomaError(f"{error}; or pass the inventory with --inventory FILE") from None


def secrets_from_outputs(outputs: Mapping[str, Any]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for output, variable in SECRET_STACK_OUTPUTS.items():
        value = outputs.get(output)
        if value is None or value == "":
            continue
        secrets[variable] = value if isinstance(value, str) else json.dumps(value)
    return secrets


def secrets_from_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in SECRET_ENV_VARS if environ.get(name)}


# --- the run ---------------------------------------------------------------------------------


def run_playbook(
    inventory: Mapping[str, Any],
    playbook: Path,
    *,
    secrets: Mapping[str, str] | None = None,
    limit: str | None = None,
    tags: list[str] | None = None,
    skip_tags: list[str] | None = None,
    check: bool = False,
    diff: bool = False,
    verbosity: int = 0,
    extravars: Mapping[str, Any] | None = None,
    output: OutputMode = "progress",
    stream: TextIO | None = None,
) -> RunResult:
    """Run `playbook` against `inventory` and report progress on `stream` (default stdout).

    `secrets` are environment variables handed only to the Ansible process. The project dir is
    the playbook's directory, so its `ansible.cfg` and `roles/` apply. Ctrl-C cancels Ansible
    and raises `KeyboardInterrupt` once the private dir is gone."""
    playbook = playbook.resolve()
    if not playbook.is_file():
        raise UsageError(f"{playbook}: playbook not found (pass --playbook FILE)")
    if output not in ("progress", "json", "quiet"):
        raise UsageError(f"output must be progress, json or quiet, not {output!r}")
    secrets = {name: value for name, value in (secrets or {}).items() if value}
    _check_secret_names(secrets)
    redact = Redactor(secrets.values())
    _refuse_secrets_in("inventory", inventory, redact)
    _refuse_secrets_in("extravars", extravars, redact)
    _refuse_secrets_in("--limit/--tags/--skip-tags", [limit, tags, skip_tags], redact)

    out = stream if stream is not None else sys.stdout
    display = _make_display(output, out, redact, verbosity)
    tracker = _EventTracker(display, redact)

    private_dir = Path(tempfile.mkdtemp(prefix="ecoma-configure-"))
    try:
        private_dir.chmod(0o700)
        env = _job_environment(secrets, private_dir)
        with _cancel_on_interrupt() as cancel:
            runner = _prepare_runner(
                private_dir=private_dir,
                playbook=playbook,
                inventory=dict(inventory),
                env=env,
                limit=limit,
                tags=tags,
                skip_tags=skip_tags,
                check=check,
                diff=diff,
                verbosity=verbosity,
                extravars=dict(extravars) if extravars else None,
                event_handler=tracker.handle,
                cancel=cancel,
            )
            with _command_file_kept_off_disk(Path(runner.config.artifact_dir)):
                runner.run()
        result = tracker.result(
            rc=int(runner.rc if runner.rc is not None else 1), status=str(runner.status)
        )
    finally:
        _remove_private_dir(private_dir)

    display.finish(result)
    if result.status == "canceled" or cancel.is_set():  # Ctrl-C, even one after Ansible ended
        raise KeyboardInterrupt
    return result


def _check_secret_names(secrets: Mapping[str, str]) -> None:
    for name in secrets:
        if (
            not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name)
            or name in PASSTHROUGH_ENV
            or name in ("PATH",)
            or name.startswith(("ANSIBLE_", "AWX_", "RUNNER_"))
        ):
            raise UsageError(
                f"secret name {name!r}: must be an upper-case variable name that is not PATH, "
                "a passed-through variable or an ANSIBLE_/AWX_/RUNNER_ setting"
            )


def _refuse_secrets_in(what: str, value: object, redact: Redactor) -> None:
    """ansible-runner writes the inventory to disk and puts extravars on the command line."""
    if value is None:
        return
    if redact.found_in(json.dumps(value, default=str)):
        raise EcomaError(
            f"the {what} contains a secret value; secrets reach Ansible only through the "
            "environment (docs/contracts.md, 'Secrets at run time')"
        )


def _job_environment(secrets: Mapping[str, str], private_dir: Path) -> dict[str, str]:
    scripts = sysconfig.get_path("scripts")
    path = os.pathsep.join(p for p in (scripts, os.environ.get("PATH", os.defpath)) if p)
    if shutil.which("ansible-playbook", path=path) is None:
        raise EcomaError(
            f"ansible-playbook not found in {scripts} nor on PATH: install the project "
            "(uv sync) so that the `ansible` package is in this environment"
        )
    local_tmp = private_dir / "tmp"
    local_tmp.mkdir(mode=0o700)
    env = {name: os.environ[name] for name in PASSTHROUGH_ENV if name in os.environ}
    env.update(
        {
            "PATH": path,
            # Ansible's controller-side temp files (module payloads, `copy` content) stay in the
            # private dir, which is removed after the run.
            "ANSIBLE_LOCAL_TEMP": str(local_tmp),
            # ansible-runner turns host key checking off unless told otherwise; Ansible's default
            # (on) stands, as ansible/ansible.cfg wants. The lab turns it off per host through
            # inventory vars, which outrank this variable.
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            # Empty, so that ansible-runner installs only its own callback (no caller's plugins).
            "ANSIBLE_CALLBACK_PLUGINS": "",
            "ANSIBLE_STDOUT_CALLBACK": "",
        }
    )
    env.update(secrets)
    return env


def _prepare_runner(
    *,
    private_dir: Path,
    playbook: Path,
    inventory: dict[str, Any],
    env: dict[str, str],
    limit: str | None,
    tags: list[str] | None,
    skip_tags: list[str] | None,
    check: bool,
    diff: bool,
    verbosity: int,
    extravars: dict[str, Any] | None,
    event_handler: Any,
    cancel: threading.Event,
) -> Any:
    import ansible_runner  # noqa: PLC0415 (late: ~0.1 s that other commands should not pay)

    cmdline = " ".join(flag for flag, wanted in (("--check", check), ("--diff", diff)) if wanted)
    runner = ansible_runner.interface.init_runner(
        private_data_dir=str(private_dir),
        project_dir=str(playbook.parent),
        playbook=str(playbook),
        inventory=inventory,  # written to <private>/inventory/hosts.json: it holds no secret
        envvars=env,
        suppress_env_files=True,
        settings={
            # Given as settings: ansible-runner reads these two from settings, not its kwargs.
            "suppress_output_file": True,
            "suppress_ansible_output": True,
            # How often the run loop checks for Ctrl-C.
            "pexpect_timeout": 1,
        },
        quiet=True,
        # Not "jsonfile": ansible-runner would then force a fact cache on disk over the one that
        # the playbook's ansible.cfg chooses.
        fact_cache_type="ansible.cfg",
        ident=_RUN_IDENT,
        limit=limit or None,
        tags=",".join(tags) if tags else None,
        skip_tags=",".join(skip_tags) if skip_tags else None,
        verbosity=verbosity or None,
        extravars=extravars,
        cmdline=cmdline or None,
        event_handler=event_handler,
        # Our own cancel callback; without one ansible-runner replaces the process's SIGINT and
        # SIGTERM handlers for good.
        cancel_callback=cancel.is_set,
    )
    runner.config.env = _allow_listed(runner.config.env, env)
    return runner


def _allow_listed(job_env: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner seeds the job with a copy of `os.environ`: keep only what we set and what
    ansible-runner itself added or changed (its callback plugin, artifact and cache paths)."""
    return {
        name: value
        for name, value in job_env.items()
        if name in ours or os.environ.get(name) != value
    }


@contextlib.contextmanager
def _cancel_on_interrupt() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM during the run cancel Ansible (ansible-runner kills its process group);
    the previous handlers come back afterwards."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield cancel
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _command_file_kept_off_disk(artifact_dir: Path) -> Iterator[None]:
    """ansible-runner writes `<artifact_dir>/command` as JSON holding the job's environment,
    secrets included. A FIFO at that path with a thread draining it means the bytes only ever
    pass through a pipe."""
    path = artifact_dir / "command"
    os.mkfifo(path, 0o600)

    def drain() -> None:
        with path.open("rb") as fifo:  # blocks until ansible-runner opens the write end
            while fifo.read(65536):
                pass

    thread = threading.Thread(target=drain, name="ecoma-configure-drain", daemon=True)
    thread.start()
    try:
        yield
    finally:
        # If ansible-runner failed before writing, wake the reader with an empty writer.
        deadline = time.monotonic() + 5
        while thread.is_alive() and time.monotonic() < deadline:
            # ENXIO: the reader is not in open() yet, or already done.
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(timeout=0.05)


def _remove_private_dir(private_dir: Path) -> None:
    shutil.rmtree(private_dir, ignore_errors=True)
    if private_dir.exists():
        print(
            f"ecoma-infra: warning: could not remove {private_dir}; it may hold job output: "
            "remove it by hand",
            file=sys.stderr,
        )


# --- events -----------------------------------------------------------------------------------


@dataclass
class _HostState:
    counts: HostCounts = field(default_factory=HostCounts)
    task: str = ""


class _Display(Protocol):
    def play(self, name: str) -> None: ...
    def host_task(self, tracker: _EventTracker, host: str) -> None: ...
    def host_result(
        self, tracker: _EventTracker, host: str, task: str, status: str, msg: str
    ) -> None: ...
    def ansible_output(self, text: str) -> None: ...
    def finish(self, result: RunResult) -> None: ...


class _EventTracker:
    """Turns ansible-runner events into per-host state, failures and the final result."""

    def __init__(self, display: _Display, redact: Redactor) -> None:
        self.display = display
        self.redact = redact
        self.hosts: dict[str, _HostState] = {}
        self.failures: list[TaskFailure] = []
        self.messages: deque[str] = deque(maxlen=40)
        self.stats: dict[str, Any] | None = None

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event_handler. Returns True: returning None would drop the event."""
        try:
            self._handle(event)
        except Exception as error:  # a display bug must not abort a half-done run
            self.messages.append(f"ecoma-infra: could not handle an event: {error!r}")
        return True

    def _handle(self, event: dict[str, Any]) -> None:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        stdout = str(event.get("stdout") or "")
        if stdout:
            self.display.ansible_output(stdout)
        host = str(data.get("host") or "")
        task = self.redact(str(data.get("task") or ""))
        raw_res = data.get("res")
        res: dict[str, Any] = raw_res if isinstance(raw_res, dict) else {}
        if kind.startswith("runner_on_") and host:
            self._host_event(kind, host, task, res, ignore_errors=bool(data.get("ignore_errors")))
        elif kind == "playbook_on_play_start":
            self.display.play(self.redact(str(data.get("play") or "")))
        elif kind == "playbook_on_no_hosts_matched":
            self.messages.append("a play matched no hosts (check the inventory and --limit)")
        elif kind == "playbook_on_stats":
            self.stats = data
        elif kind in ("verbose", "warning", "error", "deprecated") and stdout:
            for line in _plain(stdout).splitlines():
                if line.strip():
                    self.messages.append(self.redact(line.rstrip())[:_MAX_MESSAGE])

    def _host_event(
        self, kind: str, host: str, task: str, res: dict[str, Any], *, ignore_errors: bool
    ) -> None:
        state = self._host(host)
        counts = state.counts
        if kind == "runner_on_start":
            state.task = task
            self.display.host_task(self, host)
            return
        status, msg = "", ""
        if kind == "runner_on_ok":
            counts.ok += 1
            counts.changed += bool(res.get("changed"))
            status = "changed" if res.get("changed") else "ok"
        elif kind == "runner_on_skipped":
            counts.skipped += 1
            status = "skipped"
        elif kind == "runner_on_failed" and ignore_errors:
            counts.ok += 1  # as Ansible counts an ignored failure
            counts.ignored += 1
            status, msg = "ignored", self._message(res)
        elif kind in ("runner_on_failed", "runner_on_unreachable"):
            unreachable = kind == "runner_on_unreachable"
            counts.unreachable += unreachable
            counts.failed += not unreachable
            status = "unreachable" if unreachable else "failed"
            msg = self._message(res)
            self.failures.append(TaskFailure(host, task, msg, unreachable=unreachable))
        if status:
            self.display.host_result(self, host, task, status, msg)

    def _host(self, name: str) -> _HostState:
        return self.hosts.setdefault(name, _HostState())

    def _message(self, res: Mapping[str, Any]) -> str:
        parts: list[str] = []
        if res.get("censored"):
            parts.append(str(res["censored"]))
        if res.get("msg"):
            parts.append(str(res["msg"]))
        for key in ("stderr", "module_stderr"):
            text = str(res.get(key) or "").strip()
            if text and text not in parts:
                parts.append(text)
        for item in res.get("results") or []:
            if isinstance(item, dict) and item.get("failed") and len(parts) < 4:
                label = item.get("_ansible_item_label", item.get("item", ""))
                parts.append(f"item {label}: {self._message(item)}")
        return self.redact("; ".join(parts) or "failed")[:_MAX_MESSAGE]

    def result(self, *, rc: int, status: str) -> RunResult:
        hosts = {name: state.counts for name, state in self.hosts.items()}
        if self.stats is not None:  # Ansible's own recap is authoritative
            keys = {
                "ok": "ok",
                "changed": "changed",
                "failures": "failed",
                "dark": "unreachable",
                "skipped": "skipped",
                "rescued": "rescued",
                "ignored": "ignored",
            }
            names: set[str] = set(self.stats.get("processed") or {})
            for stat in keys:
                names.update(self.stats.get(stat) or {})
            hosts = {
                name: HostCounts(
                    **{
                        field_name: int((self.stats.get(stat) or {}).get(name, 0))
                        for stat, field_name in keys.items()
                    }
                )
                for name in names
            }
        messages = list(self.messages)
        if not hosts:
            messages.append("no host was targeted: check the inventory, the plays' hosts, --limit")
        return RunResult(
            rc=rc, status=status, hosts=hosts, failures=list(self.failures), messages=messages
        )


def _plain(text: str) -> str:
    return _ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "")


# --- displays ---------------------------------------------------------------------------------


class _Writer:
    """The one door to the stream: everything printed is redacted here."""

    def __init__(self, stream: TextIO, redact: Redactor) -> None:
        self.stream = stream
        self.redact = redact

    def write(self, text: str) -> None:
        self.stream.write(self.redact(text))
        self.stream.flush()


class _QuietDisplay:
    def play(self, name: str) -> None:
        pass

    def host_task(self, tracker: _EventTracker, host: str) -> None:
        pass

    def host_result(
        self, tracker: _EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        pass

    def ansible_output(self, text: str) -> None:
        pass

    def finish(self, result: RunResult) -> None:
        pass


class _JsonDisplay(_QuietDisplay):
    """One JSON object per line: a `result` per host and task, then a `summary`."""

    def __init__(self, writer: _Writer) -> None:
        self.writer = writer

    def host_result(
        self, tracker: _EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        record = {"type": "result", "host": host, "task": task, "status": status}
        if msg:
            record["msg"] = msg
        self._emit(record)

    def finish(self, result: RunResult) -> None:
        self._emit({"type": "summary", **result.to_dict()})

    def _emit(self, record: dict[str, Any]) -> None:
        self.writer.write(json.dumps(record, sort_keys=False) + "\n")


_STATUS_LABEL = {
    "ok": "ok",
    "changed": "changed",
    "skipped": "skipped",
    "ignored": "ignored",
    "failed": "FAILED",
    "unreachable": "UNREACHABLE",
}
_COLUMNS = ("ok", "changed", "failed", "unreachable", "skipped")


class _ProgressDisplay(_QuietDisplay):
    """A live per-host block redrawn in place on a terminal; a line per event otherwise.
    With -v, Ansible's own output is shown instead of the per-event lines."""

    def __init__(self, writer: _Writer, *, tty: bool, verbosity: int) -> None:
        self.writer = writer
        self.verbose = verbosity > 0
        self.live = tty and not self.verbose
        self.color = tty
        self.play_name = ""
        self.drawn_lines = 0
        self.last_draw = 0.0
        self.tracker: _EventTracker | None = None

    def play(self, name: str) -> None:
        self.play_name = name
        if not self.live and not self.verbose:
            self.writer.write(f"PLAY {name}\n")

    def host_task(self, tracker: _EventTracker, host: str) -> None:
        self.tracker = tracker
        if self.live:
            self._redraw()

    def host_result(
        self, tracker: _EventTracker, host: str, task: str, status: str, msg: str
    ) -> None:
        self.tracker = tracker
        line = f"{_STATUS_LABEL[status]:<12} {host}  {task}"
        if msg and status in ("failed", "unreachable"):
            line += f": {msg}"
        if self.live:
            if status in ("failed", "unreachable"):  # keep failures on screen above the block
                self._clear()
                self.writer.write(line + "\n")
            self._redraw(force=status in ("failed", "unreachable"))
        elif not self.verbose:
            self.writer.write(line + "\n")

    def ansible_output(self, text: str) -> None:
        if self.verbose:
            self.writer.write((text if self.color else _plain(text)) + "\n")

    def finish(self, result: RunResult) -> None:
        if self.live:
            self._clear()
        self.writer.write(_summary_text(result))

    def _clear(self) -> None:
        if self.drawn_lines:
            self.writer.write(f"\x1b[{self.drawn_lines}F\x1b[J")
            self.drawn_lines = 0

    def _redraw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if self.tracker is None or (not force and now - self.last_draw < 0.1):
            return
        self.last_draw = now
        width = max(shutil.get_terminal_size().columns - 1, 20)
        hosts = sorted(self.tracker.hosts.items())
        name_width = max(len(name) for name, _ in hosts) if hosts else 0
        lines = [f"PLAY {self.play_name}"]
        for name, state in hosts:
            c = state.counts
            # Compact counts, so that the current task still fits on an 80-column terminal.
            lines.append(
                f"  {name:<{name_width}}  ok={c.ok} chg={c.changed} fail={c.failed} "
                f"unr={c.unreachable} skip={c.skipped}  {state.task}"
            )
        self._clear()
        self.writer.write("".join(line[:width] + "\n" for line in lines))
        self.drawn_lines = len(lines)


def _summary_text(result: RunResult) -> str:
    rows = [("HOST", *(column.upper() for column in _COLUMNS))]
    rows += [
        (name, *(str(getattr(counts, column)) for column in _COLUMNS))
        for name, counts in sorted(result.hosts.items())
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["", "SUMMARY"]
    lines += [
        "  "
        + "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    if result.failures:
        lines.append("FAILURES")
        for failure in result.failures:
            kind = "unreachable" if failure.unreachable else "failed"
            lines.append(f"  {failure.host} | {failure.task} | {kind}: {failure.msg}")
    if not result.success and result.messages and not result.failures:
        lines.append("ANSIBLE SAID")
        lines += [f"  {message}" for message in result.messages]
    verdict = "succeeded" if result.success else "FAILED"
    lines.append(f"configure {verdict} (rc={result.rc}, status={result.status})")
    return "\n".join(lines) + "\n"


def _make_display(output: OutputMode, stream: TextIO, redact: Redactor, verbosity: int) -> _Display:
    writer = _Writer(stream, redact)
    if output == "json":
        return _JsonDisplay(writer)
    if output == "quiet":
        return _QuietDisplay()
    isatty = getattr(stream, "isatty", None)
    return _ProgressDisplay(writer, tty=bool(isatty and isatty()), verbosity=verbosity)
