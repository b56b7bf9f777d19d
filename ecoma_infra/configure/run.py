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
  removed after every run, whatever happens: SIGINT, SIGTERM and SIGHUP cancel Ansible and
  clean up first. A run killed outright (`kill -9`) cannot clean up: its dir names its process,
  and the next run removes the dirs of processes that are gone. The fact cache is left to the
  playbook's ansible.cfg instead of ansible-runner's on-disk default.
- `ansible-playbook` runs on a leash (`leash.py`): when `configure` dies, even by `kill -9`, or
  cancels, the playbook, its workers and what they run are killed, every process below it.
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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ecoma_infra.configure import leash
from ecoma_infra.configure.display import OutputMode, make_display
from ecoma_infra.configure.events import EventTracker
from ecoma_infra.configure.redact import Redactor
from ecoma_infra.configure.result import RunResult
from ecoma_infra.errors import EcomaError, UsageError

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

_RUN_IDENT = "run"
PRIVATE_DIR_PREFIX = "ecoma-configure-"
_OWNER_FILE = "owner"
# A private dir of an older version names no owner: it is stale once nothing touched it this long.
_UNOWNED_STALE_SECONDS = 3600.0
_LEASH = Path(__file__).with_name("leash.py")


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
    display = make_display(output, out, redact, verbosity)
    tracker = EventTracker(display, redact)

    remove_stale_private_dirs()
    with _cancel_on_signals() as cancel:
        private_dir = _make_private_dir()
        try:
            env = _job_environment(secrets, private_dir)
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
            if cancel.is_set():  # a signal before Ansible started: do not start it
                result = tracker.result(rc=1, status="canceled")
            else:
                with _command_file_kept_off_disk(Path(runner.config.artifact_dir)):
                    runner.run()
                result = tracker.result(
                    rc=int(runner.rc if runner.rc is not None else 1), status=str(runner.status)
                )
        finally:
            _remove_private_dir(private_dir)

    display.finish(result)
    if result.status == "canceled" or cancel.is_set():  # a signal, even one after Ansible ended
        raise KeyboardInterrupt
    return result


def _make_private_dir() -> Path:
    """A fresh 0700 dir named after this process, with an `owner` file saying which process
    (pid and start time, since pids are reused) it belongs to."""
    private_dir = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_DIR_PREFIX}{os.getpid()}-"))
    private_dir.chmod(0o700)
    (private_dir / _OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    return private_dir


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22); empty
    when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the name in parentheses may hold spaces
    return fields[19] if len(fields) > 19 else ""


def _owner_alive(owner: str) -> bool:
    pid_text, _, started = owner.strip().partition(" ")
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return not started or _start_time(pid) in ("", started)


def remove_stale_private_dirs(root: Path | None = None) -> list[Path]:
    """Remove this user's private dirs whose run is gone (killed outright, so it could not clean
    up); dirs of runs still going are left alone. Returns what was removed."""
    root = root or Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = list(root.glob(f"{PRIVATE_DIR_PREFIX}*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            info = path.lstat()
            if not path.is_dir() or path.is_symlink() or info.st_uid != os.getuid():
                continue
            owner_file = path / _OWNER_FILE
            if owner_file.is_file():
                stale = not _owner_alive(owner_file.read_text())
            else:
                stale = time.time() - info.st_mtime > _UNOWNED_STALE_SECONDS
        except OSError:
            continue
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
    return removed


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
        cancel_callback=lambda: _stop_leashes() if cancel.is_set() else False,
    )
    runner.config.env = _allow_listed(runner.config.env, env)
    # On a leash: dies with this process, even with one killed outright (see leash.py).
    runner.config.command = [
        sys.executable,
        "-I",
        str(_LEASH),
        str(os.getpid()),
        "--",
        *runner.config.command,
    ]
    return runner


def _stop_leashes(timeout: float = 10.0) -> bool:
    """Before ansible-runner kills the process group of the playbook it started (on a cancel),
    have the leash kill every process below it: Ansible's workers run in sessions of their own
    (ansible-core 2.19) that the group kill would leave running. True once the leashes are gone
    (ansible-runner's own kill then finds nothing left)."""
    leashes = [
        pid
        for pid in leash.living_children().get(os.getpid(), [])
        if str(_LEASH).encode() in _command_line(pid)
    ]
    for pid in leashes:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        living = set(leash.living_children().get(os.getpid(), []))
        if not living & set(leashes):
            break
        time.sleep(0.05)
    return True


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _allow_listed(job_env: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """ansible-runner seeds the job with a copy of `os.environ`: keep only what we set and what
    ansible-runner itself added or changed (its callback plugin, artifact and cache paths)."""
    return {
        name: value
        for name, value in job_env.items()
        if name in ours or os.environ.get(name) != value
    }


@contextlib.contextmanager
def _cancel_on_signals() -> Iterator[threading.Event]:
    """SIGINT, SIGTERM and SIGHUP while the private dir exists cancel Ansible (ansible-runner
    kills its process group) and let the dir be removed before the run ends; the previous
    handlers come back afterwards."""
    cancel = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield cancel
        return

    def handler(signum: int, frame: object) -> None:
        cancel.set()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, handler) for sig in signals}
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
