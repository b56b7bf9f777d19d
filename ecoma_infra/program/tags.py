"""Cost tags: the same keys and values on every cloud resource, valid under every cloud's rules.

GCP labels are the strictest (lowercase `[a-z0-9_-]`, keys starting with a letter, 63 characters
at most), so every tag is built to satisfy them and is then valid as an AWS tag and an OCI
freeform tag too.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ecoma_infra.errors import EcomaError

COST_TAG_KEYS = ("ecoma-stack", "ecoma-role", "ecoma-burst", "ecoma-expires-at", "managed-by")

_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")


def expiry_tag_value(expires_at: datetime | None) -> str:
    """`2026-11-26T12:00:00Z` -> `20261126t120000z`; `none` for nodes without a lease."""
    if expires_at is None:
        return "none"
    return expires_at.astimezone(UTC).strftime("%Y%m%dt%H%M%Sz")


def cost_tags(
    stack: str, role: str, *, burst: bool, expires_at: datetime | None = None
) -> dict[str, str]:
    tags = {
        "ecoma-stack": stack.lower(),
        "ecoma-role": role,
        "ecoma-burst": "true" if burst else "false",
        "ecoma-expires-at": expiry_tag_value(expires_at),
        "managed-by": "pulumi",
    }
    check_tags(tags)
    return tags


def check_tags(tags: dict[str, str]) -> None:
    for key, value in tags.items():
        if not _KEY.match(key) or not _VALUE.match(value):
            raise EcomaError(
                f"tag {key}={value!r} breaks the cloud label rules (lowercase letters, digits, "
                f"'-' and '_', at most 63 characters); rename the stack or role"
            )
