"""Stand-in for the Pulumi Automation API (`pulumi_automation.AutomationStack`): a stack file's
config in memory or in a state file; `up` runs the real program under the offline preview's mocks
and diffs its resources against the last run. A simulation, and it says so."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Journal, PreviewSummary, ResourceStep, UpSummary
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
        self._digests: dict[str, str] = {}  # urn -> digest of its inputs at the last up
        self.last_records: list[Any] = []  # what the last `up` registered (options included)
        self._protected: list[str] = []
        if state_file is not None and state_file.exists():
            state = json.loads(state_file.read_text())
            self._config, self._urns = state["config"], state["urns"]
            self._outputs = state.get("outputs", {})
            self._digests = state.get("digests", {})
            self._protected = state.get("protected", [])

    @classmethod
    def from_file(cls, path: Path, journal: Journal, **kwargs: Any) -> SimulatedStack:
        document = yaml.safe_load(path.read_text()) or {}
        name = path.name.split(".")[1]
        return cls(name, document.get("config") or {}, journal, **kwargs)

    def read_file_config(self, path: Path) -> None:
        """Take the config as `path` holds it now, as a fresh checkout would (the running burst
        state stays in the outputs of the last `up`)."""
        document = yaml.safe_load(path.read_text()) or {}
        self._config = dict(document.get("config") or {})

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

    def preview(
        self,
        values: Mapping[str, Any],
        removals: list[str],
        on_output: Callable[[str], None],
        *,
        policy_packs: tuple[str, ...] = (),
        policy_pack_configs: tuple[str, ...] = (),
    ) -> PreviewSummary:
        """The program run offline with the changed config, diffed against the last `up`:
        creates, deletes, and updates where a resource's inputs changed. A simulation cannot
        know which changes a provider replaces rather than updates: it reports none as
        `replace`. Policy packs are not run here."""
        del policy_packs, policy_pack_configs
        records, _, _ = self._program(apply_paths(self._config, values, removals))
        known = set(self._urns)
        steps = [ResourceStep("create", urn, _type(urn)) for urn in records if urn not in known]
        steps += [
            ResourceStep("update", urn, _type(urn))
            for urn, digest in records.items()
            if urn in known and self._digests.get(urn, digest) != digest
        ]
        gone = [urn for urn in self._urns if urn not in records]
        steps += [ResourceStep("delete", urn, _type(urn)) for urn in gone]
        for step in steps:
            on_output(f"{_SYMBOLS[step.op]} {step.op} {step.type} {step.name}")
        changes = {op: sum(1 for s in steps if s.op == op) for op in ("create", "update", "delete")}
        changes["same"] = len(records) - changes["create"] - changes["update"]
        self.journal.append(
            ("preview", json.dumps({k: v for k, v in changes.items() if k != "same"}))
        )
        return PreviewSummary(changes, steps)

    def _program(
        self, config: Mapping[str, Any]
    ) -> tuple[dict[str, str], dict[str, Any], list[Any]]:
        """The program run under `config`: its custom resources (urn -> digest of the inputs),
        its outputs, and every registration (options included)."""
        from ecoma_infra.program.offline import run_offline  # noqa: PLC0415  (loads the SDK)

        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / f"Pulumi.{self.name}.yaml"
            path.write_text(yaml.safe_dump({"config": dict(config)}))
            result = run_offline(path)
        digests = {
            record.urn: hashlib.sha256(
                json.dumps(record.inputs, sort_keys=True, default=str).encode()
            ).hexdigest()
            for record in result.records
            if record.custom
        }
        return digests, dict(result.outputs), list(result.records)

    def up(
        self,
        on_output: Callable[[str], None],
        *,
        replace: Sequence[str] = (),
        target: Sequence[str] = (),
    ) -> UpSummary:
        if self.fail_up:
            self.journal.append(("up", "failed"))
            raise EcomaError(f"stack {self.name}: pulumi failed: simulated failure of up")
        digests, outputs, records = self._program(self._config)
        self.last_records = records
        urns = sorted(digests)
        by_urn = {record.urn: record for record in records}
        unknown = [urn for urn in [*replace, *target] if urn not in by_urn]
        if unknown:
            # As the engine does for a --target or --replace that names no resource.
            raise EcomaError(f"stack {self.name}: no resource {', '.join(unknown)} to target")
        # The engine checks the protection the state holds (what the last up registered):
        # a program that drops `protect` must be applied before the resource can go.
        protected = [urn for urn in replace if urn in self._protected]
        if protected:
            raise EcomaError(
                f"stack {self.name}: pulumi failed: unable to replace protected resource "
                f"{', '.join(protected)} (simulated)"
            )
        for urn in target:
            self.journal.append(("target", urn))
        for urn in replace:
            self.journal.append(("replace", urn))
        # A replaced resource is deleted and created again.
        replaced = set(replace) & set(self._urns)
        created = sorted((set(urns) - set(self._urns)) | replaced)
        deleted = sorted((set(self._urns) - set(urns)) | replaced)
        for urn in created:
            on_output(f"+ create {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        for urn in deleted:
            on_output(f"- delete {urn.rsplit('::', 2)[-2]} {urn.rsplit('::', 1)[-1]}")
        changes = {"create": len(created), "delete": len(deleted), "same": len(urns) - len(created)}
        if replaced:
            changes = {
                "create": len(created) - len(replaced),
                "delete": len(deleted) - len(replaced),
                "replace": len(replaced),
                "same": len(urns) - len(created),
            }
        self.journal.append(("up", json.dumps({k: v for k, v in changes.items() if k != "same"})))
        self._urns = urns
        self._digests = digests
        self._protected = sorted(r.urn for r in records if r.custom and r.protect)
        self._outputs = outputs
        self._save()
        if self.on_up is not None:
            self.on_up(created, deleted)
        return UpSummary(changes, dict(self._outputs))

    def outputs(self) -> dict[str, Any]:
        return dict(self._outputs)

    @property
    def deployed(self) -> bool:
        """Whether `up` ran (or a saved state says it did)."""
        return bool(self._urns)

    def _save(self) -> None:
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            state = {
                "config": self._config,
                "urns": self._urns,
                "outputs": self._outputs,
                "digests": self._digests,
                "protected": self._protected,
            }
            self.state_file.write_text(json.dumps(state, indent=1))


_SYMBOLS = {"create": "+", "update": "~", "delete": "-"}


def _type(urn: str) -> str:
    """`urn:pulumi:s::p::ecoma:aws:BurstPool$aws:ec2/vpc:Vpc::name` -> `aws:ec2/vpc:Vpc`."""
    return urn.rsplit("::", 2)[-2].rsplit("$", 1)[-1]
