"""Read the stack config from the Pulumi engine, with the same validation as `validate`.

Only `__main__.py` calls this: components receive the validated model, never `pulumi.Config`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import pulumi
from pulumi.runtime import config as runtime_config

from ecoma_infra.stack.issues import ConfigIssue
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import (
    MODEL_KEYS,
    NAMESPACE,
    SECRET_KEYS,
    StackConfig,
    required_secrets,
)


@dataclass(frozen=True)
class Secrets:
    """Secret inputs, each an `Output` marked secret, or None when the stack does not need it."""

    values: dict[str, pulumi.Output[str]]

    def require(self, key: str) -> pulumi.Output[str]:
        return self.values[key]

    def get(self, key: str) -> pulumi.Output[str] | None:
        return self.values.get(key)


def as_secret(value: pulumi.Input[str]) -> pulumi.Output[str]:
    """`Output.secret` with the type the SDK's stubs lose on the way."""
    return pulumi.Output.secret(cast(Any, value))


def _configured_keys() -> set[str]:
    # The engine hands the whole config to the program; the SDK keeps it in this context
    # variable. It lets us reject unknown `ecoma:` keys like `validate` does.
    return {key for key in runtime_config.CONFIG.get() if key.startswith(f"{NAMESPACE}:")}


def read_stack_config() -> tuple[StackConfig, Secrets]:
    source = f"Pulumi.{pulumi.get_stack()}.yaml"
    config = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    for key in MODEL_KEYS:
        raw = config.get(key)
        if raw is not None:
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
    unknown = sorted(
        key.split(":", 1)[1]
        for key in _configured_keys()
        if key.split(":", 1)[1] not in (*MODEL_KEYS, *SECRET_KEYS)
    )
    issues = [
        ConfigIssue(f"{NAMESPACE}:{key}", "unknown config key", "remove it or fix its spelling")
        for key in unknown
    ]
    model = parse_stack_config(values, source, earlier_issues=issues)
    secrets = {key: config.require_secret(key) for key in required_secrets(model)}
    return model, Secrets(secrets)
