"""What `upgrade`, `replace` and `snapshot` share on the command line: where the inventory comes
from, the cluster, the playbook runner, and the waits."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.cli import conventions, stack_options
from ecoma_infra.configure import inputs
from ecoma_infra.day2.common import Waits
from ecoma_infra.errors import EcomaError
from ecoma_infra.paths import ansible_dir, project_root
from ecoma_infra.platforms.seams import Cluster


def add_inventory_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    stack_options.add_stack_option(
        source,
        alternatives=("inventory",),
        help_text="the stack: its inventory and secrets from its outputs (default: "
        "$PULUMI_STACK, else the stack selected with `pulumi stack select`)",
    )
    source.add_argument(
        "--inventory",
        metavar="FILE",
        type=Path,
        help="an inventory JSON file instead (as for configure); secrets from the environment",
    )


def add_cluster_options(parser: argparse.ArgumentParser, *, drain: bool = True) -> None:
    conventions.add_cluster_options(
        parser,
        drain=drain,
        ready_help="for a node to be Ready, and etcd healthy, after its change (900)",
    )
    conventions.add_yes_option(parser)


def inventory_and_secrets(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The inventory and the secrets for the playbook, as `configure` reads them."""
    if args.stack:
        outputs = inputs.read_stack_outputs(args.stack, project_root())
        inventory = inputs.inventory_from_document(outputs, f"stack {args.stack}")
        return inventory, {
            **inputs.secrets_from_outputs(outputs),
            **inputs.secrets_from_environment(),
        }
    return inputs.load_inventory_file(args.inventory), inputs.secrets_from_environment()


def cluster(args: argparse.Namespace) -> Cluster:
    from ecoma_infra.platforms.kubernetes import KubernetesCluster  # noqa: PLC0415  (slow import)

    return KubernetesCluster.from_kubeconfig(args.kubeconfig)


def waits(args: argparse.Namespace) -> Waits:
    return Waits(drain=getattr(args, "drain_timeout", 600.0), ready=args.ready_timeout)


def run_playbook(
    playbook: str,
    inventory: dict[str, Any],
    secrets: dict[str, str],
    limit: str,
    extravars: dict[str, Any],
    *,
    verbosity: int = 0,
) -> bool:
    """`ansible/<playbook>` through ansible-runner, with live progress on stdout (with
    `verbosity`, Ansible's own output, which shows what the tasks report)."""
    from ecoma_infra.configure.run import run_playbook as run  # noqa: PLC0415

    result = run(
        inventory,
        ansible_dir() / playbook,
        secrets=secrets,
        limit=limit,
        extravars=extravars,
        output="progress",
        verbosity=verbosity,
        stream=sys.stdout,
    )
    return result.success


def project_name() -> str:
    """The Pulumi project's name (Pulumi.yaml), which every URN of the stack carries."""
    path = project_root() / "Pulumi.yaml"
    try:
        name = (yaml.safe_load(path.read_text()) or {}).get("name")
    except (OSError, yaml.YAMLError) as error:
        raise EcomaError(f"{path}: cannot read the project's name: {error}") from None
    if not isinstance(name, str) or not name:
        raise EcomaError(f"{path}: no `name:`; it is the Pulumi project's name")
    return name


def forget_host_key(address: str) -> None:
    """Drop the old SSH host key of a rebuilt machine from the caller's known_hosts (the new VM
    has new host keys, and ssh refuses a changed one)."""
    known_hosts = Path.home() / ".ssh" / "known_hosts"
    keygen = shutil.which("ssh-keygen")
    if keygen is None or not known_hosts.is_file():
        return
    found = subprocess.run(
        [keygen, "-F", address, "-f", str(known_hosts)], capture_output=True, check=False
    )
    if found.returncode == 0:
        subprocess.run(
            [keygen, "-R", address, "-f", str(known_hosts)], capture_output=True, check=False
        )
        print(f"  removed the old SSH host key of {address} from {known_hosts}")
