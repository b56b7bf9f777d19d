"""Read a stack file and validate it: YAML and shape first (pydantic errors turned into
ConfigIssues that name the field), then every rule of `rules`, all reported at once.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ecoma_infra import yaml_io
from ecoma_infra.errors import UsageError
from ecoma_infra.stack.issues import ConfigError, ConfigIssue
from ecoma_infra.stack.model import (
    NAMESPACE,
    SECRET_KEYS,
    StackConfig,
    required_secrets,
    split_namespace,
)
from ecoma_infra.stack.rules import check_rules


@dataclass(frozen=True)
class LoadedStack:
    config: StackConfig
    source: str
    secrets_present: frozenset[str]
    notices: tuple[str, ...] = ()


# --------------------------------------------------------------------------- loading


def stack_file(stack: str, root: Path) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def load_stack_file(path: Path, *, require_secrets: bool = False) -> LoadedStack:
    """Read and validate a `Pulumi.<stack>.yaml` file."""
    source = path.name if path.parent == Path.cwd() else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such stack file. Fix: give an existing file, or create it "
            f"with `pulumi stack init` and copy Pulumi.staging.yaml as a start"
        ) from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read the stack file: {error.strerror}") from None
    try:
        document = yaml_io.safe_load(text)
    except yaml_io.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(
            source, [ConfigIssue(f"YAML{at}", str(problem), "fix the YAML syntax")]
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict):
        raise ConfigError(
            source,
            [ConfigIssue("config", "no `config:` mapping", "put the ecoma:* keys under `config:`")],
        )
    values, secrets = split_namespace(document["config"])
    issues = [
        ConfigIssue(
            f"{NAMESPACE}:{key}",
            "a secret is stored in plain text",
            f"remove it from the file and run `pulumi config set --secret {NAMESPACE}:{key}`",
        )
        for key, value in secrets.items()
        if not (isinstance(value, dict) and set(value) == {"secure"})
    ]
    config = parse_stack_config(values, source, earlier_issues=issues)
    shared = shared_tailnet_issues(path, config)
    if shared:
        raise ConfigError(source, shared)
    present = frozenset(secrets)
    missing = [key for key in required_secrets(config) if key not in present]
    notices: tuple[str, ...] = ()
    if missing:
        if require_secrets:
            raise ConfigError(
                source,
                [
                    ConfigIssue(
                        f"{NAMESPACE}:{key}",
                        f"secret missing: {SECRET_KEYS[key]}",
                        f"run `pulumi config set --secret {NAMESPACE}:{key} ...`",
                    )
                    for key in missing
                ],
            )
        notices = (
            "secrets `pulumi up` will ask for: " + ", ".join(f"{NAMESPACE}:{k}" for k in missing),
        )
    return LoadedStack(config, source, present, notices)


def parse_stack_config(
    values: Mapping[str, Any], source: str, *, earlier_issues: Sequence[ConfigIssue] = ()
) -> StackConfig:
    """Turn the `ecoma:` values (namespace stripped, no secrets) into a checked `StackConfig`."""
    issues = list(earlier_issues)
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as error:
        issues += [_translate(item, values) for item in error.errors(include_url=False)]
        raise ConfigError(source, issues) from None
    issues += check_rules(config)
    if issues:
        raise ConfigError(source, issues)
    return config


# --------------------------------------------------------------------------- pydantic errors

_PATTERN_HINTS = {
    "name": "lowercase letters, digits and '-', 1-63 characters, starting and ending with a "
    "letter or digit",
    "hypervisor": "the Proxmox node's name: lowercase letters, digits and '-'",
    "hypervisors": "Proxmox node names: lowercase letters, digits and '-'",
    "subnet_routers": "node names: lowercase letters, digits and '-'",
    "ttl": "a positive duration such as 30m, 4h or 1d",
    "key_expiry": "a positive duration such as 30m, 1h or 1d",
    "version": "a k3s release such as v1.31.4+k3s1",
    "endpoint": "the API URL such as https://pve.example.internal:8006/",
    "user": "a Linux user name such as ecoma",
    "authorized_keys": "an OpenSSH public key line such as 'ssh-ed25519 AAAA... you@host'",
    "tags": "a Tailscale tag such as tag:ecoma-cpl",
    "magic_dns_suffix": "the tailnet's MagicDNS suffix such as tail1234.ts.net",
    "project": "a GCP project id",
    "compartment_id": "an OCI compartment OCID (ocid1.compartment....)",
    "zone": "1-8 lowercase letters and digits, starting with a letter",
    "vnet": "1-8 lowercase letters and digits, starting with a letter",
}


# Where one field name means different things in different models.
_MODEL_PATTERN_HINTS = {
    ("AwsImage", "name"): "the exact AMI name, e.g. debian-12-amd64-20250610-2137, without "
    "wildcards (a newer image would replace every running burst node at the next up)",
    ("AwsImage", "owner"): "the 12-digit AWS account that publishes the AMI (Debian: 136693071363)",
    ("ProxmoxSdn", "bridge"): "a bridge name such as vmbr0",
}


def _where(loc: Sequence[int | str], values: Mapping[str, Any]) -> str:
    parts: list[str] = []
    node: Any = values
    for depth, segment in enumerate(loc):
        label: str
        if isinstance(segment, int):
            label = f"[{segment}]"
            item = node[segment] if isinstance(node, list) and segment < len(node) else None
            if depth == 1 and loc[0] == "nodes" and isinstance(item, dict) and "name" in item:
                label = f"[{item['name']}]"
            node = item
        else:
            label = f"{NAMESPACE}:{segment}" if depth == 0 else f".{segment}"
            node = node.get(segment) if isinstance(node, dict) else None
        parts.append(label)
    return "".join(parts) or f"{NAMESPACE}:"


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The model class whose field the last element of `loc` would be (for 'allowed fields')."""
    current: Any = StackConfig
    for segment in loc[:-1]:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(segment))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list and isinstance(segment, int):
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """`X | None` -> X; `Annotated[X, ...]` -> X."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = options[0] if len(options) == 1 else annotation
            if len(options) != 1:
                return annotation
        else:
            return annotation


def _translate(error: Mapping[str, Any], values: Mapping[str, Any]) -> ConfigIssue:
    loc = tuple(error["loc"])
    where = _where(loc, values)
    kind = error["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc)
        allowed = ", ".join(model.model_fields) if model else "see `ecoma-infra schema`"
        return ConfigIssue(where, "unknown field", f"remove it or fix its spelling ({allowed})")
    if kind == "missing":
        return ConfigIssue(where, "required field is missing", _fix(error, loc))
    if kind == "string_pattern_mismatch":
        return ConfigIssue(where, f"{error.get('input')!r} is not valid", _fix(error, loc))
    return ConfigIssue(where, str(error["msg"]), _fix(error, loc))


def _fix(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """What would fix a shape error, from its kind and the field's own description."""
    kind = error["type"]
    field = next((str(s) for s in reversed(loc) if isinstance(s, str)), "")
    model = _model_at(loc)
    spec = model.model_fields.get(field) if model else None
    described = f": {spec.description}" if spec and spec.description else ""
    if kind == "missing":
        return f"add it{described} (see `ecoma-infra schema`)"
    if kind == "model_type" and spec is not None:
        inner = _model_at((*loc, "_"))
        fields = ", ".join(inner.model_fields) if inner else "see `ecoma-infra schema`"
        return f"give a mapping with {fields}{described}"
    if kind == "string_pattern_mismatch":
        hint = _MODEL_PATTERN_HINTS.get((model.__name__ if model else "", field)) or (
            _PATTERN_HINTS.get(field, "see `ecoma-infra schema` for the expected form")
        )
        return f"use {hint}"
    if kind == "literal_error":
        return "use one of the listed values"
    if kind.startswith("ip_v4"):
        return (
            "give an address like 10.41.1.20 or a network like 10.41.1.0/24 with no host bits set"
        )
    return "change the value as the message says"


def shared_tailnet_issues(path: Path, config: StackConfig) -> list[ConfigIssue]:
    """One tailnet per stack, across the stack files beside `path`.

    Two stacks in one tailnet would each replace the other's whole policy (`tailscale.Acl`
    "controls a tailnet's entire policy file"), advertise the same SDN subnet (Tailscale treats
    two routers of one subnet as failover for each other, so one site's traffic goes to the
    other), and register the same hostnames (cpl-1, wkr-aws-1, ...), so device look-ups by
    hostname could find the other stack's machine.
    """
    mine = config.tailscale
    issues: list[ConfigIssue] = []
    for other in sorted(path.resolve().parent.glob("Pulumi.*.yaml")):
        if other.resolve() == path.resolve():
            continue
        theirs = _tailscale_block(other)
        for field in ("tailnet", "magic_dns_suffix"):
            value = getattr(mine, field)
            if str(theirs.get(field, "")).strip().lower() == value.strip().lower():
                issues.append(
                    ConfigIssue(
                        f"{NAMESPACE}:tailscale.{field}",
                        f"'{value}' is also the {field} of {other.name}: two stacks in one "
                        "tailnet overwrite each other's policy, advertise the same subnet "
                        "as failover for each other and share hostnames",
                        "give each stack its own tailnet (its own OAuth client and "
                        "magic_dns_suffix)",
                    )
                )
    return issues


def _tailscale_block(path: Path) -> dict[str, Any]:
    """The `ecoma:tailscale` block of another stack file; nothing when it cannot be read (that
    file's own validation reports why)."""
    try:
        document = yaml_io.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml_io.YAMLError):
        return {}
    config = document.get("config") if isinstance(document, dict) else None
    block = config.get(f"{NAMESPACE}:tailscale") if isinstance(config, dict) else None
    return block if isinstance(block, dict) else {}
