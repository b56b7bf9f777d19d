"""Shared fixtures: the lab fixtures (real Debian hosts in network namespaces).

Under pytest-xdist (`scripts/test` runs `pytest -n auto --dist loadgroup`), the tests of one
module stay on one worker, so a module-scoped fixture (an offline preview, a lab) is built once,
and every lab test shares one worker: only one lab can be up on a machine at a time.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["lab_fixtures", "prometheus_server"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = "lab" if item.get_closest_marker("lab") else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
