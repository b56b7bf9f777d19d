"""The command line loads only the command that runs, and a command run from the command line
keeps the garbage collector out of its way (off while it runs, everything frozen at exit)."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ecoma_infra.cli import commands
from ecoma_infra.cli.main import build_parser, command_names, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", command_names())
def test_each_command_module_registers_the_command_of_its_name(name: str) -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    importlib.import_module(f"{commands.__name__}.{name}").register(subparsers)
    assert list(subparsers.choices) == [name]


def test_the_full_parser_knows_every_command() -> None:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert sorted(action.choices) == command_names()


def test_a_mistyped_command_lists_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["previw"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert all(name in error for name in command_names())


_RUN = """
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))
sys.argv = ["ecoma-infra", *sys.argv[1:]]
from ecoma_infra.cli.main import main
code = main()
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pulumi", "ansible_runner", "kubernetes"})
print("code:", code)
print("collector on:", gc.isenabled())
print("heavy:", ",".join(heavy) or "none")
"""


def _run(*argv: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_RUN), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line]
    return dict(lines)


def test_validate_imports_no_sdk_and_runs_without_the_collector() -> None:
    seen = _run("validate", "--stack", "staging")
    assert seen["code"] == "0"
    assert seen["heavy"] == "none"  # not the Pulumi SDK, ansible-runner or kubernetes
    assert seen["collector on"] == "False"
    assert seen["frozen at exit"] == "True"


def test_in_process_callers_keep_their_collector() -> None:
    import gc

    assert gc.isenabled()
    assert main(["validate", "--stack", "staging"]) == 0
    assert gc.isenabled()
