"""The seams between bursting and the systems it drives, one small interface each.

`ecoma-infra burst`, `reap`, `autoscale` and `drill` talk to three outside systems only through
these protocols, so that the decision logic and the order of the steps run the same against the
real systems and against the stand-ins of the tests:

- `StackBackend`: the Pulumi Automation API (structured config, `up`, outputs);
  real: `platforms.pulumi_automation.AutomationStack`.
- `Cluster`: the Kubernetes API (cordon, drain with evictions, delete the Node, readiness);
  real: `platforms.kubernetes.KubernetesCluster`.
- `Tailnet`: the Tailscale API (devices, delete a device); real: `platforms.tailscale.TailscaleApi`.

The day-2 operations (`upgrade`, `replace`, `snapshot`) use the same seams, and for `replace` one
more:

- `Hypervisor`: the Proxmox VE API (stop and start a VM, move its data disks to a holder VM and
  back); real: `platforms.proxmox.ProxmoxApi`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ecoma_infra.errors import EcomaError

#: Every call a stand-in receives, in order: what tests check the order of steps with.
Journal = list[tuple[str, str]]


class DrainError(EcomaError):
    """A drain did not finish: PodDisruptionBudgets kept pods, or it timed out."""

    def __init__(self, node: str, reason: str, pods_left: list[str] | None = None) -> None:
        self.node = node
        self.reason = reason
        self.pods_left = list(pods_left or [])
        left = f" (pods left: {', '.join(self.pods_left)})" if self.pods_left else ""
        super().__init__(f"drain of {node} failed: {reason}{left}")


@dataclass(frozen=True)
class DrainProgress:
    """Where a drain stands at one of its polls: the pods still on the node and, for those
    whose eviction the API refused, why (a PodDisruptionBudget, throttling)."""

    node: str
    elapsed: float
    waiting: list[str]
    blocked: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NodeStatus:
    """A Node object as the cluster sees it."""

    name: str
    ready: bool
    unschedulable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    kubelet_version: str = ""  # what the kubelet reports, e.g. v1.32.5+k3s1
    deleting: bool = False  # deleted, its finalizers still running (k3s's etcd member removal)


@dataclass(frozen=True)
class Device:
    """A machine in the tailnet."""

    id: str
    hostname: str


@dataclass(frozen=True)
class ResourceStep:
    """One resource's change in a preview: `op` is create, update, replace or delete (Pulumi's
    create-replacement/replace/delete-replaced steps of one resource are one `replace`)."""

    op: str
    urn: str
    type: str
    diffs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


@dataclass(frozen=True)
class PreviewSummary:
    """What an `up` would change: the count per operation and the resources' steps."""

    changes: Mapping[str, int]
    steps: list[ResourceStep]

    @property
    def pending(self) -> bool:
        return bool(self.steps)


@dataclass(frozen=True)
class UpSummary:
    """What an `up` changed, by operation (create, update, delete, same, ...)."""

    changes: Mapping[str, int]
    outputs: Mapping[str, Any]


class StackBackend(Protocol):
    name: str

    def config(self) -> dict[str, Any]:
        """The stack's config block as the stack file holds it (`{"ecoma:burst": {...}}`);
        secure values stay encrypted."""

    def set_config(self, values: Mapping[str, Any]) -> None:
        """Set structured config values by path, e.g. `{"ecoma:burst.aws.count": 2}`, in one
        step."""

    def set_secret(self, key: str, value: str) -> None:
        """Set a secret config value (`pulumi config set --secret`), encrypted by the stack's
        secrets provider."""

    def remove_config(self, paths: list[str]) -> None:
        """Remove config values by path, e.g. `ecoma:burst.aws.expires_at["wkr-aws-1"]`."""

    def preview(
        self,
        values: Mapping[str, Any],
        removals: list[str],
        on_output: Callable[[str], None],
        *,
        policy_packs: tuple[str, ...] = (),
        policy_pack_configs: tuple[str, ...] = (),
    ) -> PreviewSummary:
        """`pulumi preview` of the stack as it would be with these config paths set and removed,
        without writing them anywhere; its progress lines given to `on_output`."""

    def up(
        self,
        on_output: Callable[[str], None],
        *,
        replace: Sequence[str] = (),
        target: Sequence[str] = (),
    ) -> UpSummary:
        """`pulumi up` of the stack, its progress lines given to `on_output`. `replace`: URNs
        to replace even without a change; `target`: only these URNs and what depends on them."""

    def outputs(self) -> dict[str, Any]:
        """The stack's outputs, secrets in plain text (never print them)."""


class Cluster(Protocol):
    def node(self, name: str) -> NodeStatus | None:
        """The Node object, or None when the cluster has none of that name."""

    def cordon(self, name: str) -> None: ...

    def uncordon(self, name: str) -> None: ...

    def drain(
        self,
        name: str,
        *,
        timeout: float,
        on_progress: Callable[[DrainProgress], None] | None = None,
    ) -> None:
        """Evict every pod but DaemonSet and mirror pods through the Eviction API (which
        honours PodDisruptionBudgets) and wait until they are gone; `DrainError` when that does
        not happen within `timeout` seconds. `on_progress` hears of every poll."""

    def delete_node(self, name: str) -> None:
        """Delete the Node object; no error when it is already gone."""

    def etcd_healthy(self) -> bool:
        """Whether the API server's own etcd check passes (`/readyz?verbose`: `[+]etcd ok`)."""


class Tailnet(Protocol):
    def devices(self) -> list[Device]: ...

    def delete_device(self, device_id: str) -> None: ...


@dataclass(frozen=True)
class VmRef:
    """A VM on a hypervisor."""

    hypervisor: str
    vm_id: int


class Hypervisor(Protocol):
    def vm(self, name: str) -> VmRef | None:
        """The VM of that name, or None."""

    def disks(self, vm: VmRef) -> dict[str, str]:
        """The VM's disk slots (`virtio2`, `scsi0`, ...) and their drive strings."""

    def running(self, vm: VmRef) -> bool: ...

    def stop(self, vm: VmRef) -> None:
        """Power the VM off and wait until it is stopped."""

    def start(self, vm: VmRef, *, timeout: float) -> None:
        """Start the VM and wait until its guest agent answers."""

    def create_holder(self, hypervisor: str, name: str, description: str) -> VmRef:
        """A stopped, protected VM without disks, to keep another VM's disks."""

    def move_disk(self, vm: VmRef, slot: str, target: VmRef) -> None:
        """Reassign the disk in `slot` to `target`, same slot (the volume is renamed to the
        target's VM id, so destroying `vm` no longer destroys it)."""

    def delete_holder(self, vm: VmRef) -> None:
        """Delete a holder VM that holds no disk any more."""
