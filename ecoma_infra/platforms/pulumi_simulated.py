"""Stand-in for the Pulumi Automation API (`pulumi_automation.AutomationStack`): a stack file's
config in memory or in a state file; `up` runs the real program under the offline preview's mocks
and diffs its resources against the last run. A simulation, and it says so.

The rehearsal's state (`rehearsal_state_file`) lives in `.rehearsal/<stack>/`, apart from the
lab's `.lab/<stack>/`, so that neither refuses the other's directory. It is read as untrusted
input: a state file that is not the rehearsal's JSON, or whose config breaks the stack rules,
ends in a message naming that file (not the stack file) and how to start over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, StrictInt, TypeAdapter, ValidationError

from ecoma_infra import yaml_io
from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.seams import Journal, PreviewSummary, ResourceStep, UpSummary
from ecoma_infra.stack.config_paths import apply_paths
from ecoma_infra.stack.document import MAX_FILE_BYTES, read_stack_document
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import check_config_block, check_stack_document, parse_stack_config

REHEARSAL_DIR = ".rehearsal"
STATE_FILE = "state.json"
_LEGACY_STATE = Path(".lab") / "{stack}" / "offline-state.json"  # before the move out of .lab


def rehearsal_state_file(root: Path, stack: str) -> Path:
    """Where the `--offline` rehearsal of `stack` keeps its state; a state left in the lab's
    `.lab/<stack>/` by an older version moves here (and its emptied directory goes)."""
    state = root / REHEARSAL_DIR / stack / STATE_FILE
    legacy = root / str(_LEGACY_STATE).format(stack=stack)
    if legacy.is_file() and not state.exists():
        state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        legacy.replace(state)
        state.chmod(0o600)
        with contextlib.suppress(OSError):
            legacy.parent.rmdir()  # only when empty: a lab's own files stay
    return state


class StateFileError(EcomaError):
    """The rehearsal's state file cannot be used; the message names it and the way out."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path}: {problem}. Fix: delete the file (or run the command with `--offline "
            "--reset`) to start the rehearsal over from the stack file"
        )


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
        source: str | None = None,
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
        self.source = source or f"Pulumi.{name}.yaml"
        """The file the config came from, which its errors name."""
        if state_file is not None and (state_file.exists() or state_file.is_symlink()):
            self._config, self._urns, self._outputs, kept = _read_state(state_file)
            self._digests, self._protected = kept["digests"], kept["protected"]
            self.source = str(state_file)

    @classmethod
    def from_file(cls, path: Path, journal: Journal, **kwargs: Any) -> SimulatedStack:
        """The stack file at `path`, checked like `validate` checks it."""
        source = str(path)
        document = read_stack_document(path, source)
        check_stack_document(document, source)
        name = path.name.split(".")[1]
        return cls(name, document["config"], journal, source=source, **kwargs)

    def read_file_config(self, path: Path) -> None:
        """Take the config as `path` holds it now, as a fresh checkout would (the running burst
        state stays in the outputs of the last `up`)."""
        document = yaml_io.safe_load(path.read_text()) or {}
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
            path.write_text(yaml_io.safe_dump({"config": dict(config)}))
            try:
                result = run_offline(path)
            except ConfigError as error:
                raise ConfigError(self.source, error.issues) from None
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
        # Checked here, so a broken config is blamed on the file it came from, not on the
        # temporary copy the offline engine reads.
        values, _, issues = check_config_block(self._config)
        parse_stack_config(values, self.source, earlier_issues=issues)
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
        """Write the state 0600 (it holds the stack's config and outputs) and atomically: a
        killed run leaves the old state or the new one, never half of one."""
        if self.state_file is None:
            return
        directory = self.state_file.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = {
            "config": self._config,
            "urns": self._urns,
            "outputs": self._outputs,
            "digests": self._digests,
            "protected": self._protected,
        }
        handle, temporary = tempfile.mkstemp(prefix=".state-", dir=directory)  # mode 0600
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(state, stream, indent=1)
            Path(temporary).replace(self.state_file)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.source = str(self.state_file)


def _read_state(
    path: Path,
) -> tuple[dict[str, Any], list[str], dict[str, Any], dict[str, Any]]:
    """(config, urns, outputs, {digests, protected}) of a state file, each checked;
    `StateFileError` otherwise."""
    try:
        if path.is_symlink() or not path.is_file():
            raise StateFileError(path, "not a regular file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise StateFileError(path, f"larger than {MAX_FILE_BYTES // 1024} KiB")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise StateFileError(path, "not UTF-8 text") from None
    except OSError as error:
        raise StateFileError(path, f"cannot be read ({error.strerror})") from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        problem = "empty" if not text.strip() else f"not JSON ({error.msg} at {where})"
        raise StateFileError(path, problem) from None
    except RecursionError:
        raise StateFileError(path, "nested too deeply") from None
    if not isinstance(state, dict):
        raise StateFileError(path, f"holds a JSON {type(state).__name__}, not the state object")
    config, urns, outputs = state.get("config"), state.get("urns"), state.get("outputs", {})
    if not isinstance(config, dict):
        raise StateFileError(path, "has no `config` object")
    if not isinstance(urns, list) or not all(isinstance(urn, str) for urn in urns):
        raise StateFileError(path, "has no `urns` list of strings")
    if not isinstance(outputs, dict):
        raise StateFileError(path, "`outputs` is not an object")
    try:
        _BURST_OUTPUT.validate_python(outputs.get("burst") or {})
    except ValidationError:
        raise StateFileError(path, "`outputs.burst` is not what the program exports") from None
    values, _, issues = check_config_block(config)
    parse_stack_config(values, str(path), earlier_issues=issues)
    return config, urns, outputs, _kept(path, state)


def _kept(path: Path, state: dict[str, Any]) -> dict[str, Any]:
    """What the last `up` registered besides the URNs: input digests and protected URNs."""
    digests, protected = state.get("digests", {}), state.get("protected", [])
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise StateFileError(path, "`digests` is not an object of strings")
    if not isinstance(protected, list) or not all(isinstance(urn, str) for urn in protected):
        raise StateFileError(path, "`protected` is not a list of strings")
    return {"digests": digests, "protected": protected}


class _PoolOutput(BaseModel):
    """The part of a pool in the `burst` output that the burst commands read back."""

    count: StrictInt = Field(ge=0)
    nodes: dict[str, dict[str, str | None]] = Field(default_factory=dict)


class _BurstOutput(BaseModel):
    pools: dict[str, _PoolOutput] = Field(default_factory=dict)
    last_scaled_at: str | None = None


_BURST_OUTPUT = TypeAdapter(_BurstOutput)


_SYMBOLS = {"create": "+", "update": "~", "delete": "-"}


def _type(urn: str) -> str:
    """`urn:pulumi:s::p::ecoma:aws:BurstPool$aws:ec2/vpc:Vpc::name` -> `aws:ec2/vpc:Vpc`."""
    return urn.rsplit("::", 2)[-2].rsplit("$", 1)[-1]
