"""`AutomationStack.preview`: what `deploy` shows before it asks. No Pulumi CLI here, so the
Automation API's `Stack` is simulated (the test names say so); the engine events it hands over
are the SDK's own `EngineEvent`s, built from the JSON the CLI streams."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pulumi.automation import EngineEvent, OpType, PreviewResult

from ecoma_infra.platforms.pulumi_automation import AutomationStack

STACK_FILE = {
    "secretsprovider": "awskms://alias/ecoma-prod",
    "encryptedkey": "AQICAHh...",
    "config": {
        "ecoma:burst": {"aws": {"count": 0, "max": 2}},
        "ecoma:k3s_token": {"secure": "v1:AAAA"},
    },
}
PREFIX = "urn:pulumi:prod::ecoma::"


def step(sequence: int, op: str, resource: str) -> EngineEvent:
    kind, name = resource.split("::")
    metadata = {"op": op, "urn": f"{PREFIX}{kind}::{name}", "type": kind.rsplit("$", 1)[-1]}
    if op == "update":
        metadata["diffs"] = ["memory"]
    return EngineEvent.from_json(
        {"sequence": sequence, "resourcePreEvent": {"metadata": metadata, "planning": True}}
    )


class SimulatedAutomationStack:
    """Records the preview call and replays engine events, as the CLI would stream them."""

    def __init__(self, events: list[EngineEvent]) -> None:
        self.events = events
        self.calls: list[dict[str, Any]] = []
        self.config_file_seen: dict[str, Any] = {}

    def preview(self, **kwargs: Any) -> PreviewResult:
        self.calls.append(kwargs)
        self.config_file_seen = yaml.safe_load(Path(kwargs["config_file"]).read_text())
        for event in self.events:
            kwargs["on_event"](event)
        return PreviewResult("", "", {OpType.UPDATE: 1, OpType.SAME: 40})


def automation_stack(tmp_path: Path, events: list[EngineEvent]) -> tuple[AutomationStack, Any]:
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump(STACK_FILE))
    stack = object.__new__(AutomationStack)  # no CLI to select a stack with
    stack.name = "acme/ecoma-infra/prod"
    stack._work_dir = tmp_path
    simulated = SimulatedAutomationStack(events)
    stack._stack = simulated
    stack._automation = __import__("pulumi").automation
    return stack, simulated


def test_simulated_preview_uses_a_copy_of_the_stack_file_with_the_carried_state(
    tmp_path: Path,
) -> None:
    stack, simulated = automation_stack(tmp_path, [])
    before = (tmp_path / "Pulumi.prod.yaml").read_text()

    stack.preview(
        {
            "ecoma:burst.aws.count": 2,
            'ecoma:burst.aws.expires_at["wkr-aws-1"]': "2026-01-01T00:00:00Z",
        },
        [],
        lambda line: None,
        policy_packs=("policy",),
        policy_pack_configs=("policy/config/prod.json",),
    )

    assert (tmp_path / "Pulumi.prod.yaml").read_text() == before  # the stack file untouched
    seen = simulated.config_file_seen
    assert seen["config"]["ecoma:burst"]["aws"]["count"] == 2
    assert seen["config"]["ecoma:burst"]["aws"]["expires_at"] == {
        "wkr-aws-1": "2026-01-01T00:00:00Z"
    }
    assert seen["config"]["ecoma:k3s_token"] == {"secure": "v1:AAAA"}  # still encrypted
    assert seen["secretsprovider"] == STACK_FILE["secretsprovider"]
    call = simulated.calls[0]
    assert call["policy_packs"] == ["policy"]
    assert call["policy_pack_configs"] == ["policy/config/prod.json"]
    assert not Path(call["config_file"]).exists()  # the copy is gone afterwards


def test_simulated_preview_turns_engine_steps_into_one_change_per_resource(
    tmp_path: Path,
) -> None:
    vm = "ecoma:proxmox:Node$proxmoxve:index/vmLegacy:VmLegacy"
    events = [
        step(1, "same", f"{vm}::cpl-1-vm"),
        step(2, "create", "ecoma:aws:BurstPool$aws:ec2/instance:Instance::burst-aws-wkr-aws-1"),
        step(3, "update", f"{vm}::sts-1-vm"),
        step(4, "create-replacement", f"{vm}::wkr-1-vm"),
        step(5, "replace", f"{vm}::wkr-1-vm"),
        step(6, "delete-replaced", f"{vm}::wkr-1-vm"),
        step(7, "delete", "ecoma:aws:BurstPool$aws:ec2/natGateway:NatGateway::burst-aws-nat"),
        step(8, "read", "ecoma:gcp:BurstPool$gcp:compute/image:Image::debian"),
    ]
    stack, _ = automation_stack(tmp_path, events)

    summary = stack.preview({}, [], lambda line: None)

    assert [(s.op, s.name, s.type) for s in summary.steps] == [
        ("create", "burst-aws-wkr-aws-1", "aws:ec2/instance:Instance"),
        ("update", "sts-1-vm", "proxmoxve:index/vmLegacy:VmLegacy"),
        ("replace", "wkr-1-vm", "proxmoxve:index/vmLegacy:VmLegacy"),
        ("delete", "burst-aws-nat", "aws:ec2/natGateway:NatGateway"),
    ]
    assert summary.steps[1].diffs == ("memory",)
    assert summary.changes == {"update": 1, "same": 40}
    assert summary.pending
