"""k3s releases as numbers that compare in order, and the upgrade rule between two of them.

A k3s release is `v<major>.<minor>.<patch>+k3s<n>`. Semantic versioning ignores build metadata,
but k3s re-releases a patch as `+k3s2` with fixes, so `n` counts. The rule is Kubernetes' skew
policy (kubernetes.io/releases/version-skew-policy) and k3s's own upgrade note ("ensure that
your plan does not skip intermediate minor versions", docs.k3s.io/upgrades/manual): never
older, at most one minor newer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ecoma_infra.errors import UsageError

_RELEASE = re.compile(r"^v([0-9]+)\.([0-9]+)\.([0-9]+)\+k3s([0-9]+)$")


@dataclass(frozen=True, order=True)
class K3sVersion:
    major: int
    minor: int
    patch: int
    build: int

    @classmethod
    def parse(cls, text: str, where: str) -> K3sVersion:
        match = _RELEASE.match(text.strip())
        if match is None:
            raise UsageError(
                f"{where}: {text!r} is not a k3s release; use the form v1.32.5+k3s1 "
                "(https://github.com/k3s-io/k3s/releases)"
            )
        major, minor, patch, build = (int(part) for part in match.groups())
        return cls(major, minor, patch, build)

    @classmethod
    def of_kubelet(cls, text: str) -> K3sVersion | None:
        """What a Node's kubeletVersion says (`v1.32.5+k3s1`), or None if it is not a k3s
        release."""
        match = _RELEASE.match(text.strip())
        return cls(*(int(part) for part in match.groups())) if match else None

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}+k3s{self.build}"


def refusal(current: K3sVersion, target: K3sVersion) -> str | None:
    """Why going from `current` to `target` is refused, or None when it is allowed (the same
    version is allowed: there is nothing to do)."""
    if target < current:
        return (
            f"{target} is older than {current}: k3s is never downgraded in place (restore an "
            "etcd snapshot taken before the upgrade instead, docs/day2.md)"
        )
    if target.major != current.major or target.minor > current.minor + 1:
        step = f"v{current.major}.{current.minor + 1}"
        return (
            f"{target} skips a minor version from {current}: upgrade to the latest {step}.x first"
        )
    return None
