"""From a Terraform codebase's `terraform.tfvars` to a `Pulumi.<stack>.yaml` draft.

The tfvars shape accepted (docs/migration.md has the whole table): a `nodes` map of every VM
(role, provider, hypervisor, vm_id, ip, cores, memory MiB, disks: the first is the OS disk, each
with tier, size GB, datastore and maybe filesystem), and blocks `proxmox`, `sdn`, `ssh`, `burst`
(aws, gcp, oci), `tailscale`, plus `k3s_version`. Every key lands on a key of the stack model, or
is listed as not carried over with what to do: secrets (set with `pulumi config set --secret`),
settings the program decides itself, burst workers (the pool starts at 0). A key that the shape
does not know inside one of these blocks is an error, as in a stack file.

The draft is validated by the same code as `ecoma-infra validate`, and each finding is reported
at the tfvars key and line it came from.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.errors import UsageError
from ecoma_infra.migrate.tfvars import (
    KeyPath,
    Tfvars,
    TfvarsError,
    TfvarsProblem,
    render_path,
)
from ecoma_infra.stack.issues import ConfigError, ConfigIssue
from ecoma_infra.stack.load import LoadedStack, load_stack_file
from ecoma_infra.stack.model import NAMESPACE, ROLES

# tfvars key -> (stack section, key, ...) per block.
PROXMOX_KEYS: dict[str, tuple[str, ...]] = {
    key: ("proxmox", key)
    for key in (
        "endpoint",
        "insecure",
        "hypervisors",
        "template_vm_id",
        "template_node",
        "template_boot_interface",
        "ssh_username",
        "snippets_datastore",
        "clone_parallelism",
        "protect_stateful",
    )
}
SDN_KEYS: dict[str, tuple[str, ...]] = {
    **{key: ("proxmox", "sdn", key) for key in ("zone", "vnet", "kind", "bridge", "tag", "mtu")},
    "peers": ("proxmox", "sdn", "peers"),
    "subnet": ("network", "sdn_subnet"),
    "gateway": ("network", "sdn_gateway"),
    "dns_servers": ("network", "dns_servers"),
    "search_domain": ("network", "search_domain"),
}
SSH_KEYS: dict[str, tuple[str, ...]] = {
    "user": ("ssh", "user"),
    "authorized_keys": ("ssh", "authorized_keys"),
}
TAILSCALE_KEYS: dict[str, tuple[str, ...]] = {
    key: ("tailscale", key)
    for key in (
        "tailnet",
        "magic_dns_suffix",
        "oauth_client_id",
        "tags",
        "subnet_routers",
        "key_expiry",
        "admins",
    )
}
K3S_KEYS: dict[str, tuple[str, ...]] = {
    key: ("k3s", key)
    for key in ("version", "flannel_backend", "node_local_dns", "server_args", "agent_args")
}
NODE_KEYS: dict[str, str] = {
    "role": "role",
    "provider": "provider",
    "hypervisor": "hypervisor",
    "vm_id": "vm_id",
    "ip": "ip",
    "cores": "cpu_cores",
    "memory": "memory_mb",
}
DISK_KEYS = ("tier", "size", "datastore", "filesystem")
POOL_COMMON_KEYS: dict[str, tuple[str, ...]] = {
    key: (key,)
    for key in (
        "max",
        "region",
        "zone",
        "instance_type",
        "ttl",
        "vpc_cidr",
        "subnet_cidr",
        "public_ip",
        "hourly_price_usd",
    )
}
POOL_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "aws": {
        **POOL_COMMON_KEYS,
        "role_arn": ("role_arn",),
        "nat_hourly_price_usd": ("nat_hourly_price_usd",),
        "ami_name": ("image", "name"),
        "ami_owner": ("image", "owner"),
    },
    "gcp": {
        **POOL_COMMON_KEYS,
        "project": ("project",),
        "machine_type": ("instance_type",),
        "image": ("image",),
    },
    "oci": {
        **POOL_COMMON_KEYS,
        "compartment_id": ("compartment_id",),
        "tenancy_ocid": ("tenancy_ocid",),
        "user_ocid": ("user_ocid",),
        "fingerprint": ("fingerprint",),
        "shape": ("instance_type",),
        "image_id": ("image",),
        "availability_domain": ("zone",),
        "ocpus": ("ocpus",),
        "memory_gb": ("memory_gb",),
    },
}
POOL_DISK_KEYS = ("tier", "size", "filesystem")

# Secrets by where they sit in the tfvars: never written, the report says how to set each.
SECRETS: dict[KeyPath, str] = {
    ("proxmox", "api_token"): "proxmox_api_token",
    ("proxmox", "ssh_private_key"): "proxmox_ssh_private_key",
    ("tailscale", "oauth_secret"): "tailscale_oauth_client_secret",
    ("tailscale", "oauth_client_secret"): "tailscale_oauth_client_secret",
    ("tailscale", "api_key"): "tailscale_api_key",
    ("burst", "gcp", "credentials"): "gcp_credentials",
    ("burst", "oci", "private_key"): "oci_private_key",
    ("burst", "aws", "access_key"): "aws_access_key_id",
    ("burst", "aws", "secret_key"): "aws_secret_access_key",
    ("k3s_token",): "k3s_token",
    ("k3s_agent_token",): "k3s_agent_token",
}

# Keys the shape knows that have no place in the stack: what to do instead.
NOT_CARRIED: dict[KeyPath, tuple[str, str]] = {
    ("environment",): (
        "the stack's name comes from the file name (Pulumi.<stack>.yaml)",
        "nothing: `--stack` names it",
    ),
    ("ansible_inventory_file",): (
        "the stack exports the inventory as its `ansible_inventory` output",
        "run `ecoma-infra configure --stack <stack>` instead of pointing Ansible at a file",
    ),
    ("proxmox", "cpu_type"): (
        "the program gives every VM the CPU type x86-64-v2-AES (live migration across hosts)",
        "expect the first `up` to change it and reboot each VM that differs; "
        "`migrate terraform state` lists them",
    ),
    ("burst", "aws", "ami"): (
        "the stack pins the AMI by name and owner (AMI ids differ per region)",
        "look the name up with `aws ec2 describe-images --image-ids <id> "
        "--query 'Images[0].[Name,OwnerId]'` and set ami_name (and ami_owner) in the aws block",
    ),
}

BLOCK_OF_SECTION = {
    "proxmox.sdn": "sdn",
    "network": "sdn",
    "proxmox": "proxmox",
    "ssh": "ssh",
    "nodes": "nodes",
    "burst": "burst",
    "tailscale": "tailscale",
    "k3s": "k3s_version",
}


@dataclass(frozen=True)
class Origin:
    path: KeyPath
    line: int | None


@dataclass(frozen=True)
class Note:
    """A tfvars key that is not carried over: where, why, what to do."""

    path: KeyPath
    line: int | None
    why: str
    todo: str

    def render(self, source: str) -> str:
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {render_path(self.path)}: {self.why}. Do: {self.todo}"


@dataclass(frozen=True)
class Secret:
    key: str
    path: KeyPath
    line: int | None

    def command(self) -> str:
        return f"pulumi config set --secret {NAMESPACE}:{self.key}"


@dataclass
class Draft:
    """A stack config built from a tfvars file, and everything the mapping has to say."""

    source: str
    config: dict[str, Any] = field(default_factory=dict)  # "ecoma:<section>" -> value
    origins: dict[str, Origin] = field(default_factory=dict)  # "ecoma:<where>" -> tfvars key
    notes: list[Note] = field(default_factory=list)
    secrets: list[Secret] = field(default_factory=list)
    problems: list[TfvarsProblem] = field(default_factory=list)


def draft_from_tfvars(tfvars: Tfvars) -> Draft:
    return _Mapper(tfvars).run()


class _Mapper:
    def __init__(self, tfvars: Tfvars) -> None:
        self.tfvars = tfvars
        self.draft = Draft(tfvars.source, problems=list(tfvars.problems))
        self.sections: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ helpers

    def origin(self, where: str, path: KeyPath) -> None:
        self.draft.origins[where] = Origin(path, self.tfvars.line(path))

    def present(self, block: Mapping[str, Any], path: KeyPath, key: str) -> bool:
        """The key is in the tfvars (even when its value was an expression, left out)."""
        return key in block or (*path, key) in self.tfvars.lines

    def put(self, target: tuple[str, ...], value: Any, path: KeyPath) -> None:
        section, *keys = target
        node: dict[str, Any] = self.sections.setdefault(section, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if keys:
            node[keys[-1]] = value
        self.origin(f"{NAMESPACE}:{'.'.join(target)}", path)

    def problem(self, path: KeyPath, message: str, fix: str) -> None:
        self.draft.problems.append(self.tfvars.problem(path, message, fix))

    def note(self, path: KeyPath, why: str, todo: str) -> None:
        self.draft.notes.append(Note(path, self.tfvars.line(path), why, todo))

    def block(self, value: Any, path: KeyPath, what: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.problem(path, f"not a map of {what}", f"write {render_path(path)} = {{ ... }}")
        return None

    def known(self, block: Mapping[str, Any], path: KeyPath, known: set[str]) -> bool:
        """Every key of `block` is in `known` or is a secret or a documented non-carried key."""
        ok = True
        for key in block:
            here = (*path, key)
            if key in known:
                continue
            if here in SECRETS:
                self.secret(here)
            elif here in NOT_CARRIED:
                why, todo = NOT_CARRIED[here]
                self.note(here, why, todo)
            else:
                ok = False
                self.problem(
                    here,
                    "unknown field",
                    f"remove it or fix its spelling (known: {', '.join(sorted(known))})",
                )
        return ok

    def secret(self, path: KeyPath) -> None:
        self.draft.secrets.append(Secret(SECRETS[path], path, self.tfvars.line(path)))

    def copy(
        self, block: Mapping[str, Any], path: KeyPath, mapping: Mapping[str, tuple[str, ...]]
    ) -> None:
        self.known(block, path, set(mapping))
        for key, target in mapping.items():
            if key in block:
                self.put(target, block[key], (*path, key))
            elif self.present(block, path, key):
                self.origin(f"{NAMESPACE}:{'.'.join(target)}", (*path, key))

    # ------------------------------------------------------------------ the blocks

    def run(self) -> Draft:
        values = self.tfvars.values
        handlers = {
            "proxmox": lambda v: self.simple(v, ("proxmox",), PROXMOX_KEYS),
            "sdn": lambda v: self.simple(v, ("sdn",), SDN_KEYS),
            "ssh": lambda v: self.simple(v, ("ssh",), SSH_KEYS),
            "tailscale": lambda v: self.simple(v, ("tailscale",), TAILSCALE_KEYS),
            "k3s": lambda v: self.simple(v, ("k3s",), K3S_KEYS),
            "nodes": self.nodes,
            "burst": self.burst,
        }
        for key, value in values.items():
            if key in handlers:
                handlers[key](value)
            elif key == "k3s_version":
                self.put(("k3s", "version"), value, (key,))
            elif (key,) in SECRETS:
                self.secret((key,))
            elif (key,) in NOT_CARRIED:
                why, todo = NOT_CARRIED[(key,)]
                self.note((key,), why, todo)
            else:
                self.note(
                    (key,),
                    "a variable this migration does not know",
                    "carry it over by hand if the stack needs it (see `ecoma-infra schema`)",
                )
        for section in ("network", "proxmox", "ssh", "nodes", "burst", "tailscale", "k3s"):
            if section in self.sections:
                value = self.sections[section]
                self.draft.config[f"{NAMESPACE}:{section}"] = (
                    value["list"] if section == "nodes" else value
                )
        return self.draft

    def simple(self, value: Any, path: KeyPath, mapping: Mapping[str, tuple[str, ...]]) -> None:
        block = self.block(value, path, "settings")
        if block is not None:
            self.copy(block, path, mapping)

    def nodes(self, value: Any) -> None:
        path: KeyPath = ("nodes",)
        block = self.block(value, path, "nodes by name")
        if block is None:
            return
        self.origin(f"{NAMESPACE}:nodes", path)
        datastores: dict[str, tuple[str, str, KeyPath]] = {}
        hypervisors: set[str] = set()
        found: list[dict[str, Any]] = []
        for name, raw in block.items():
            node_path = (*path, name)
            node = self.block(raw, node_path, "node settings")
            if node is None:
                continue
            self.known(node, node_path, {*NODE_KEYS, "disks"})
            provider = node.get("provider", "proxmox")
            if provider != "proxmox" and node.get("role") == "wkr":
                self.note(
                    node_path,
                    f"a worker on {provider}: cloud workers are burst nodes, not carried over",
                    f"scale them to 0 with Terraform first; the {provider} pool starts at 0 "
                    f"(ecoma:burst.{provider}.count), grow it with `ecoma-infra burst`",
                )
                continue
            where = f"{NAMESPACE}:nodes[{name}]"
            self.origin(where, node_path)
            out: dict[str, Any] = {"name": name}
            for key, target in NODE_KEYS.items():
                if key in node and not (key == "provider" and node[key] == "proxmox"):
                    out[target] = node[key]
                if self.present(node, node_path, key):
                    self.origin(f"{where}.{target}", (*node_path, key))
            if isinstance(node.get("hypervisor"), str) and provider == "proxmox":
                hypervisors.add(node["hypervisor"])
            if "disks" in node:
                self.origin(f"{where}.disks", (*node_path, "disks"))
                out["disks"] = self.node_disks(
                    node["disks"],
                    path=(*node_path, "disks"),
                    where=where,
                    name=name,
                    datastores=datastores,
                    provider=provider,
                )
            found.append(out)
        role_order: dict[str, int] = {role: index for index, role in enumerate(ROLES)}
        found.sort(key=lambda n: (role_order.get(str(n.get("role")), len(ROLES)), n["name"]))
        self.sections["nodes"] = {"list": found}
        proxmox = self.sections.setdefault("proxmox", {})
        if "hypervisors" not in proxmox and hypervisors:
            proxmox["hypervisors"] = sorted(hypervisors)
            self.origin(f"{NAMESPACE}:proxmox.hypervisors", path)
        if datastores:
            proxmox["datastores"] = {tier: found[0] for tier, found in sorted(datastores.items())}
            self.origin(f"{NAMESPACE}:proxmox.datastores", path)

    def node_disks(
        self,
        value: Any,
        *,
        path: KeyPath,
        where: str,
        name: str,
        datastores: dict[str, tuple[str, str, KeyPath]],
        provider: str,
    ) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            self.problem(path, "not a list of disks", "write disks = [{ tier = ..., size = ... }]")
            return []
        disks = []
        for index, raw in enumerate(value):
            disk_path = (*path, index)
            disk = self.block(raw, disk_path, "disk settings")
            if disk is None:
                continue
            self.known(disk, disk_path, set(DISK_KEYS))
            out = self.disk(disk, disk_path, f"{where}.disks[{index}]", os_disk=index == 0)
            disks.append(out)
            datastore, tier = disk.get("datastore"), disk.get("tier")
            if provider != "proxmox" or not isinstance(tier, str):
                continue
            if not isinstance(datastore, str):
                self.problem(
                    disk_path,
                    "no datastore",
                    'add datastore = "<the Proxmox storage that holds this tier\'s disks>"',
                )
            elif tier in datastores and datastores[tier][0] != datastore:
                other, other_node, _ = datastores[tier]
                self.problem(
                    (*disk_path, "datastore"),
                    f"tier {tier} is on {datastore} here but on {other} on node {other_node}; "
                    "the stack has one datastore per tier",
                    "move the disks to one datastore per tier first, or give them other tiers",
                )
            else:
                datastores.setdefault(tier, (datastore, name, disk_path))
        return disks

    def disk(
        self, disk: Mapping[str, Any], path: KeyPath, where: str, *, os_disk: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, target in (("tier", "tier"), ("size", "size_gb"), ("filesystem", "filesystem")):
            if key in disk:
                out[target] = disk[key]
            if self.present(disk, path, key):
                self.origin(f"{where}.{target}", (*path, key))
        if os_disk:
            out["os"] = True  # the first disk of a node is its OS disk (the template's disk)
        self.origin(where, path)
        return out

    def burst(self, value: Any) -> None:
        path: KeyPath = ("burst",)
        block = self.block(value, path, "burst settings")
        if block is None:
            return
        self.known(block, path, {"budget_usd_per_hour", *POOL_KEYS})
        if "budget_usd_per_hour" in block:
            self.put(
                ("burst", "budget_usd_per_hour"),
                block["budget_usd_per_hour"],
                (*path, "budget_usd_per_hour"),
            )
        for provider, mapping in POOL_KEYS.items():
            if provider in block:
                self.pool(provider, mapping, block[provider], (*path, provider))

    def pool(
        self, provider: str, mapping: Mapping[str, tuple[str, ...]], value: Any, path: KeyPath
    ) -> None:
        pool = self.block(value, path, f"{provider} pool settings")
        if pool is None:
            return
        self.known(pool, path, {*mapping, "count", "disks"})
        where = f"{NAMESPACE}:burst.{provider}"
        out: dict[str, Any] = {"count": 0}
        self.origin(where, path)
        count = pool.get("count", 0)
        if count != 0:
            self.note(
                (*path, "count"),
                f"Terraform runs {count} {provider} burst worker(s); they are not carried over",
                "scale them to 0 with Terraform first (count = 0, terraform apply); the pool "
                "starts at 0, grow it with `ecoma-infra burst` after the migration",
            )
        for key, target in mapping.items():
            node = out
            for part in target[:-1]:
                node = node.setdefault(part, {})
            if key in pool:
                node[target[-1]] = pool[key]
            if self.present(pool, path, key):
                self.origin(f"{where}.{'.'.join(target)}", (*path, key))
        if "disks" in pool:
            out["disks"] = self.pool_disks(pool["disks"], (*path, "disks"), where)
        self.sections.setdefault("burst", {})[provider] = out

    def pool_disks(self, value: Any, path: KeyPath, where: str) -> list[dict[str, Any]]:
        if not isinstance(value, list):
            self.problem(path, "not a list of disks", "write disks = [{ tier = ..., size = ... }]")
            return []
        disks = []
        for index, raw in enumerate(value):
            disk = self.block(raw, (*path, index), "disk settings")
            if disk is not None:
                self.known(disk, (*path, index), set(POOL_DISK_KEYS))
                disks.append(
                    self.disk(disk, (*path, index), f"{where}.disks[{index}]", os_disk=index == 0)
                )
        return disks


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class DraftResult:
    path: Path
    loaded: LoadedStack
    draft: Draft


def render_yaml(draft: Draft, *, tfvars_name: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    header = (
        f"# Draft from {tfvars_name} by `ecoma-infra migrate terraform config` ({stamp}).\n"
        "# Review it before any `up`: what was not carried over is in the command's report.\n"
        "# No secret is written here: set each with `pulumi config set --secret ecoma:<key>`.\n"
    )
    body = yaml.safe_dump(
        {"config": draft.config}, sort_keys=False, default_flow_style=None, width=100
    )
    return header + body


def translate(draft: Draft, issues: list[ConfigIssue]) -> list[TfvarsProblem]:
    """Stack-config findings of the draft, each at the tfvars key it came from. A finding about
    a key that already has a tfvars problem (an expression) is dropped: it is the same one."""
    known_bad = {p.path for p in draft.problems}
    found: list[TfvarsProblem] = []
    for issue in issues:
        origin = _origin_of(draft, issue.where)
        if origin is not None and any(origin.path[: len(bad)] == bad for bad in known_bad):
            continue
        if origin is not None and origin.path:
            found.append(
                TfvarsProblem(origin.path, origin.line, issue.message, issue.fix, issue.where)
            )
        else:
            section = issue.where.removeprefix(f"{NAMESPACE}:")
            block = next(
                (b for s, b in BLOCK_OF_SECTION.items() if section.startswith(s)), "a new block"
            )
            found.append(
                TfvarsProblem(
                    (),
                    None,
                    issue.message,
                    f"{issue.fix} (tfvars: `{block}`)",
                    issue.where,
                )
            )
    return found


def _origin_of(draft: Draft, where: str) -> Origin | None:
    best: Origin | None = None
    best_length = -1
    for key, origin in draft.origins.items():
        boundary = where == key or (where.startswith(key) and where[len(key)] in ".[")
        if boundary and len(key) > best_length:
            best, best_length = origin, len(key)
    return best


def write_draft(draft: Draft, target: Path, *, force: bool, tfvars_name: str) -> DraftResult:
    """Validate the draft as `validate` would and write it; nothing is written when it fails."""
    if target.exists() and not force:
        raise UsageError(
            f"{target}: exists already. Fix: give another --out, or --force to replace it"
        )
    if not target.parent.is_dir():
        raise UsageError(
            f"{target.parent}: no such directory. Fix: create it or give another --out"
        )
    problems = list(draft.problems)
    text = render_yaml(draft, tfvars_name=tfvars_name)
    # Validated where it will live: the stack rules compare it with the stack files beside it.
    handle, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".tmp", dir=target.parent
    )
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        loaded: LoadedStack | None = None
        try:
            loaded = load_stack_file(temp)
        except ConfigError as error:
            problems += translate(draft, error.issues)
        if problems or loaded is None:
            raise TfvarsError(draft.source, problems)
        temp.chmod(0o644)
        temp.replace(target)
    finally:
        temp.unlink(missing_ok=True)
    return DraftResult(target, loaded, draft)
