"""Masking of secret values in everything the configure run prints or keeps."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

REDACTED = "<redacted>"
# Shorter values would mask ordinary words; a real token is never this short.
_MIN_SECRET_LENGTH = 4
_SECRET_PATTERNS = (
    re.compile(r"K10[0-9a-fA-F]{16,}::[^\s'\",}]+"),  # k3s secure token
    re.compile(r"tskey-[A-Za-z0-9_-]+"),  # Tailscale auth key
)


class Redactor:
    """Masks secret values in any text before it is printed or kept in a result.

    A JSON secret (the Tailscale keys map) is masked whole and leaf by leaf, because a task may
    show one node's key on its own."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values: set[str] = set()
        for secret in secrets:
            values.add(secret)
            values.update(_json_leaves(secret))
        # Longest first, so a value that contains another is masked whole.
        self._values = sorted(
            (v for v in values if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def found_in(self, text: str) -> bool:
        return any(value in text for value in self._values)


def _json_leaves(text: str) -> list[str]:
    try:
        document = json.loads(text)
    except ValueError:
        return []
    leaves: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            leaves.append(node)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    return leaves
