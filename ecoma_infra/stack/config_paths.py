"""Pulumi config paths (`pulumi config set --path`): `ecoma:burst.aws.expires_at["wkr-aws-1"]`,
`ecoma:proxmox.replacing[0]`.

`apply_paths` applies sets and removals to a copy of a config block, so a change can be checked
against the model before it is written anywhere."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ecoma_infra.errors import EcomaError

_SEGMENT = re.compile(r'\.([A-Za-z0-9_-]+)|\["([^"]+)"\]|\[([0-9]+)\]')


def config_path(path: str) -> tuple[str, list[str | int]]:
    """`ecoma:burst.aws.expires_at["wkr-aws-1"]` -> `ecoma:burst`, [aws, expires_at, wkr-aws-1];
    a list index `[0]` becomes the number 0."""
    match = re.match(r"^([a-z0-9_-]+:[A-Za-z0-9_-]+)", path)
    if match is None:
        raise EcomaError(f"not a config path: {path}")
    rest = path[match.end() :]
    parts: list[str | int] = []
    position = 0
    for segment in _SEGMENT.finditer(rest):
        if segment.start() != position:
            raise EcomaError(f"not a config path: {path}")
        index = segment.group(3)
        parts.append(int(index) if index is not None else segment.group(1) or segment.group(2))
        position = segment.end()
    if position != len(rest):
        raise EcomaError(f"not a config path: {path}")
    return match.group(1), parts


def apply_paths(
    config: Mapping[str, Any],
    values: Mapping[str, Any],
    removals: list[str] = [],  # noqa: B006
) -> dict[str, Any]:
    """A copy of `config` with `values` set and `removals` removed, by path."""
    result: dict[str, Any] = copy.deepcopy(dict(config))
    for path, value in values.items():
        key, parts = config_path(path)
        if not parts:
            result[key] = value
            continue
        node: Any = result.setdefault(key, [] if isinstance(parts[0], int) else {})
        for part, after in zip(parts, [*parts[1:], None], strict=True):
            leaf = value if after is None else ([] if isinstance(after, int) else {})
            node = _step(node, part, leaf, path, replace=after is None)
    for path in removals:
        key, parts = config_path(path)
        if not parts:
            result.pop(key, None)
            continue
        node = result.get(key)
        for part in parts[:-1]:
            node = _get(node, part)
        if isinstance(node, dict):
            node.pop(parts[-1], None)
        elif isinstance(node, list) and isinstance(parts[-1], int) and parts[-1] < len(node):
            del node[parts[-1]]
    return result


def _get(node: Any, part: str | int) -> Any:
    if isinstance(part, int):
        return node[part] if isinstance(node, list) and part < len(node) else None
    return node.get(part) if isinstance(node, dict) else None


def _step(node: Any, part: str | int, leaf: Any, path: str, *, replace: bool) -> Any:
    """The child `part` of `node`, made from `leaf` when missing (or set to it: `replace`)."""
    if isinstance(part, int):
        if not isinstance(node, list) or part > len(node):
            raise EcomaError(f"{path}: index [{part}] does not continue the list")
        if part == len(node):
            node.append(leaf)
        elif replace:
            node[part] = leaf
        return node[part]
    if not isinstance(node, dict):
        raise EcomaError(f"{path}: .{part} of a value that is not a map")
    if replace:
        node[part] = leaf
    return node.setdefault(part, leaf)
