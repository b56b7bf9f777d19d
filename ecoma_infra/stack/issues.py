"""A finding in a stack config (`ConfigIssue`: where, what, the fix) and the error that carries
all of them with the file they came from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ecoma_infra.errors import EcomaError


@dataclass(frozen=True)
class ConfigIssue:
    where: str
    message: str
    fix: str

    def render(self, source: str) -> str:
        return f"{source}: {self.where}: {self.message}. Fix: {self.fix}"


class ConfigError(EcomaError):
    """The stack config breaks one or more rules; `issues` lists every one of them."""

    def __init__(self, source: str, issues: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.issues = list(issues)
        lines = [issue.render(source) for issue in self.issues]
        count = len(lines)
        header = f"{source}: {count} problem{'s' if count != 1 else ''} in the stack config"
        super().__init__("\n".join([header, *(f"  - {line}" for line in lines)]))
