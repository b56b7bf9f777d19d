"""Example stacks for tests: the repo's stack files, optionally changed, written to a temp dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def stack_variant(
    directory: Path, stack: str, change: Callable[[dict[str, Any]], None] | None = None
) -> Path:
    """A copy of `Pulumi.<stack>.yaml` under the same stack name, its `config:` changed."""
    document = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    if change:
        change(document["config"])
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(document))
    return path
