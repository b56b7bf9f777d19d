"""Read a Terraform state: `terraform show -json` output or a raw `terraform.tfstate` (v4).

Both become one flat list of resource instances. `terraform show -json` (format 1.x) already
lists one entry per instance with its address; a raw v4 file lists one entry per resource block
with its `instances`, so the address is rebuilt the way Terraform prints it. Raw v4 attributes are
whatever schema version the provider last wrote, while `show` upgrades them first: prefer `show`
when Terraform and the providers are at hand.

Deposed objects (left over from a create-before-destroy that failed) are kept apart, and tainted
ones are marked: neither is adopted. Data sources are read-only: listed, never adopted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecoma_infra.errors import EcomaError, UsageError


class StateError(EcomaError):
    """The state file cannot be read; the message names the file and the field."""


@dataclass(frozen=True)
class TfResource:
    address: str
    mode: str  # managed | data
    type: str
    name: str
    index: str | int | None
    provider: str  # the provider's source address, e.g. registry.terraform.io/bpg/proxmox
    values: dict[str, Any]
    tainted: bool = False
    deposed: bool = False

    @property
    def managed(self) -> bool:
        return self.mode == "managed"


@dataclass
class TfState:
    source: str
    format: str  # "show-json" | "tfstate-v4"
    terraform_version: str
    resources: list[TfResource] = field(default_factory=list)


def read_state(path: Path) -> TfState:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{source}: no such file. Fix: give `terraform show -json > state.json` output "
            "or the terraform.tfstate file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{source}: cannot read it: {error}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise StateError(
            f"{source}: not JSON (line {error.lineno}, column {error.colno}: {error.msg}). "
            "Fix: give `terraform show -json` output (not the plain `terraform show` text) "
            "or the terraform.tfstate file"
        ) from None
    if not isinstance(document, dict):
        raise StateError(f"{source}: not a Terraform state (a JSON object was expected)")
    if "format_version" in document:
        return _from_show(source, document)
    if "version" in document:
        return _from_v4(source, document)
    raise StateError(
        f"{source}: neither `terraform show -json` output (no format_version) nor a state file "
        "(no version). Fix: give one of them"
    )


# --------------------------------------------------------------------------- terraform show -json


def _from_show(source: str, document: dict[str, Any]) -> TfState:
    version = str(document.get("format_version"))
    if not version.startswith("1."):
        raise StateError(
            f"{source}: format_version {version!r} is not supported (1.x is). Fix: run "
            "`terraform show -json` with Terraform >= 1.0"
        )
    state = TfState(source, "show-json", str(document.get("terraform_version", "")))
    values = document.get("values")
    if values is None:  # an empty state: `terraform show -json` prints no values at all
        return state
    root = _object(values, source, "values").get("root_module", {})
    _walk_module(_object(root, source, "values.root_module"), source, "values.root_module", state)
    return state


def _walk_module(module: dict[str, Any], source: str, where: str, state: TfState) -> None:
    for index, raw in enumerate(_list(module.get("resources", []), source, f"{where}.resources")):
        here = f"{where}.resources[{index}]"
        entry = _object(raw, source, here)
        address = _string(entry, "address", source, here)
        if entry.get("deposed_key"):
            state.resources.append(_resource(entry, source, here, address, deposed=True))
            continue
        state.resources.append(
            _resource(entry, source, here, address, tainted=bool(entry.get("tainted")))
        )
    children = _list(module.get("child_modules", []), source, f"{where}.child_modules")
    for index, child in enumerate(children):
        here = f"{where}.child_modules[{index}]"
        _walk_module(_object(child, source, here), source, here, state)


def _resource(
    entry: dict[str, Any],
    source: str,
    where: str,
    address: str,
    *,
    tainted: bool = False,
    deposed: bool = False,
) -> TfResource:
    values = entry.get("values", {})
    return TfResource(
        address=address,
        mode=_string(entry, "mode", source, where),
        type=_string(entry, "type", source, where),
        name=_string(entry, "name", source, where),
        index=entry.get("index"),
        provider=str(entry.get("provider_name", "")),
        values=_object(values, source, f"{address}: values"),
        tainted=tainted,
        deposed=deposed,
    )


# --------------------------------------------------------------------------- raw v4

_PROVIDER = re.compile(r'provider\["(?P<source>[^"]+)"\]')


def _from_v4(source: str, document: dict[str, Any]) -> TfState:
    version = document.get("version")
    if version != 4:
        raise StateError(
            f"{source}: state version {version!r} is not supported (4 is, Terraform >= 0.12). "
            "Fix: run `terraform show -json > state.json` with the Terraform that wrote it and "
            "give that file"
        )
    state = TfState(source, "tfstate-v4", str(document.get("terraform_version", "")))
    for index, raw in enumerate(_list(document.get("resources", []), source, "resources")):
        where = f"resources[{index}]"
        entry = _object(raw, source, where)
        mode = _string(entry, "mode", source, where)
        type_ = _string(entry, "type", source, where)
        name = _string(entry, "name", source, where)
        module = entry.get("module")
        provider = _PROVIDER.search(str(entry.get("provider", "")))
        instances = _list(entry.get("instances", []), source, f"{where}.instances")
        for position, raw_instance in enumerate(instances):
            here = f"{where}.instances[{position}]"
            instance = _object(raw_instance, source, here)
            key = instance.get("index_key")
            address = _address(module, mode, type_, name, key)
            if "attributes_flat" in instance and "attributes" not in instance:
                raise StateError(
                    f"{source}: {address}: attributes_flat (a state from Terraform < 0.12). "
                    "Fix: upgrade the state with a current Terraform first"
                )
            state.resources.append(
                TfResource(
                    address=address,
                    mode=mode,
                    type=type_,
                    name=name,
                    index=key,
                    provider=provider.group("source") if provider else "",
                    values=_object(
                        instance.get("attributes", {}), source, f"{address}: attributes"
                    ),
                    tainted=instance.get("status") == "tainted",
                    deposed=bool(instance.get("deposed")),
                )
            )
    return state


def _address(module: Any, mode: str, type_: str, name: str, key: Any) -> str:
    local = f"{'data.' if mode == 'data' else ''}{type_}.{name}"
    if isinstance(key, str):
        local += f'["{key}"]'
    elif isinstance(key, int):
        local += f"[{key}]"
    return f"{module}.{local}" if module else local


# --------------------------------------------------------------------------- shape checks


def _object(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StateError(f"{source}: {where}: an object was expected, not {type(value).__name__}")
    return value


def _list(value: Any, source: str, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise StateError(f"{source}: {where}: a list was expected, not {type(value).__name__}")
    return value


def _string(entry: dict[str, Any], key: str, source: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise StateError(f"{source}: {where}.{key}: missing or not a string")
    return value
