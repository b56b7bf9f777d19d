"""Shared pieces of the migration tests: the fixture files and state documents to vary."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROOT = Path(__file__).resolve().parents[2]


def show_json(name: str = "prod-show.json") -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def resources(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every resource entry of a `terraform show -json` document, child modules included."""
    modules = [document["values"]["root_module"]]
    while modules:
        module = modules.pop()
        yield from module.get("resources", [])
        modules += module.get("child_modules", [])


def vm_entry(document: dict[str, Any], node: str) -> dict[str, Any]:
    return next(
        r
        for r in resources(document)
        if r["type"] == "proxmox_virtual_environment_vm" and r.get("index") == node
    )


def varied(
    directory: Path, change: Callable[[dict[str, Any]], None], name: str = "prod-show.json"
) -> Path:
    """A copy of a show-json fixture, changed, written to `directory`."""
    document = copy.deepcopy(show_json(name))
    change(document)
    path = directory / f"varied-{name}"
    path.write_text(json.dumps(document))
    return path
