"""`StackBackend` over the Pulumi Automation API: the real stack, through the Pulumi CLI."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import PreviewSummary, ResourceStep, UpSummary
from ecoma_infra.stack.config_paths import apply_paths

#: Pulumi's step operations (automation.OpType values) as a preview reports them: the three
#: steps of a replacement are one `replace`; same, read and refresh change nothing.
_STEP_OPS = {
    "create": "create",
    "import": "create",
    "update": "update",
    "replace": "replace",
    "create-replacement": "replace",
    "delete-replaced": "replace",
    "import-replacement": "replace",
    "delete": "delete",
}

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
        self._work_dir = work_dir
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

    def preview(
        self,
        values: Mapping[str, Any],
        removals: list[str],
        on_output: Callable[[str], None],
        *,
        policy_packs: tuple[str, ...] = (),
        policy_pack_configs: tuple[str, ...] = (),
    ) -> PreviewSummary:
        """`pulumi preview` with `--config-file`: a copy of the stack file with the changes, in a
        private temporary directory, so the stack file itself is not written. Secure values
        stay as the stack file holds them (encrypted), and so does its secrets provider."""
        steps: dict[str, ResourceStep] = {}

        def on_event(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            metadata = getattr(pre, "metadata", None)
            if metadata is None:
                return
            op = _STEP_OPS.get(str(getattr(metadata.op, "value", metadata.op)))
            if op is None:
                return
            earlier = steps.get(metadata.urn)
            if earlier is None or earlier.op != "replace":
                steps[metadata.urn] = ResourceStep(
                    op, metadata.urn, metadata.type, tuple(metadata.diffs or ())
                )

        with tempfile.TemporaryDirectory(prefix="ecoma-preview-") as directory:
            config_file = Path(directory) / self._stack_file.name
            document = self._stack_document()
            document["config"] = apply_paths(document.get("config") or {}, values, removals)
            config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            result = self._run(
                lambda: self._stack.preview(
                    on_output=on_output,
                    on_event=on_event,
                    color="never",
                    config_file=str(config_file),
                    policy_packs=list(policy_packs) or None,
                    policy_pack_configs=list(policy_pack_configs) or None,
                )
            )
        changes = {
            str(getattr(op, "value", op)): count
            for op, count in (result.change_summary or {}).items()
        }
        return PreviewSummary(changes, list(steps.values()))

    @property
    def _stack_file(self) -> Path:
        return self._work_dir / f"Pulumi.{self.name.rsplit('/', 1)[-1]}.yaml"

    def _stack_document(self) -> dict[str, Any]:
        try:
            document = yaml.safe_load(self._stack_file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise EcomaError(f"{self._stack_file}: cannot be read: {error}") from None
        if not isinstance(document, dict):
            raise EcomaError(f"{self._stack_file}: not a mapping of settings")
        return document

    def up(self, on_output: Callable[[str], None]) -> UpSummary:
        result = self._run(lambda: self._stack.up(on_output=on_output, color="never"))
        changes = dict(result.summary.resource_changes or {})
        return UpSummary(changes, {k: v.value for k, v in result.outputs.items()})

    def outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._run(self._stack.outputs).items()}

    def _run(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._automation.CommandError as error:
            raise EcomaError(f"stack {self.name}: pulumi failed: {error}") from None
