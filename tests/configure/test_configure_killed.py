"""`configure` stopped from outside, as an operator or a CI runner does it: SIGTERM or SIGHUP
cancel Ansible and remove the private dir before the process ends; `kill -9` cannot be caught,
but the playbook dies with it (its leash) and the next run removes the dir it left. A secret scan
after each case finds the k3s token nowhere on disk. Real ansible-runner runs on localhost."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecoma_infra.configure import leash
from ecoma_infra.configure.run import PRIVATE_DIR_PREFIX, _stop_leashes, remove_stale_private_dirs

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]

# Runs run_playbook in a process of its own, as the CLI would, with TMPDIR pointing at the test.
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ecoma_infra.configure.run import run_playbook
from pathlib import Path
inventory, playbook, extravars = json.loads(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
try:
    result = run_playbook(inventory, playbook, secrets={"ECOMA_K3S_TOKEN": sys.argv[5]},
                          extravars=extravars, output="quiet")
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0 if result.success else 1)
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, object]]:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    sleep = f"{40 + secrets.randbelow(1000) / 1000:.3f}"  # a unique mark to find the process by
    setup: dict[str, object] = {
        "tmp": tmp,
        "remote": tmp_path / "remote",
        "marker": tmp_path / "private-dir.txt",
        "token": f"K10{secrets.token_hex(16)}::server:{secrets.token_hex(16)}",
        "sleep": sleep,
    }
    yield setup
    for pid in processes_with(f"sleep {sleep}"):  # never leave one behind, whatever failed
        os.kill(pid, signal.SIGKILL)


def start(world: dict[str, object], playbook: str = "slow_secret.yaml") -> subprocess.Popen[str]:
    host = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "ansible_remote_tmp": str(world["remote"]),
    }
    inventory = {"all": {"children": {"ecoma_cpl": {"hosts": {"cpl-1": host}}}}}
    extravars = {"marker_out": str(world["marker"]), "sleep_seconds": world["sleep"]}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ECOMA_"))}
    env["TMPDIR"] = str(world["tmp"])
    argv = [sys.executable, "-c", DRIVER, str(REPO), json.dumps(inventory),
            str(FIXTURES / playbook), json.dumps(extravars), str(world["token"])]  # fmt: skip
    return subprocess.Popen(argv, env=env, text=True, start_new_session=True)


def processes_with(text: str) -> list[int]:
    """Pids whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def running_task(world: dict[str, object]) -> None:
    wait_for(lambda: processes_with(f"sleep {world['sleep']}"), 60, "the task to run")


def files_holding(secret: str, roots: list[Path]) -> list[Path]:
    needle = secret.encode()
    found = []
    for root in roots:
        for path in root.rglob("*") if root.exists() else []:
            try:
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue
    return found


def test_kill_9_takes_the_playbook_along_and_the_next_run_removes_the_dir(
    world: dict[str, object],
) -> None:
    configure = start(world)
    running_task(world)
    private_dir = Path(Path(str(world["marker"])).read_text())
    assert private_dir.parent == world["tmp"]
    assert processes_with(str(private_dir)), "the playbook runs"

    os.kill(configure.pid, signal.SIGKILL)
    configure.wait(timeout=10)

    wait_for(lambda: not processes_with(f"sleep {world['sleep']}"), 10, "the task to die")
    wait_for(lambda: not processes_with(str(private_dir)), 10, "the playbook")
    assert private_dir.is_dir(), "kill -9 leaves the dir: only the next run can remove it"
    assert (
        files_holding(str(world["token"]), [Path(str(world["tmp"])), Path(str(world["remote"]))])
        == []
    )

    world["sleep"] = "0"
    again = start(world)
    assert again.wait(timeout=120) == 0
    assert not private_dir.exists(), "the next run removes the dir of the killed one"
    assert list(Path(str(world["tmp"])).glob(f"{PRIVATE_DIR_PREFIX}*")) == []
    assert (
        files_holding(str(world["token"]), [Path(str(world["tmp"])), Path(str(world["remote"]))])
        == []
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_caught_signal_cancels_ansible_and_removes_the_dir_first(
    world: dict[str, object], signum: int
) -> None:
    configure = start(world)
    running_task(world)
    private_dir = Path(Path(str(world["marker"])).read_text())
    # The run's own processes name its private dir (the inventory's path): tests running at the
    # same time on other workers have theirs.
    assert processes_with(str(private_dir)), "the playbook runs"

    os.kill(configure.pid, signum)

    assert configure.wait(timeout=20) == 130
    assert not private_dir.exists()
    assert processes_with(f"sleep {world['sleep']}") == []
    assert processes_with(str(private_dir)) == []
    assert (
        files_holding(str(world["token"]), [Path(str(world["tmp"])), Path(str(world["remote"]))])
        == []
    )


def test_stale_dirs_are_those_of_gone_or_unknown_old_runs(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / f"{PRIVATE_DIR_PREFIX}{gone.pid}-abc"
    live = tmp_path / f"{PRIVATE_DIR_PREFIX}{os.getpid()}-def"
    reused = tmp_path / f"{PRIVATE_DIR_PREFIX}{os.getpid()}-ghi"  # same pid, another start
    old_unowned = tmp_path / f"{PRIVATE_DIR_PREFIX}old"
    fresh_unowned = tmp_path / f"{PRIVATE_DIR_PREFIX}fresh"
    for path in (dead, live, reused, old_unowned, fresh_unowned):
        (path / "artifacts").mkdir(parents=True)
    (dead / "owner").write_text(f"{gone.pid} 1\n")
    started = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    (live / "owner").write_text(f"{os.getpid()} {started}\n")
    (reused / "owner").write_text(f"{os.getpid()} {int(started) + 1}\n")
    two_hours_ago = time.time() - 7200
    os.utime(old_unowned, (two_hours_ago, two_hours_ago))

    removed = remove_stale_private_dirs(tmp_path)

    assert sorted(removed) == sorted([dead, reused, old_unowned])
    assert live.is_dir()
    assert fresh_unowned.is_dir()


def test_the_leash_finds_its_descendants_and_nothing_without_proc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real tree: this process -> sh -> sleep. Both are found, parents first (other children
    # of this process, left by earlier tests, may be there too: only this tree is checked).
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        below: list[int] = []
        while time.monotonic() < deadline and not below:
            below = leash.descendants(child.pid)
            time.sleep(0.05)
        assert len(below) == 1
        mine = leash.descendants(os.getpid())
        assert child.pid in mine
        assert below[0] in mine
        assert mine.index(child.pid) < mine.index(below[0])
    finally:
        for pid in leash.descendants(child.pid):
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait(timeout=10)
    # Without /proc (not Linux) there is nothing to find, and a cancel still goes on to
    # ansible-runner's own kill instead of failing in its callback.
    monkeypatch.setattr(leash, "Path", lambda _: Path("/nonexistent-proc"))
    assert leash.living_children() == {}
    assert leash.descendants(os.getpid()) == []
    assert _stop_leashes(timeout=0.1) is True
