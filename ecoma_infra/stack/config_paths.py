"""Pulumi config paths (`pulumi config set --path`): `ecoma:burst.aws.expires_at["wkr-aws-1"]`.

`apply_paths` applies sets and removals to a copy of a config block, so a change can be checked
against the model before it is written anywhere."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from ecoma_infra.errors import EcomaError

_SEGMENT = re.compile(r'\.([A-Za-z0-9_-]+)|\["([^"]+)"\]')


def config_path(path: str) -> tuple[str, list[str]]:
    """`ecoma:burst.aws.expires_at["wkr-aws-1"]` -> `ecoma:burst`, [aws, expires_at, wkr-aws-1]."""
    match = re.match(r"^([a-z0-9_-]+:[A-Za-z0-9_-]+)", path)
    if match is None:
        raise EcomaError(f"not a config path: {path}")
    rest = path[match.end() :]
    parts: list[str] = []
    position = 0
    for segment in _SEGMENT.finditer(rest):
        if segment.start() != position:
            raise EcomaError(f"not a config path: {path}")
        parts.append(segment.group(1) or segment.group(2))
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
        node = result.setdefault(key, {})
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    for path in removals:
        key, parts = config_path(path)
        if not parts:
            result.pop(key, None)
            continue
        node = result.get(key)
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return result
