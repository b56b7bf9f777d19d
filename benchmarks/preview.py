"""Time the offline preview of generated stacks (10, 100, 1000 on-prem nodes) and of prod.

Usage: .venv/bin/python benchmarks/preview.py [--sizes 10 100 1000] [--repeat 3]

Each figure is the best of --repeat runs. "cold" runs `ecoma-infra preview --offline --json`
in a fresh process (imports included, as a user sees it); "warm" runs the program again in
one process (the program and SDK alone).
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Network
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ecoma_infra.program.offline import run_offline  # noqa: E402  (after the path is set)


def generated_stack(size: int, directory: Path) -> Path:
    """Prod's settings with `size` on-prem nodes: 3 cpl, then ops/sts/wkr in turn."""
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    config = document["config"]
    config["ecoma:network"]["sdn_subnet"] = "10.41.0.0/20"
    hosts = (
        ip
        for ip in IPv4Network("10.41.0.0/20").hosts()
        if str(ip) not in {"10.41.1.1", "10.41.1.254"}
    )
    template = {n["role"]: n for n in config["ecoma:nodes"]}
    nodes = []
    roles = ["cpl", "cpl", "cpl"] + [("ops", "sts", "wkr")[i % 3] for i in range(size - 3)]
    for index, role in enumerate(roles):
        node = copy.deepcopy(template[role])
        node.update(
            name=f"{role}-{index}",
            vm_id=10000 + index,
            ip=str(next(hosts)),
            hypervisor=("pve1", "pve2", "pve3")[index % 3],
        )
        nodes.append(node)
    config["ecoma:nodes"] = nodes
    config["ecoma:tailscale"]["subnet_routers"] = ["cpl-0", "cpl-1"]
    for pool in ("aws", "gcp", "oci"):
        config["ecoma:burst"][pool]["count"] = 3
    # One directory per stack: stack files side by side must not share a tailnet.
    (directory / f"bench{size}").mkdir(exist_ok=True)
    path = directory / f"bench{size}" / f"Pulumi.bench{size}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def best(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cli = str(ROOT / ".venv" / "bin" / "ecoma-infra")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("prod", ROOT / "Pulumi.prod.yaml")]
        cases += [(f"{n} nodes", generated_stack(n, Path(tmp))) for n in args.sizes]
        print(f"{'stack':>12} {'resources':>10} {'cold (s)':>9} {'warm (s)':>9} {'ms/res':>7}")
        for label, path in cases:
            result = run_offline(path)
            warm = best(args.repeat, lambda p=path: run_offline(p))
            cold = best(
                args.repeat,
                lambda p=path: subprocess.run(
                    [cli, "preview", "--offline", "--json", "--file", str(p)],
                    check=True,
                    capture_output=True,
                ),
            )
            count = len(result.records)
            print(f"{label:>12} {count:>10} {cold:>9.2f} {warm:>9.2f} {1000 * warm / count:>7.2f}")


if __name__ == "__main__":
    main()
