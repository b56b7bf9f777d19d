"""The latency budget of a burst, from `ecoma-infra burst --count N` to the last new node Ready,
per phase, with what of each phase can be measured on this machine (no cloud, no k3s here).

Usage: .venv/bin/python benchmarks/burst_budget.py   (root for the configure figures: the lab)

- plan: the pure scale plan, measured in this process.
- up: `pulumi up` of the grown stack. Here only the program's own part (the offline run of the
  real program, through `burst --offline`); the clouds' create calls are the rest of the budget.
- boot: the instance boots, cloud-init installs Tailscale and joins the tailnet. Not here.
- configure: the playbook on the new nodes only (`--limit`). Measured on lab hosts standing in
  for 3 new nodes, once with 4 hosts in the inventory and once with 50: it must cost the same.
- join: the k3s agent registers and turns Ready (`burst` waits up to 900 s). Not here.
"""

from __future__ import annotations

import copy
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from converge import lab_up_when_free  # noqa: E402  (after the path is set)

from ecoma_infra.burst.plan import StackRef, plan_count  # noqa: E402
from ecoma_infra.configure.run import run_playbook  # noqa: E402
from ecoma_infra.lab import stack as labstack  # noqa: E402
from ecoma_infra.lab.engine import lab_down, lab_inventory_overrides  # noqa: E402
from ecoma_infra.lab.image import ensure_base_image  # noqa: E402
from ecoma_infra.program.inventory import build_inventory, onprem_node_fact  # noqa: E402
from ecoma_infra.stack.load import load_stack_file  # noqa: E402

# Seconds each phase may take for +3 nodes: the targets this benchmark holds the run to.
BUDGET = {"plan": 1, "up": 300, "boot": 180, "configure": 120, "join": 120}
NEW_NODES = 3


def measure_plan() -> float:
    loaded = load_stack_file(ROOT / "Pulumi.prod.yaml")
    ref = StackRef(loaded.config, loaded.source, "prod")
    start = time.perf_counter()
    plan_count(ref, "aws", NEW_NODES, datetime.now(UTC))
    return time.perf_counter() - start


def measure_offline_phases() -> dict[str, float]:
    """`burst --offline`: the real program for `up`, stand-ins for the rest."""
    argv = ["burst", "--offline", "--stack", "prod", "--provider", "aws"]
    # --reset: a rehearsal of its own, from the stack file rather than an earlier rehearsal.
    argv += ["--count", str(NEW_NODES), "--yes", "--reset"]
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ecoma-infra"), *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("phases: "))
    return {name: float(seconds) for name, seconds in re.findall(r"(\w+) ([\d.]+) s", line)}


def _ip(last: int) -> IPv4Address:
    return IPv4Address(f"10.41.1.{last}")


def _configure_new_nodes(inventory_hosts: int) -> float:
    """Converge 3 lab hosts standing in for new nodes, limited to them, with the inventory
    holding `inventory_hosts` hosts in all (the rest unreachable, as they are out of the limit)."""
    config = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    template = next(n for n in config.nodes if n.role == "wkr")
    cpl = next(n for n in config.nodes if n.role == "cpl")
    new = [
        template.model_copy(update={"name": f"wkr-new-{i}", "vm_id": 4400 + i, "ip": _ip(70 + i)})
        for i in range(NEW_NODES)
    ]
    others = [
        template.model_copy(update={"name": f"wkr-old-{i}", "vm_id": 4500 + i, "ip": _ip(100 + i)})
        for i in range(inventory_hosts - NEW_NODES - 1)
    ]
    everyone = config.model_copy(update={"nodes": [cpl, *others, *new]})
    lab_only = config.model_copy(update={"nodes": new})
    facts = [
        onprem_node_fact(n, config.storage, [], config.proxmox.template_boot_interface)
        for n in everyone.nodes
    ]
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "lab"
        state = lab_up_when_free(labstack.lab_spec(lab_only), state_dir)
        try:
            inventory: dict[str, Any] = build_inventory("bench", everyone, facts)
            overrides = lab_inventory_overrides(state)
            for group in inventory["all"]["children"].values():
                for name, hostvars in group["hosts"].items():
                    if name in overrides and hostvars:
                        hostvars.update(copy.deepcopy(overrides[name]))
            inventory["all"]["vars"].update(labstack.LAB_ROLE_VARS)
            start = time.perf_counter()
            result = run_playbook(
                inventory,
                ROOT / "ansible" / "playbook.yaml",
                secrets=labstack.lab_secrets(state),
                limit=",".join(n.name for n in new),
                output="quiet",
                stream=io.StringIO(),
            )
            elapsed = time.perf_counter() - start
        finally:
            lab_down(state_dir)
    if not result.success:
        raise SystemExit(f"configure failed: {result.failures}")
    return elapsed


def print_budget(*, lab: bool) -> None:
    plan = measure_plan()
    phases = measure_offline_phases()
    configure: dict[int, float] = {}
    if lab:
        ensure_base_image()
        configure = {size: _configure_new_nodes(size) for size in (NEW_NODES + 1, 50)}
    print(f"\nburst +{NEW_NODES} nodes: budget per phase, from `burst --count N` to the last Ready")
    print("| phase | budget | measured here | how |")
    print("|---|---|---|---|")
    print(f"| plan | {BUDGET['plan']} s | {plan * 1000:.1f} ms | pure, in process |")
    print(
        f"| up | {BUDGET['up']} s | {phases.get('up', float('nan')):.1f} s, the program's part "
        "| `burst --offline` (the clouds' create calls are not here) |"
    )
    print(f"| boot | {BUDGET['boot']} s | - | no cloud here |")
    if configure:
        small, large = configure[NEW_NODES + 1], configure[50]
        print(
            f"| configure | {BUDGET['configure']} s | {small:.1f} s with {NEW_NODES + 1} hosts "
            f"in the inventory, {large:.1f} s with 50 ({large / small:.2f}x) | lab, `--limit` |"
        )
    else:
        print(f"| configure | {BUDGET['configure']} s | - | needs root (the lab) |")
    print(f"| join | {BUDGET['join']} s | - | no k3s here (`burst` waits up to 900 s) |")
    print(f"| total | {sum(BUDGET.values())} s | | |")


if __name__ == "__main__":
    print_budget(lab=os.geteuid() == 0)
