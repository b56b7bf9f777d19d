"""`StackBackend` over the Pulumi Automation API: the real stack, through the Pulumi CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import UpSummary

# --- the Pulumi Automation API ---------------------------------------------------------------


def _config_text(value: Any) -> str:
    """How the Automation API takes a structured value: the CLI parses it with `--path`."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


class AutomationStack:
    """`StackBackend` over the Pulumi Automation API: needs the Pulumi CLI and a backend login.

    Config is set with `path=True` (`pulumi config set --path`), so `ecoma:burst.aws.count`
    changes one number of the structured `ecoma:burst` object and leaves the rest alone."""

    def __init__(self, name: str, work_dir: Path) -> None:
        from pulumi import automation  # noqa: PLC0415  (0.3 s import; only when used)

        self.name = name
        self._automation = automation
        try:
            self._stack = automation.select_stack(stack_name=name, work_dir=str(work_dir))
        except FileNotFoundError:
            raise EcomaError(
                f"--stack {name}: the Pulumi CLI was not found on PATH: install it "
                "(https://www.pulumi.com/docs/install/)"
            ) from None
        except automation.CommandError as error:
            raise EcomaError(f"--stack {name} in {work_dir}: pulumi failed: {error}") from None

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self._stack.get_all_config().items():
            if value.secret:
                result[key] = {"secure": "[secret]"}
                continue
            try:
                result[key] = json.loads(value.value)
            except json.JSONDecodeError:
                result[key] = value.value
        return result

    def set_config(self, values: Mapping[str, Any]) -> None:
        config = {
            key: self._automation.ConfigValue(_config_text(value)) for key, value in values.items()
        }
        self._run(lambda: self._stack.set_all_config(config, path=True))

    def set_secret(self, key: str, value: str) -> None:
        secret = self._automation.ConfigValue(value, secret=True)
        self._run(lambda: self._stack.set_config(key, secret))

    def remove_config(self, paths: list[str]) -> None:
        if paths:
            self._run(lambda: self._stack.remove_all_config(paths, path=True))

    def up(
        self,
        on_output: Callable[[str], None],
        *,
        replace: Sequence[str] = (),
        target: Sequence[str] = (),
    ) -> UpSummary:
        # `target` with `target_dependents`: what depends on a targeted resource (a subnet
        # route on a router's VM, the next VM of the clone chain) is updated with it.
        result = self._run(
            lambda: self._stack.up(
                on_output=on_output,
                color="never",
                replace=list(replace) or None,
                target=list(target) or None,
                target_dependents=True if target else None,
            )
        )
        changes = dict(result.summary.resource_changes or {})
        return UpSummary(changes, {k: v.value for k, v in result.outputs.items()})

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._run(self._stack.outputs).items()}

    def _run(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._automation.CommandError as error:
            raise EcomaError(f"stack {self.name}: pulumi failed: {error}") from None
