"""Stand-in for the Pulumi Automation API (`pulumi_automation.AutomationStack`): a stack file's
config in memory or in a state file; `up` runs the real program under the offline preview's mocks
and diffs its resources against the last run. A simulation, and it says so."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ecoma_infra import yaml_io
from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Journal, UpSummary
from ecoma_infra.stack.config_paths import apply_paths


class SimulatedStack:
    """`StackBackend` over a stack file's config; `up` runs the program offline."""

    def __init__(
        self,
        name: str,
        config: Mapping[str, Any],
        journal: Journal,
        *,
        state_file: Path | None = None,
        on_up: Callable[[list[str], list[str]], None] | None = None,
        fail_up: bool = False,
    ) -> None:
        self.name = name
        self.journal = journal
        self.state_file = state_file
        self.on_up = on_up
        self.fail_up = fail_up
        self._config: dict[str, Any] = json.loads(json.dumps(dict(config)))
        self._urns: list[str] = []
        self._outputs: dict[str, Any] = {}
        if state_file is not None and state_file.exists():
            state = json.loads(state_file.read_text())
            self._config, self._urns = state["config"], state["urns"]
            self._outputs = state.get("outputs", {})

    @classmethod
    def from_file(cls, path: Path, journal: Journal, **kwargs: Any) -> SimulatedStack:
        document = yaml_io.safe_load(path.read_text()) or {}
        name = path.name.split(".")[1]
        return cls(name, document.get("config") or {}, journal, **kwargs)

    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    def set_config(self, values: Mapping[str, Any]) -> None:
        for path, value in values.items():
            self.journal.append(("set_config", f"{path}={value}"))
        self._config = apply_paths(self._config, values)
        self._save()

    def set_secret(self, key: str, value: str) -> None:
        del value  # never kept in plain text, not even by the simulation
        self.journal.append(("set_secret", key))
        self._config[key] = {"secure": "v1:simulated"}
        self._save()

    def remove_config(self, paths: list[str]) -> None:
        for path in paths:
            self.journal.append(("remove_config", path))
        self._config = apply_paths(self._config, {}, paths)
        self._save()

    def up(self, on_output: Callable[[str], None]) -> UpSummary:
        from ecoma_infra.program.offline import run_offline  # noqa: PLC0415  (loads the SDK)

        if self.fail_up:
            self.journal.append(("up", "failed"))
            raise EcomaError(f"stack {self.name}: pulumi failed: simulated failure of up")
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / f"Pulumi.{self.name}.yaml"
            path.write_text(yaml_io.safe_dump({"config": self._config}))
            result = run_offline(path)
        urns = sorted(record.urn for record in result.records if record.custom)
        created = sorted(set(urns) - set(self._urns))
        deleted = sorted(set(self._urns) - set(urns))
        for urn in created:
            on_output(f"+ create {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        for urn in deleted:
            on_output(f"- delete {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        changes = {"create": len(created), "delete": len(deleted), "same": len(urns) - len(created)}
        self.journal.append(("up", json.dumps({k: v for k, v in changes.items() if k != "same"})))
        self._urns = urns
        self._outputs = result.outputs
        self._save()
        if self.on_up is not None:
            self.on_up(created, deleted)
        return UpSummary(changes, dict(result.outputs))

    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    @property
    def deployed(self) -> bool:
        """Whether `up` ran (or a saved state says it did)."""
        return bool(self._urns)

    def _save(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            state = {"config": self._config, "urns": self._urns, "outputs": self._outputs}
            self.state_file.write_text(json.dumps(state, indent=1))
