"""The migration's reports, as text for people and as one JSON document for scripts.

Values shown are the compared settings only (names, ids, sizes, tags): never a secret, since the
state's sensitive attributes (auth keys, snippet contents) are never compared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, TypeVar

from ecoma_infra.migrate.draft import DraftResult
from ecoma_infra.migrate.plan import Change
from ecoma_infra.migrate.state import StateMigration
from ecoma_infra.migrate.tfvars import render_path

NEXT_STEPS = """\
Next (docs/migration.md):
  1. act on every NOT SAFE line above; run this again until none is left you do not accept
  2. pulumi preview --stack {stack} --diff   (imports, updates, creates; no replace, no delete)
  3. pulumi up --stack {stack}; then retire the Terraform state (state rm, never destroy)"""


# --------------------------------------------------------------------------- config


def render_draft(result: DraftResult) -> str:
    draft = result.draft
    config = result.loaded.config
    lines = [
        f"{draft.source} -> {result.path}: a valid draft ({len(config.nodes)} on-prem nodes, "
        f"burst pools {', '.join(config.burst.pools()) or 'none'}, all at 0)"
    ]
    if draft.notes:
        lines.append(f"Not carried over ({len(draft.notes)}):")
        lines += [f"  {note.render(draft.source)}" for note in draft.notes]
    if draft.secrets:
        lines.append(f"Secrets, never written (set each with its command) ({len(draft.secrets)}):")
        for secret in draft.secrets:
            at = f"{draft.source}:{secret.line}" if secret.line else draft.source
            lines.append(f"  {secret.command()}   # from {at} {render_path(secret.path)}")
    lines += [f"Note: {notice}" for notice in result.loaded.notices]
    lines.append(
        "Next: review the draft, then `ecoma-infra migrate terraform state --state <state> "
        f"--file {result.path}`"
    )
    return "\n".join(lines)


def draft_document(result: DraftResult) -> dict[str, Any]:
    draft = result.draft
    return {
        "tfvars": draft.source,
        "stack_file": str(result.path),
        "not_carried_over": [
            {"key": render_path(n.path), "line": n.line, "why": n.why, "do": n.todo}
            for n in draft.notes
        ],
        "secrets": [
            {"key": f"ecoma:{s.key}", "from": render_path(s.path), "line": s.line}
            for s in draft.secrets
        ],
        "notices": list(result.loaded.notices),
    }


# --------------------------------------------------------------------------- state


def render_state(migration: StateMigration) -> str:
    plan = migration.plan
    state = migration.state
    version = state.terraform_version or "?"
    lines = [
        f"Terraform state {state.source} ({state.format}, Terraform {version}) -> stack "
        f"{plan.stack} ({migration.stack_path})",
        "",
    ]
    if plan.blockers:
        lines.append(f"BLOCKING ({len(plan.blockers)}): nothing adopted, the stack file unchanged")
        lines += [f"  {b.subject}: {b.problem}. Fix: {b.fix}" for b in plan.blockers]
        lines.append("")
    verb = "written to the stack file" if migration.written else "not written"
    lines.append(f"Adopted ({len(plan.adopted)}; ecoma:adopt {verb}):")
    width = max((len(a.name) for a in plan.adopted), default=0)
    id_width = max((len(a.import_id) for a in plan.adopted), default=0)
    lines += [
        f"  {a.name:<{width}}  {a.import_id:<{id_width}}  {a.address}"
        for a in sorted(plan.adopted, key=lambda a: a.name)
    ]
    lines.append("")
    lines.append(f"Left alone ({len(plan.left_alone)}):")
    for reason, addresses in _grouped((x.reason, x.address) for x in plan.left_alone):
        lines.append(f"  {reason}:")
        lines += [f"    {address}" for address in addresses]
    lines.append("")
    lines.append("What the first `up` still changes:")
    for safe in (False, True):
        changes = [c for c in plan.changes if c.safe is safe and c.effect != "create"]
        if changes:
            lines.append(f"  {'safe' if safe else 'NOT SAFE, act on it'} ({len(changes)}):")
            lines += [f"    {line}" for line in _change_lines(changes)]
    creates = [c for c in plan.changes if c.effect == "create"]
    if creates:
        lines.append(f"  created ({len(creates)}):")
        for (safe, why, kind), names in _grouped(
            ((c.safe, c.why, str(c.after)), c.resource) for c in creates
        ):
            mark = "safe" if safe else "NOT SAFE"
            lines.append(f"    [{mark}] {len(names)} {kind}: {why}")
            lines.append(f"      {', '.join(names)}")
    if not plan.blockers:
        lines += ["", NEXT_STEPS.format(stack=plan.stack)]
    return "\n".join(lines)


def _change_lines(changes: list[Change]) -> list[str]:
    lines = []
    for (field, effect, why), group in _grouped(((c.field, c.effect, c.why), c) for c in changes):
        values = {(_value(c.before), _value(c.after)) for c in group}
        if len(values) == 1:
            before, after = next(iter(values))
            what = f"{field}: {before} -> {after}"
        else:
            what = f"{field} (differs per resource)"
        names = ", ".join(sorted({c.resource for c in group}))
        lines.append(f"[{effect}] {what} on {names}: {why}")
    return lines


def _value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, default=str)


K = TypeVar("K")
V = TypeVar("V")


def _grouped(pairs: Iterable[tuple[K, V]]) -> list[tuple[K, list[V]]]:
    """Values by key, in first-seen order."""
    found: dict[K, list[V]] = {}
    for key, value in pairs:
        found.setdefault(key, []).append(value)
    return list(found.items())


def state_document(migration: StateMigration) -> dict[str, Any]:
    plan = migration.plan
    return {
        "stack": plan.stack,
        "stack_file": str(migration.stack_path),
        "state": {
            "file": migration.state.source,
            "format": migration.state.format,
            "terraform_version": migration.state.terraform_version,
        },
        "written": migration.written,
        "import_ids": plan.import_ids,
        "adopted": [
            {"name": a.name, "type": a.type, "import_id": a.import_id, "address": a.address}
            for a in sorted(plan.adopted, key=lambda a: a.name)
        ],
        "left_alone": [{"address": x.address, "reason": x.reason} for x in plan.left_alone],
        "blockers": [
            {"subject": b.subject, "problem": b.problem, "fix": b.fix, "stateful": b.stateful}
            for b in plan.blockers
        ],
        "changes": [
            {
                "resource": c.resource,
                "field": c.field,
                "before": c.before,
                "after": c.after,
                "effect": c.effect,
                "safe": c.safe,
                "why": c.why,
            }
            for c in plan.changes
        ],
    }
