"""What a playbook run did: per-host recap counts, failures, messages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class HostCounts:
    """Ansible's recap for one host. As in Ansible's own recap, `ok` includes `changed`."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class TaskFailure:
    host: str
    task: str
    msg: str
    unreachable: bool = False


@dataclass(frozen=True)
class RunResult:
    """What a run did. Every text in it has already been redacted."""

    rc: int
    status: str
    hosts: dict[str, HostCounts]
    failures: list[TaskFailure] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.failed)

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(name for name, counts in self.hosts.items() if counts.unreachable)

    @property
    def success(self) -> bool:
        return (
            self.rc == 0
            and self.status == "successful"
            and bool(self.hosts)
            and not self.failed_hosts
            and not self.unreachable_hosts
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "rc": self.rc,
            "status": self.status,
            "hosts": {name: asdict(counts) for name, counts in sorted(self.hosts.items())},
            "failures": [asdict(failure) for failure in self.failures],
            "messages": list(self.messages),
        }
