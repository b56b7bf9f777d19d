"""Every figure of the speed table (issue 20), each with its ratio to the floor measured in the
same run, side by side on this machine: whole processes, medians of --repeat runs, a floor run
and a measured run taken in turn so that both see the same load.

Usage: .venv/bin/python benchmarks/table.py [--repeat 3] [--nodes 1000]
           [--converge] [--burst] [--test-command]

The preview rows always run. --converge (root: real lab hosts) times a first converge and a
re-run of the lab; --burst (root) prints the burst latency budget per phase and times the
configure of 3 new nodes with 3 or 50 hosts in the inventory; --test-command runs the whole
test command once (minutes) with the peak memory of each of its steps.

The machine is shared: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python")
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from burst_budget import print_budget  # noqa: E402  (after the path is set)
from converge import bench_lab, converge  # noqa: E402
from preview import generated_stack  # noqa: E402

from ecoma_infra.configure.run import run_playbook  # noqa: E402
from ecoma_infra.lab import stack as labstack  # noqa: E402
from ecoma_infra.lab.image import ensure_base_image  # noqa: E402


@dataclass
class Row:
    work: str
    measured: float
    floor_name: str
    floor: float
    goal: str
    met: bool | None
    unit: str = "s"

    def line(self) -> str:
        ratio = self.measured / self.floor if self.floor else float("nan")
        verdict = {True: "met", False: "NOT met", None: "-"}[self.met]
        return (
            f"| {self.work} | {self.measured:.2f} {self.unit} | {self.floor_name}: "
            f"{self.floor:.2f} {self.unit} | {ratio:.2f}x | {self.goal} | {verdict} |"
        )


def wall(argv: Sequence[str], **kwargs: object) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - start


def medians(repeat: int, *actions: Callable[[], float]) -> list[float]:
    """Each action `repeat` times, in turn (a, b, a, b, ...), and the median of each."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(repeat):
        for index, action in enumerate(actions):
            times[index].append(action())
    return [statistics.median(t) for t in times]


_IMPORT_ONLY = """
import atexit, gc, importlib, sys
gc.disable()  # as the CLI runs
atexit.register(gc.freeze)
from ecoma_infra.program import sdk_loader
sdk_loader.install()
for name in sys.argv[1:]:
    importlib.import_module(name)
"""

_MODULES_OF_PROD = """
import sys
from pathlib import Path
from ecoma_infra.program.offline import run_offline
run_offline(Path("Pulumi.prod.yaml"))
print("\\n".join(sorted(m for m in sys.modules if m.startswith("pulumi"))))
"""


def _provider_modules_of_prod() -> list[str]:
    done = subprocess.run(
        [PYTHON, "-c", _MODULES_OF_PROD], check=True, capture_output=True, text=True, cwd=ROOT
    )
    return done.stdout.split()


def preview_rows(repeat: int, nodes: int) -> list[Row]:
    cli = str(BIN / "ecoma-infra")
    rows = []
    floor, prod = medians(
        repeat,
        lambda: wall([PYTHON, "-c", "import pulumi, pulumi_proxmoxve"]),
        lambda: wall([cli, "preview", "--stack", "prod", "--offline", "--json"]),
    )
    rows.append(
        Row(
            "prod preview (90 resources)",
            prod,
            "`import pulumi, pulumi_proxmoxve`",
            floor,
            "<= 3x the floor, < 1.5 s quiet",
            prod <= 3 * floor,
        )
    )
    modules = _provider_modules_of_prod()
    imports = [PYTHON, "-c", _IMPORT_ONLY, *modules]
    needed, prod = medians(
        repeat,
        lambda: wall(imports),
        lambda: wall([cli, "preview", "--stack", "prod", "--offline", "--json"]),
    )
    rows.append(
        Row(
            "prod preview, against what it must import",
            prod,
            f"importing the {len(modules)} provider modules prod's program uses",
            needed,
            "(reference: the floor that stops it)",
            None,
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        stack = generated_stack(nodes, Path(tmp))
        argv = [cli, "preview", "--offline", "--json", "--file", str(stack)]
        done = subprocess.run(argv, check=True, capture_output=True, cwd=ROOT, text=True)
        count = len(json.loads(done.stdout)["resources"])
        floor_argv = [PYTHON, str(ROOT / "benchmarks" / "floor_program.py"), str(count)]
        floor, big, strict, typed = medians(
            repeat,
            lambda: wall(floor_argv),
            lambda: wall(argv),
            lambda: wall([*floor_argv, "--collector-off"]),
            lambda: wall([*floor_argv, "--collector-off", "--typed"]),
        )
    rows.append(
        Row(
            f"{nodes}-node preview ({count:,} resources)",
            big,
            f"{count:,} trivial resources, same SDK and mocks",
            floor,
            "<= 1.5x that floor",
            big <= 1.5 * floor,
        )
    )
    rows.append(
        Row(
            f"{nodes}-node preview, against the strictest floor",
            big,
            "the same floor with the collector off, as the CLI runs",
            strict,
            "(reference)",
            None,
        )
    )
    rows.append(
        Row(
            f"{nodes}-node preview, against its own resource classes",
            big,
            "as many VmLegacy, FileLegacy, TailnetKey and components, flat, collector off",
            typed,
            "(reference: the floor that stops it)",
            None,
        )
    )
    script, alone = medians(
        repeat,
        lambda: wall([str(ROOT / "scripts" / "preview"), "prod", "--json"]),
        lambda: wall([cli, "preview", "--stack", "prod", "--offline", "--json"]),
    )
    rows.append(
        Row(
            "`scripts/preview prod --json`",
            script,
            "the preview alone",
            alone,
            f"wrapper adds < 0.2 s (adds {script - alone:+.2f} s)",
            script - alone < 0.2,
        )
    )
    return rows


def converge_rows(hosts: int = 2) -> list[Row]:
    ensure_base_image()
    with bench_lab(hosts) as (inventory, state):
        first, _ = converge(inventory, state)
        full, changed_full = converge(inventory, state, full=True)
        again, changed = converge(inventory, state)
        floor = _ansible_floor(inventory, state)
    return [
        Row(
            f"lab re-converge ({hosts} hosts, changed={changed})",
            again,
            "first converge",
            first,
            "<= 0.25x",
            again <= 0.25 * first and changed == 0,
        ),
        Row(
            f"lab full re-run, every role verifying (changed={changed_full})",
            full,
            "first converge",
            first,
            "(reference: the re-run before issue 20)",
            None,
        ),
        Row(
            "lab re-converge, against nothing to do",
            again,
            "one play of one ping per host (Ansible's own start and ssh)",
            floor,
            "(reference)",
            None,
        ),
    ]


_PING = """
- name: Nothing to do
  hosts: all
  gather_facts: false
  tasks:
    - name: Reach the host
      ansible.builtin.ping:
"""


def _ansible_floor(inventory: dict[str, object], state: object) -> float:
    with tempfile.TemporaryDirectory(dir=ROOT / "ansible") as tmp:
        playbook = Path(tmp) / "ping.yaml"
        playbook.write_text(_PING)
        # The project's ansible.cfg applies: the playbook sits beside it.
        (Path(tmp) / "ansible.cfg").write_text((ROOT / "ansible" / "ansible.cfg").read_text())
        start = time.perf_counter()
        result = run_playbook(
            inventory,
            playbook,
            secrets=labstack.lab_secrets(state),  # type: ignore[arg-type]
            output="quiet",
            stream=io.StringIO(),
        )
        elapsed = time.perf_counter() - start
    assert result.success
    return elapsed


def test_command_rows() -> list[Row]:
    """The whole test command once, then the peak memory of mypy on its own."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    tested = subprocess.run(
        [str(ROOT / "scripts" / "test"), "-q"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    whole = time.perf_counter() - start
    (ROOT / ".lab").mkdir(exist_ok=True)
    (ROOT / ".lab" / "test-command.log").write_text(tested.stdout + tested.stderr)
    summary = [
        line for line in tested.stdout.splitlines() if " passed" in line or " failed" in line
    ]
    with tempfile.TemporaryDirectory() as cache:  # a cold run, as on a fresh CI checkout
        done = subprocess.run(
            ["/usr/bin/time", "-v", str(BIN / "mypy"), "--cache-dir", cache],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])  # type: ignore[index]
    return [
        Row(
            f"full test command (exit {tested.returncode}: {' / '.join(summary)})",
            whole / 60,
            "goal",
            15,
            "< 15 min loaded",
            whole < 900 and tested.returncode == 0,
            "min",
        ),
        Row(
            "mypy peak memory (cold cache)",
            peak_kb / 2**20,
            "goal",
            4,
            "< 4 GB",
            peak_kb < 4 * 2**20,
            "GB",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--converge", action="store_true")
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--test-command", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    cores = os.cpu_count()
    print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {cores} cores")
    rows = preview_rows(args.repeat, args.nodes)
    if args.converge:
        rows += converge_rows()
    if args.test_command:
        rows += test_command_rows()
    print("| work | measured | floor in the same run | ratio | goal | |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(row.line())
    if args.burst:
        print_budget(lab=os.geteuid() == 0)
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
