"""k3s releases compare as numbers, build metadata (+k3sN) included, and the upgrade rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecoma_infra.day2.versions import K3sVersion, refusal
from ecoma_infra.errors import UsageError

versions = st.builds(
    K3sVersion,
    st.just(1),
    st.integers(0, 40),
    st.integers(0, 30),
    st.integers(1, 5),
)


def test_a_release_parses_and_prints_back() -> None:
    version = K3sVersion.parse("v1.32.5+k3s1", "--k3s-version")
    assert version == K3sVersion(1, 32, 5, 1)
    assert str(version) == "v1.32.5+k3s1"


@pytest.mark.parametrize("text", ["1.32.5+k3s1", "v1.32.5", "v1.32+k3s1", "v1.32.5-rc1+k3s1", ""])
def test_anything_else_is_bad_usage_naming_the_form(text: str) -> None:
    with pytest.raises(UsageError, match=r"--k3s-version: .* use the form v1\.32\.5\+k3s1"):
        K3sVersion.parse(text, "--k3s-version")


def test_numbers_compare_as_numbers_and_the_k3s_build_counts() -> None:
    assert K3sVersion.parse("v1.32.10+k3s1", "x") > K3sVersion.parse("v1.32.9+k3s1", "x")
    assert K3sVersion.parse("v1.32.5+k3s2", "x") > K3sVersion.parse("v1.32.5+k3s1", "x")
    assert K3sVersion.parse("v1.33.0+k3s1", "x") > K3sVersion.parse("v1.32.12+k3s3", "x")


def test_one_minor_up_or_a_patch_is_allowed() -> None:
    current = K3sVersion(1, 32, 5, 1)
    assert refusal(current, K3sVersion(1, 32, 6, 1)) is None
    assert refusal(current, K3sVersion(1, 32, 5, 2)) is None
    assert refusal(current, K3sVersion(1, 33, 1, 1)) is None
    assert refusal(current, current) is None


def test_a_skipped_minor_is_refused_naming_the_step_in_between() -> None:
    why = refusal(K3sVersion(1, 32, 5, 1), K3sVersion(1, 34, 0, 1))
    assert why is not None
    assert "skips a minor version" in why
    assert "v1.33.x first" in why


def test_a_downgrade_is_refused_pointing_at_a_restore() -> None:
    why = refusal(K3sVersion(1, 33, 1, 1), K3sVersion(1, 33, 0, 1))
    assert why is not None
    assert "never downgraded" in why
    assert "snapshot" in why


@given(versions, versions)
def test_the_rule_is_never_older_and_at_most_one_minor_newer(
    current: K3sVersion, target: K3sVersion
) -> None:
    allowed = refusal(current, target) is None
    assert allowed == (target >= current and target.minor <= current.minor + 1)


@given(versions)
def test_printing_and_parsing_round_trip(version: K3sVersion) -> None:
    assert K3sVersion.parse(str(version), "x") == version
    assert K3sVersion.of_kubelet(str(version)) == version
