"""Names the program derives from the config, in one place so every part agrees on them."""

from __future__ import annotations


def burst_node_names(provider: str, count: int) -> list[str]:
    """`wkr-aws-1` .. `wkr-aws-<count>`: a burst node's hostname, Tailscale and k8s node name."""
    return [f"wkr-{provider}-{index}" for index in range(1, count + 1)]
