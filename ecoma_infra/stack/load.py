"""Read a stack file and validate it: YAML and shape first (pydantic errors turned into
ConfigIssues that name the field), then every rule of `rules`, all reported at once.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ecoma_infra.errors import EcomaError
from ecoma_infra.stack.document import read_stack_document
from ecoma_infra.stack.issues import ConfigError, ConfigIssue
from ecoma_infra.stack.model import (
    MODEL_KEYS,
    NAMESPACE,
    OTHER_NAMESPACES,
    SECRET_KEYS,
    STACK_FILE_KEYS,
    StackConfig,
    required_secrets,
    split_namespace,
)
from ecoma_infra.stack.rules import check_rules
from ecoma_infra.stack.secret_shapes import (
    plain_secrets,
    secret_field_name,
    secret_key_name,
    secret_kind,
)

CONFIG_NAMESPACES = (NAMESPACE, *OTHER_NAMESPACES)
_ECOMA_KEYS = frozenset((*MODEL_KEYS, *SECRET_KEYS))
_NAMESPACES_SHOWN = ", ".join(f"{namespace}:" for namespace in CONFIG_NAMESPACES)


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
    document = read_stack_document(path, source)
    config, secrets = check_stack_document(document, source)
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


def check_stack_document(document: Any, source: str) -> tuple[StackConfig, dict[str, Any]]:
    """A stack file's parsed YAML -> (the checked config, its `ecoma:` secret values)."""
    if not isinstance(document, dict):
        raise ConfigError(
            source,
            [ConfigIssue("file", "not a mapping", "put the ecoma:* keys under `config:`")],
        )
    issues = [
        ConfigIssue(
            _shown_key(key),
            "unknown top-level key of a stack file",
            f"remove it or fix its spelling (a stack file holds {', '.join(STACK_FILE_KEYS)})",
        )
        for key in document
        if key not in STACK_FILE_KEYS
    ]
    if not isinstance(document.get("config"), dict):
        issues.append(
            ConfigIssue("config", "no `config:` mapping", "put the ecoma:* keys under `config:`")
        )
        raise ConfigError(source, issues)
    values, secrets, block_issues = check_config_block(document["config"])
    config = parse_stack_config(values, source, earlier_issues=[*issues, *block_issues])
    return config, secrets


def check_config_block(
    block: Mapping[Any, Any],
) -> tuple[dict[str, Any], dict[str, Any], list[ConfigIssue]]:
    """The `config:` mapping -> (ecoma model values, ecoma secrets, the issues of its keys).

    Pulumi config keys are `<namespace>:<key>`. This project reads `ecoma:`; Pulumi itself reads
    `pulumi:` and each provider its own namespace (for a default provider). Any other namespace
    is a typo that would be dropped silently (`ecmoa:storage`), and a secret anywhere must be a
    `secure:` value: Pulumi decrypts only those, and a plain one sits in the repository."""
    issues: list[ConfigIssue] = []
    for full_key, value in block.items():
        if not isinstance(full_key, str):
            issues.append(
                ConfigIssue(
                    f"config key {_shown_key(full_key)}",
                    "not a string",
                    "write keys as <namespace>:<key>",
                )
            )
            continue
        namespace, sep, key = full_key.partition(":")
        if not sep or not namespace or not key:
            suggestion = f"`{NAMESPACE}:{full_key}`" if full_key in _ECOMA_KEYS else "it"
            issues.append(
                ConfigIssue(
                    _shown_key(full_key),
                    "a config key without a namespace (Pulumi reads <namespace>:<key>)",
                    f"write {suggestion} with its namespace, e.g. `{NAMESPACE}:<key>`",
                )
            )
            continue
        if namespace not in CONFIG_NAMESPACES:
            close = difflib.get_close_matches(namespace, CONFIG_NAMESPACES, n=1)
            hint = f"did you mean `{close[0]}:{key}`? " if close else ""
            issues.append(
                ConfigIssue(
                    _shown_key(full_key),
                    f"unknown namespace `{namespace}`: nothing reads it, so it would be ignored",
                    f"{hint}the namespaces read are {_NAMESPACES_SHOWN}",
                )
            )
            continue
        if namespace == NAMESPACE:
            if key in SECRET_KEYS:
                issues += _secure_value_issues(full_key, value)
            continue
        if secret_key_name(namespace, key):
            issues += _secure_value_issues(full_key, value)
            continue
        issues += _plain_secret_issues(value, full_key, check_names=True)
    values, secrets = split_namespace(
        {k: v for k, v in block.items() if isinstance(k, str) and k.startswith(f"{NAMESPACE}:")}
    )
    return values, secrets, issues


def _secure_value_issues(full_key: str, value: Any) -> list[ConfigIssue]:
    fix = f"remove it from the file and run `pulumi config set --secret {full_key}`"
    if not (isinstance(value, dict) and set(value) == {"secure"}):
        return [ConfigIssue(full_key, "a secret is stored in plain text", fix)]
    if not isinstance(value["secure"], str) or not value["secure"].strip():
        return [ConfigIssue(full_key, "an empty `secure:` value (no ciphertext)", fix)]
    return []


def _plain_secret_issues(value: Any, where: str, *, check_names: bool) -> list[ConfigIssue]:
    """Strings under `value` shaped like a secret; with `check_names`, also fields named like
    one (`password`, `privateKey`) that are not `secure:`."""
    issues = [
        ConfigIssue(
            at,
            f"looks like {kind} in plain text",
            "remove it; secrets are separate `secure:` keys, set with "
            "`pulumi config set --secret` (see `ecoma-infra schema`)",
        )
        for at, kind in plain_secrets(value, where)
    ]
    if check_names:
        issues += [
            ConfigIssue(
                at,
                "a credential in plain text",
                f"remove it and run `pulumi config set --path --secret '{at}' ...`",
            )
            for at in _plain_secret_fields(value, where)
        ]
    return issues


def _plain_secret_fields(value: Any, where: str) -> Iterator[str]:
    if isinstance(value, dict):
        if set(value) == {"secure"}:
            return
        for key, item in value.items():
            at = f"{where}.{key}"
            if (
                isinstance(key, str)
                and secret_field_name(key)
                and item not in (None, "")
                and not (isinstance(item, dict) and set(item) == {"secure"})
            ):
                yield at
                continue
            yield from _plain_secret_fields(item, at)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _plain_secret_fields(item, f"{where}[{index}]")


def _shown_key(key: Any) -> str:
    text = str(key)
    if secret_kind(text):
        return "a key shaped like a secret"
    return repr(text[:60] + "...") if len(text) > 60 or not text.isprintable() else f"`{text}`"


def parse_stack_config(
    values: Mapping[str, Any],
    source: str,
    *,
    earlier_issues: Sequence[ConfigIssue] = (),
    now: datetime | None = None,
) -> StackConfig:
    """Turn the `ecoma:` values (namespace stripped, no secrets) into a checked `StackConfig`."""
    issues = list(earlier_issues)
    for key, value in values.items():
        issues += _plain_secret_issues(value, f"{NAMESPACE}:{key}", check_names=False)
    issues += _control_character_issues(values)
    try:
        config = StackConfig.model_validate(dict(values))
    except ValidationError as error:
        issues += [_translate(item, values) for item in error.errors(include_url=False)]
        raise ConfigError(source, issues) from None
    issues += check_rules(config, now=now)
    if issues:
        raise ConfigError(source, issues)
    return config


# PromQL may span lines (a YAML block scalar); nothing else of the config may: a newline in a
# value that cloud-init or the k3s config file receives starts a line of its own there.
_MULTILINE_FIELDS = frozenset({"query"})


def _control_character_issues(values: Mapping[str, Any]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []

    def walk(node: Any, where: str, field: str) -> None:
        if isinstance(node, str):
            allowed = "\n\t" if field in _MULTILINE_FIELDS else ""
            bad = sorted({c for c in node if (ord(c) < 32 or ord(c) == 127) and c not in allowed})
            if bad:
                shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
                issues.append(
                    ConfigIssue(
                        where,
                        f"contains control characters ({shown}): a newline here would start "
                        "a line of its own in the files this value is written to",
                        "keep the value on one line",
                    )
                )
        elif isinstance(node, Mapping):
            for key, item in node.items():
                walk(item, f"{where}.{key}", str(key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, f"{where}[{index}]", field)

    for key, value in values.items():
        walk(value, f"{NAMESPACE}:{key}", key)
    return issues


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
    "region": "a region such as eu-central-1 (AWS), europe-west3 (GCP) or eu-frankfurt-1 (OCI)",
    "zone": "one word without spaces, such as eu-central-1a, europe-west3-a or AD-1",
    "instance_type": "one word without spaces, such as m6i.xlarge",
    "image": "one word without spaces",
    "search_domain": "a DNS name such as ecoma.internal (lowercase labels joined by dots)",
    "datastores": "a Proxmox storage id such as local-lvm",
    "snippets_datastore": "a Proxmox storage id such as local",
    "ssh_username": "a Linux user name such as root",
    "role_arn": "an IAM role ARN such as arn:aws:iam::123456789012:role/ecoma-burst",
    "oauth_client_id": "the OAuth client's id (letters, digits, '_' and '-')",
    "tailnet": "the tailnet's name, e.g. example.com or '-'",
    "key_id": "one word without spaces",
    "query": "a PromQL expression",
}


# Where one field name means different things in different models.
_MODEL_PATTERN_HINTS = {
    ("AwsImage", "name"): "the exact AMI name, e.g. debian-12-amd64-20250610-2137, without "
    "wildcards (a newer image would replace every running burst node at the next up)",
    ("AwsImage", "owner"): "the 12-digit AWS account that publishes the AMI (Debian: 136693071363)",
    ("ProxmoxSdn", "bridge"): "a bridge name such as vmbr0",
    ("ProxmoxSdn", "zone"): "1-8 lowercase letters and digits, starting with a letter",
    ("ProxmoxSdn", "vnet"): "1-8 lowercase letters and digits, starting with a letter",
}


_BOUND_FIXES = {
    "less_than_equal": "use a value of at most {le}",
    "less_than": "use a value below {lt}",
    "greater_than_equal": "use a value of at least {ge}",
    "greater_than": "use a value above {gt}",
    "too_short": "give at least {min_length} item(s)",
    "too_long": "give at most {max_length} item(s)",
    "string_too_long": "shorten it to at most {max_length} characters",
}
_TYPE_FIXES = {
    "int_type": "write a whole number without quotes (not true/false, not 2.0)",
    "int_from_float": "write a whole number",
    "float_type": "write a number without quotes",
    "bool_type": "write true or false without quotes",
    "finite_number": "give a finite number (not .nan or .inf)",
    "string_type": "write a text value",
    "value_error": "use a value inside the bound the message names",
    "literal_error": "use one of the listed values",
    "ip_v4": "give an address like 10.41.1.20 or a network like 10.41.1.0/24 with no host bits set",
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
        shown = _shown_input(error.get("input"))
        return ConfigIssue(where, f"{shown} is not valid", _fix(error, loc))
    return ConfigIssue(where, str(error["msg"]).removeprefix("Value error, "), _fix(error, loc))


def _shown_input(value: Any) -> str:
    """The refused value as the message shows it: never a secret, never a page long."""
    text = str(value)
    if secret_kind(text):
        return "the value (not shown: it looks like a secret)"
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _fix(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    """What would fix a shape error, from its kind and the field's own description."""
    kind = error["type"]
    names = [str(s) for s in reversed(loc) if isinstance(s, str)]
    field = names[0] if names else ""
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
        hint = _MODEL_PATTERN_HINTS.get((model.__name__ if model else "", field)) or next(
            (_PATTERN_HINTS[name] for name in names if name in _PATTERN_HINTS),
            "see `ecoma-infra schema` for the expected form",
        )
        return f"use {hint}"
    if kind in _BOUND_FIXES:
        return _BOUND_FIXES[kind].format(**error.get("ctx", {}))
    key = "ip_v4" if kind.startswith("ip_v4") else kind
    return _TYPE_FIXES.get(key, "change the value as the message says")


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
        document = read_stack_document(path, path.name)
    except EcomaError:
        return {}
    config = document.get("config") if isinstance(document, dict) else None
    block = config.get(f"{NAMESPACE}:tailscale") if isinstance(config, dict) else None
    return block if isinstance(block, dict) else {}
