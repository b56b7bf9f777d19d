"""Names the program derives from the config, in one place so every part agrees on them."""

from __future__ import annotations

from ecoma_infra.stack.model import burst_node_index, burst_node_name

__all__ = ["burst_node_index", "burst_node_name", "burst_node_names"]


def burst_node_names(provider: str, count: int) -> list[str]:
    """`wkr-aws-1` .. `wkr-aws-<count>`: the names of a pool that has no leases yet."""
    return [burst_node_name(provider, index) for index in range(1, count + 1)]
