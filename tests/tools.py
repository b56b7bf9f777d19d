"""Third-party validators the tests run (promtool, cloud-init, ...): found on PATH, or the test
skips, and fails instead under ECOMA_LAB_REQUIRED=1 (CI as root), where scripts/test installed
them, so that a runner without the tool never passes by skipping."""

from __future__ import annotations

import os
import shutil

import pytest

REQUIRED_ENV = "ECOMA_LAB_REQUIRED"


def required_tool(name: str, install: str, purpose: str) -> str:
    """The path of `name`; `install` says how to get it, `purpose` what needs it."""
    found = shutil.which(name)
    if found is None:
        reason = f"{name} not found: {install}"
        if os.environ.get(REQUIRED_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRED_ENV}=1: {purpose} must run here)")
        pytest.skip(reason)
    return found
