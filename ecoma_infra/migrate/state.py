"""`migrate terraform state`: plan the adoption of a Terraform state, prove it on the program,
then write `ecoma:adopt` into the stack file.

1. The offline preview of the stack as it stands gives every resource the program declares.
2. `plan.plan_adoption` matches the state to it. A stateful node that the adoption would replace
   or break stops everything (`MigrationRefusedError`); any other blocker ends with the report
   and nothing written.
3. The stack with the new `ecoma:adopt` block runs through the offline engine again: each
   resource must carry exactly its import id, and the plan computed from that preview's own
   options (without assuming anything) must find no replacement and the same imports.
4. Only then is the stack file replaced, in one rename.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.migrate.plan import MigrationPlan, plan_adoption
from ecoma_infra.migrate.stackfile import with_adopt
from ecoma_infra.migrate.tfstate import TfState, read_state
from ecoma_infra.program.offline import PreviewResult, run_offline
from ecoma_infra.stack.load import load_stack_file
from ecoma_infra.stack.model import StackConfig


@dataclass(frozen=True)
class StateMigration:
    plan: MigrationPlan
    stack_path: Path
    state: TfState
    written: bool


def migrate_state(
    stack_path: Path, state_path: Path, *, write: bool = True, now: datetime | None = None
) -> StateMigration:
    loaded = load_stack_file(stack_path)
    state = read_state(state_path)
    preview = run_offline(stack_path)
    plan = plan_adoption(loaded.config, preview, state)
    refusal = plan.refusal()
    if refusal is not None:
        raise refusal
    if plan.blockers:
        return StateMigration(plan, stack_path, state, written=False)
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    comment = (
        f"written by `ecoma-infra migrate terraform state` from {state_path.name} ({stamp}).\n"
        "import ids of what Terraform built; keep them while those resources live."
    )
    text = stack_path.read_text(encoding="utf-8")
    new_text = with_adopt(text, plan.import_ids, comment, source=str(stack_path))
    applied_config, applied = _preview_text(stack_path, new_text)
    verify_applied(plan, applied_config, applied, state, source=str(stack_path))
    if write:
        _replace(stack_path, new_text)
    return StateMigration(plan, stack_path, state, written=write)


def verify_applied(
    plan: MigrationPlan,
    config: StackConfig,
    applied: PreviewResult,
    state: TfState,
    *,
    source: str,
) -> None:
    """The program, given `ecoma:adopt`, imports exactly the planned resources, and judged by its
    own options alone (nothing assumed), replaces or breaks nothing the plan adopts."""
    imports = {r.name: r.import_id for r in applied.records if r.import_id}
    if imports != plan.import_ids:
        missing = sorted(set(plan.import_ids) - set(imports))
        extra = sorted(set(imports) - set(plan.import_ids))
        raise EcomaError(
            f"{source}: the program does not import what the plan adopts (missing: "
            f"{', '.join(missing) or 'none'}; unexpected: {', '.join(extra) or 'none'}); "
            "nothing was written"
        )
    replan = plan_adoption(config, applied, state, as_adopted=False)
    if replan.blockers or replan.import_ids != plan.import_ids:
        problems = "; ".join(f"{b.subject}: {b.problem}" for b in replan.blockers)
        raise EcomaError(
            f"{source}: with ecoma:adopt applied, the program would still replace or break "
            f"adopted resources ({problems or 'the imports differ'}); nothing was written"
        )


def _preview_text(stack_path: Path, text: str) -> tuple[StackConfig, PreviewResult]:
    """`text` as the stack file `stack_path` (same file name, so the same stack), previewed."""
    with tempfile.TemporaryDirectory(prefix="ecoma-migrate-") as directory:
        candidate = Path(directory) / stack_path.name
        candidate.write_text(text, encoding="utf-8")
        return load_stack_file(candidate).config, run_offline(candidate)


def _replace(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept for the rename
        "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    temp = Path(handle.name)
    try:
        with handle:
            handle.write(text)
        temp.chmod(path.stat().st_mode & 0o777)
        temp.replace(path)
    except OSError as error:
        raise UsageError(f"{path}: cannot write it: {error.strerror}") from None
    finally:
        temp.unlink(missing_ok=True)
