"""`ecoma-infra deploy`: `up` a stack from its file, keeping the burst pools as they run now.

The one way to change a stack (every runbook uses it): it shows what will change first, with the
stateful machines called out, and asks."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ecoma_infra.burst.plan import carried_burst_state
from ecoma_infra.cli import burst_session, conventions
from ecoma_infra.errors import EcomaError, UsageError
from ecoma_infra.platforms.seams import PreviewSummary, ResourceStep
from ecoma_infra.stack.config_paths import apply_paths
from ecoma_infra.stack.issues import ConfigError
from ecoma_infra.stack.load import parse_stack_config
from ecoma_infra.stack.model import StackConfig, split_namespace

_EPILOG = f"""\
why: burst pool sizes and leases change at run time (`burst`, `reap`, `autoscale`), while the stack
file in git holds the pools' definitions. A plain `pulumi up` of the committed file would set every
pool back to its committed count and destroy running burst nodes without draining them. `deploy`
reads the running sizes and leases from the stack's `burst` output first and carries them into the
config, so a deploy never adds or removes a burst node.

first it previews (`pulumi preview` with the carried config, the stack file untouched) and lists
every resource to create, update, replace or delete; resources of stateful machines (cpl, sts: their
disks hold etcd and the databases) are called out. Then it asks (-y/--yes or
PULUMI_SKIP_CONFIRMATIONS=true skip the question), writes the carried config and runs `pulumi up`.

exit codes: 0 deployed (--dry-run: no resource would change); 1 failed or cancelled; 2 bad usage;
{conventions.EXIT_CHANGES_PENDING} --dry-run with changes pending.
"""

_OPS = ("create", "update", "replace", "delete")
_SYMBOL = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="pulumi up of a stack, burst pools kept at their running size (shows the changes "
        "and asks first)",
        description="Update a stack from its file through the Pulumi Automation API.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    conventions.add_dry_run_option(parser, "preview only")
    parser.add_argument(
        "--policy-pack",
        metavar="DIR",
        action="append",
        default=[],
        help="run this CrossGuard policy pack in the preview (repeatable), e.g. policy",
    )
    parser.add_argument(
        "--policy-pack-config",
        metavar="FILE",
        action="append",
        default=[],
        help="its configuration, one per --policy-pack, e.g. policy/config/prod.json",
    )
    burst_session.add_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.policy_pack_config and len(args.policy_pack_config) != len(args.policy_pack):
        raise UsageError("--policy-pack-config: give one per --policy-pack, in the same order")
    sess = burst_session.session(args, config_from_file=True)
    stack = sess.seams.stack
    telemetry = sess.telemetry("deploy")
    say = sess.say
    success = False
    document: dict[str, Any] = {"stack": args.stack, "applied": False}
    try:
        with telemetry.phase("plan"):
            config = stack.config()
            values, removals = carried_burst_state(config, stack.outputs())
            merged, _ = split_namespace(apply_paths(config, values, removals))
            try:
                parsed = parse_stack_config(merged, f"Pulumi.{args.stack}.yaml")
            except ConfigError as error:
                raise EcomaError(
                    f"{error}\nthe stack file with the burst pools as they run now is not valid: "
                    "scale the pools down first (`ecoma-infra burst --count ...`), then deploy"
                ) from None
            for path, value in values.items():
                say(f"keeping the running burst state: {path} = {value}")
            for path in removals:
                say(f"dropping the lease of a node that no longer runs: {path}")
            pools = ", ".join(f"{p} {pool.count}" for p, pool in parsed.burst.pools().items())
            say(f"stack {args.stack}: burst pools stay at {pools or 'none'}")
            say(f"previewing stack {args.stack} ...")
            preview = stack.preview(
                values,
                removals,
                lambda line: None,
                policy_packs=tuple(args.policy_pack),
                policy_pack_configs=tuple(args.policy_pack_config),
            )
        document.update(carried=values, dropped=removals)
        document["preview"] = _preview_document(preview, parsed)
        for line in describe(preview, parsed, args.stack):
            say(line)
        if args.dry_run:
            success = True
            if args.json:
                conventions.emit_json(document)
            pending = preview.pending
            return conventions.EXIT_CHANGES_PENDING if pending else conventions.EXIT_OK
        sess.confirm(f"deploy these changes to stack {args.stack}?")
        with telemetry.phase("up"):
            stack.set_config(values)
            stack.remove_config(removals)
            summary = stack.up(lambda line: say(f"  | {line.rstrip()}"))
        changed = ", ".join(f"{op} {n}" for op, n in sorted(summary.changes.items()))
        say(f"up: {changed}")
        telemetry.pools(parsed)
        document.update(applied=True, changes=dict(summary.changes))
        if args.json:
            conventions.emit_json(document)
        success = True
    finally:
        telemetry.finish(success=success)
    return conventions.EXIT_OK


def stateful_nodes(config: StackConfig) -> dict[str, str]:
    """The on-prem nodes whose disks hold state, by name: their role."""
    from ecoma_infra.program.components.proxmox import STATEFUL_ROLES  # noqa: PLC0415  (the SDK)

    return {node.name: node.role for node in config.nodes if node.role in STATEFUL_ROLES}


def _stateful_owner(step: ResourceStep, stateful: Mapping[str, str]) -> str | None:
    """The stateful node a resource belongs to (its children are named `<node>-...`)."""
    for node in stateful:
        if step.name == node or step.name.startswith(f"{node}-"):
            return node
    return None


def describe(preview: PreviewSummary, config: StackConfig, stack: str) -> list[str]:
    """The preview as `deploy` shows it before it asks."""
    stateful = stateful_nodes(config)
    steps = sorted(preview.steps, key=lambda s: (_OPS.index(s.op), s.type, s.name))
    if not steps:
        return [f"no resource of stack {stack} changes (outputs may still be updated)"]
    lines = [f"changes to stack {stack}:"]
    width = max(len(s.type) for s in steps)
    touched: list[str] = []
    for step in steps:
        owner = _stateful_owner(step, stateful)
        line = f"  {_SYMBOL[step.op]:<2} {step.op:<7} {step.type:<{width}}  {step.name}"
        if step.diffs:
            line += f"  ({', '.join(step.diffs)})"
        if owner is not None:
            line += f"  [STATEFUL: {owner}, {stateful[owner]}]"
            touched.append(f"{step.name} ({step.op})")
        lines.append(line)
    counts = {op: sum(1 for s in steps if s.op == op) for op in _OPS}
    lines.append(
        f"{counts['create']} to create, {counts['update']} to update, "
        f"{counts['replace']} to replace, {counts['delete']} to delete"
    )
    if touched:
        lines.append(
            "stateful machines (cpl: etcd; sts: the databases, on their disks) touched: "
            + ", ".join(touched)
        )
    lost = [s.name for s in steps if s.op in ("replace", "delete") and _stateful_owner(s, stateful)]
    if lost:
        guard = (
            "their protection makes `up` refuse it"
            if config.proxmox.protect_stateful
            else "ecoma:proxmox.protect_stateful is off: `up` WILL do it"
        )
        lines.append(
            f"WARNING: {', '.join(lost)} would be replaced or deleted, and a VM's disks go with "
            f"it; {guard}"
        )
    return lines


def _preview_document(preview: PreviewSummary, config: StackConfig) -> dict[str, Any]:
    stateful = stateful_nodes(config)
    return {
        "changes": dict(preview.changes),
        "steps": [
            {
                "op": step.op,
                "type": step.type,
                "name": step.name,
                "urn": step.urn,
                "diffs": list(step.diffs),
                "stateful_node": _stateful_owner(step, stateful),
            }
            for step in preview.steps
        ],
    }
