"""A lease asked for on the command line is bounded like one in the stack file (simulated stack):
no `--ttl` makes a lease end past datetime's range or beyond a burst node's purpose."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from stacks import stack_variant

from ecoma_infra.burst.plan import PlanRefusedError, plan_count
from ecoma_infra.burst.run import load_ref
from ecoma_infra.platforms.simulated import SimulatedWorld

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("ttl", ["9999999d", "99999999999d", "31d", "0h", "4 h"])
def test_simulated_a_ttl_out_of_bounds_is_refused(tmp_path: Path, ttl: str) -> None:
    world = SimulatedWorld.from_file(stack_variant(tmp_path, "staging"))
    with pytest.raises(PlanRefusedError, match=f"--ttl {ttl}: "):
        plan_count(load_ref(world.stack), "aws", 1, NOW, ttl=ttl)


def test_simulated_the_longest_ttl_is_accepted(tmp_path: Path) -> None:
    world = SimulatedWorld.from_file(stack_variant(tmp_path, "staging"))
    plan = plan_count(load_ref(world.stack), "aws", 1, NOW, ttl="30d")
    assert [lease.expires_at for lease in plan.add] == [NOW + timedelta(days=30)]
