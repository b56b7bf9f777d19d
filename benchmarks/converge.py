"""Time the first converge, a full re-run and a re-run of lab hosts (needs root).

Usage: sudo .venv/bin/python benchmarks/converge.py [--hosts 2 6] [--no-pipelining-too]

Each host mirrors a staging node (hot OS disk, warm/cold data disks, swap). The playbook is the
real one, through `ecoma_infra.configure.run.run_playbook`, with the lab's role switches. The
full re-run runs every role again (`converged_full`); the re-run is what a re-converge of
unchanged nodes does (the `converged` role: only verified). With --no-pipelining-too every size
is measured again with `ansible_pipelining: false`, to show what that lever is worth.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecoma_infra.configure.run import run_playbook  # noqa: E402
from ecoma_infra.lab import stack as labstack  # noqa: E402  (after the path is set)
from ecoma_infra.lab.engine import current_lab, lab_down, lab_up  # noqa: E402
from ecoma_infra.lab.image import ensure_base_image  # noqa: E402
from ecoma_infra.stack.load import load_stack_file  # noqa: E402


def sized_config(hosts: int):
    config = load_stack_file(ROOT / "Pulumi.staging.yaml").config
    template = next(n for n in config.nodes if n.name == "sts-1")
    nodes = [
        template.model_copy(
            update={"name": f"sts-{i}", "vm_id": 4300 + i, "ip": f"10.41.1.{30 + i}"}
        )
        for i in range(1, hosts)
    ]
    cpl = next(n for n in config.nodes if n.role == "cpl")
    return config.model_copy(update={"nodes": [cpl, *nodes]})


def lab_up_when_free(spec, state_dir: Path, timeout: float = 1200):
    """`lab_up`, waiting while another run holds the machine's one lab (it is shared)."""
    deadline = time.monotonic() + timeout
    while True:
        while current_lab() is not None and time.monotonic() < deadline:
            time.sleep(3)
        try:
            return lab_up(spec, state_dir)
        except Exception as error:
            if "already up" not in str(error) or time.monotonic() > deadline:
                raise


@contextmanager
def bench_lab(hosts: int) -> Iterator[tuple[dict, object]]:
    """A lab of `hosts` staging-like nodes for the time of the block: its inventory and state."""
    config = sized_config(hosts)
    with tempfile.TemporaryDirectory() as tmp:
        state_dir = Path(tmp) / "lab"
        state = lab_up_when_free(labstack.lab_spec(config), state_dir)
        try:
            yield labstack.lab_inventory("bench", config, state), state
        finally:
            lab_down(state_dir)


def converge(inventory: dict, state, *, full: bool = False) -> tuple[float, int]:
    if full:
        inventory = {**inventory, "all": {**inventory["all"]}}
        inventory["all"]["vars"] = {**inventory["all"]["vars"], "converged_full": True}
    start = time.perf_counter()
    result = run_playbook(
        inventory,
        ROOT / "ansible" / "playbook.yaml",
        secrets=labstack.lab_secrets(state),
        output="quiet",
        stream=io.StringIO(),
    )
    elapsed = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"converge failed: {result.failures}")
    return elapsed, sum(c.changed for c in result.hosts.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[2, 6])
    parser.add_argument("--no-pipelining-too", action="store_true")
    args = parser.parse_args()
    ensure_base_image()
    variants = [("pipelining", True)]
    if args.no_pipelining_too:
        variants.append(("no pipelining", False))
    print(
        f"{'hosts':>5} {'variant':>14} {'first (s)':>10} {'full re-run':>12} {'re-run (s)':>11} "
        f"{'re-run/first':>13} {'changed on re-runs':>19}"
    )
    for hosts in args.hosts:
        for label, pipelining in variants:
            with bench_lab(hosts) as (inventory, state):
                inventory["all"]["vars"]["ansible_pipelining"] = pipelining
                first, _ = converge(inventory, state)
                full, changed_full = converge(inventory, state, full=True)
                again, changed = converge(inventory, state)
            print(
                f"{hosts:>5} {label:>14} {first:>10.1f} {full:>12.1f} {again:>11.1f} "
                f"{again / first:>13.2f} {changed_full + changed:>19}"
            )


if __name__ == "__main__":
    main()
