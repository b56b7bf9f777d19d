"""`AutomationStack` around each `up`: a fresh OIDC token for AWS before every update, a bounded
wait for another update's stack lock, and no update once the stack changed since it was read.

The Automation API's `Stack` is replaced by a recorder (the real one needs the Pulumi CLI and a
backend), so every test that uses it says `simulated`. The runner's OIDC endpoint is a simulated
one: a real HTTP server on 127.0.0.1 that checks the bearer header and hands out numbered tokens,
so the tests see every token request, its audience and its query.
"""

from __future__ import annotations

import json
import secrets
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pulumi import automation
from simulated_apis import Answer, SimulatedApi

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.github_oidc import AWS_AUDIENCE, GitHubOidc
from ecoma_infra.platforms.pulumi_automation import (
    AWS_TOKEN_KEY,
    LOCK_WAIT,
    AutomationStack,
    StaleStackError,
)

ROLE = "arn:aws:iam::123456789012:role/ecoma-staging-burst"


class SimulatedTokenEndpoint(SimulatedApi):
    """The runner's ACTIONS_ID_TOKEN_REQUEST_URL: each GET with the job's bearer token returns a
    new token; any other bearer gets 401."""

    def __init__(self) -> None:
        super().__init__()
        self.request_token = secrets.token_urlsafe(24)
        self.requests: list[dict[str, str]] = []

    def handle(self, method: str, target: str, auth: str, body: bytes) -> Answer:
        if method != "GET" or auth != f"bearer {self.request_token}":
            return 401, "Unauthorized", {"message": "bad request token"}
        self.requests.append(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query)))
        return 200, "OK", {"count": 1, "value": f"jwt-{len(self.requests)}"}

    @property
    def environ(self) -> dict[str, str]:
        return {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}/token?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.request_token,
        }


@pytest.fixture
def endpoint() -> Iterator[SimulatedTokenEndpoint]:
    with SimulatedTokenEndpoint() as server:
        yield server


def _conflict() -> automation.ConcurrentUpdateError:
    return automation.ConcurrentUpdateError(
        automation.CommandResult(
            "", "error: [409] Conflict: Another update is currently in progress.", 255
        )
    )


class RecordingStack:
    """The part of `automation.Stack` that `AutomationStack` calls, recording each call.

    `conflicts` tries of `up` find the stack locked; `while_locked` are the burst outputs that
    the update holding the lock leaves behind, one per conflict; `after_up` the burst output a
    successful `up` of this run leaves."""

    def __init__(self, burst: dict[str, Any], *, conflicts: int = 0) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.config = {"ecoma:burst": automation.ConfigValue(json.dumps(burst))}
        self.burst_output: dict[str, Any] = {"aws": {"count": 1}}
        self.conflicts = conflicts
        self.while_locked: list[dict[str, Any]] = []
        self.after_up: dict[str, Any] | None = None
        self.failure: automation.CommandError | None = None

    def get_all_config(self) -> dict[str, automation.ConfigValue]:
        return dict(self.config)

    def set_config(self, key: str, value: automation.ConfigValue, path: bool = False) -> None:
        self.calls.append(("set_config", key, value.value, value.secret))

    def outputs(self) -> dict[str, Any]:
        return {"burst": SimpleNamespace(value=self.burst_output)}

    def up(self, **_: Any) -> Any:
        self.calls.append(("up",))
        if self.failure is not None:
            raise self.failure
        if self.conflicts:
            self.conflicts -= 1
            if self.while_locked:
                self.burst_output = self.while_locked.pop(0)
            raise _conflict()
        if self.after_up is not None:
            self.burst_output = self.after_up
        summary = SimpleNamespace(resource_changes={"same": 3})
        return SimpleNamespace(
            summary=summary, outputs={"burst": SimpleNamespace(value=self.burst_output)}
        )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def adapter(
    stack: RecordingStack, environ: dict[str, str], clock: Clock | None = None, **options: Any
) -> AutomationStack:
    clock = clock or Clock()
    return AutomationStack(
        "staging",
        Path(),
        stack=stack,
        environ=environ,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        **options,
    )


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------- a token for every update


def test_simulated_every_update_gets_a_token_requested_just_before_it(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"role_arn": ROLE}})
    backend = adapter(stack, endpoint.environ)
    said: list[str] = []
    backend.up(said.append)
    backend.up(said.append)  # e.g. a drill's teardown, a reap's second pool
    assert stack.calls == [
        ("set_config", AWS_TOKEN_KEY, "jwt-1", True),
        ("up",),
        ("set_config", AWS_TOKEN_KEY, "jwt-2", True),
        ("up",),
    ]
    # The runner's own query is kept; the audience is the one AWS STS expects.
    assert endpoint.requests == [{"api-version": "2.0", "audience": "sts.amazonaws.com"}] * 2
    assert not any("jwt-" in line for line in said)


def test_simulated_no_token_is_asked_outside_a_github_job_or_without_an_aws_role(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    outside = RecordingStack({"aws": {"role_arn": ROLE}})
    adapter(outside, {}).up(lambda _: None)
    no_role = RecordingStack({"aws": {"count": 1}, "gcp": {"count": 0}})
    adapter(no_role, endpoint.environ).up(lambda _: None)
    no_pools = RecordingStack({})
    adapter(no_pools, endpoint.environ).up(lambda _: None)
    assert outside.calls == [("up",)]
    assert no_role.calls == [("up",)]
    assert no_pools.calls == [("up",)]
    assert endpoint.requests == []


def test_simulated_the_token_is_masked_in_a_github_log_and_printed_nowhere_else(
    endpoint: SimulatedTokenEndpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = RecordingStack({"aws": {"role_arn": ROLE}})
    adapter(stack, {**endpoint.environ, "GITHUB_ACTIONS": "true"}).up(lambda _: None)
    assert capsys.readouterr().out == "::add-mask::jwt-1\n"
    adapter(RecordingStack({"aws": {"role_arn": ROLE}}), endpoint.environ).up(lambda _: None)
    assert capsys.readouterr().out == ""


def test_simulated_no_update_runs_without_the_token_it_needs() -> None:
    environ = {
        "ACTIONS_ID_TOKEN_REQUEST_URL": f"http://127.0.0.1:{closed_port()}/token?api-version=2.0",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": secrets.token_urlsafe(24),
    }
    stack = RecordingStack({"aws": {"role_arn": ROLE}})
    with pytest.raises(EcomaError, match="no OIDC token from the runner's OIDC endpoint"):
        adapter(stack, environ).up(lambda _: None)
    assert stack.calls == []


# --------------------------------------------------------------------- the runner's endpoint


def test_from_environment_needs_both_variables() -> None:
    url = "https://token.example/issue?api-version=2.0"
    assert GitHubOidc.from_environment({}) is None
    assert GitHubOidc.from_environment({"ACTIONS_ID_TOKEN_REQUEST_URL": url}) is None
    assert GitHubOidc.from_environment({"ACTIONS_ID_TOKEN_REQUEST_TOKEN": "x"}) is None
    both = {"ACTIONS_ID_TOKEN_REQUEST_URL": url, "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "x"}
    assert isinstance(GitHubOidc.from_environment(both), GitHubOidc)


def test_simulated_endpoint_the_audience_replaces_one_in_the_url(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    url = f"{endpoint.url}/token?api-version=2.0&audience=something-else"
    assert GitHubOidc(url, endpoint.request_token).token(AWS_AUDIENCE) == "jwt-1"
    assert endpoint.requests == [{"api-version": "2.0", "audience": "sts.amazonaws.com"}]


def test_simulated_endpoint_refusal_names_the_status_and_no_secret(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    wrong = secrets.token_urlsafe(24)
    oidc = GitHubOidc(f"{endpoint.url}/token?api-version=2.0", wrong)
    with pytest.raises(EcomaError, match=r"HTTP 401\. Fix: re-run the job") as caught:
        oidc.token(AWS_AUDIENCE)
    assert wrong not in str(caught.value)
    assert repr(oidc) == "GitHubOidc(host='127.0.0.1', request_token=[secret])"


def test_an_unreachable_endpoint_names_its_host_and_no_secret() -> None:
    request_token = secrets.token_urlsafe(24)
    oidc = GitHubOidc(f"http://127.0.0.1:{closed_port()}/token", request_token)
    with pytest.raises(EcomaError, match=r"\(127\.0\.0\.1, audience sts\.amazonaws\.com\)") as err:
        oidc.token(AWS_AUDIENCE)
    assert request_token not in str(err.value)


def test_the_token_endpoint_must_be_https_off_the_loopback() -> None:
    opened: list[Any] = []
    oidc = GitHubOidc("http://token.example/issue", "x", opener=lambda *a, **k: opened.append(a))
    with pytest.raises(EcomaError, match="ACTIONS_ID_TOKEN_REQUEST_URL is not an https URL"):
        oidc.token(AWS_AUDIENCE)
    assert opened == []  # the request token never went out over plain http


# --------------------------------------------------------------------- another update's lock


def test_simulated_an_update_waits_for_another_updates_lock_with_a_fresh_token_each_try(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"role_arn": ROLE}}, conflicts=2)
    clock = Clock()
    backend = adapter(stack, endpoint.environ, clock)
    backend.outputs()  # what the caller planned from
    said: list[str] = []
    summary = backend.up(said.append)
    assert summary.changes == {"same": 3}
    assert [c[0] for c in stack.calls] == ["set_config", "up"] * 3
    assert [c[2] for c in stack.calls if c[0] == "set_config"] == ["jwt-1", "jwt-2", "jwt-3"]
    assert clock.sleeps == [10.0, 20.0]
    assert said == [
        "stack staging is locked by another update: trying again in 10 s",
        "stack staging is locked by another update: trying again in 20 s",
    ]


def test_simulated_the_wait_for_the_lock_is_bounded(endpoint: SimulatedTokenEndpoint) -> None:
    stack = RecordingStack({"aws": {"count": 0}}, conflicts=1000)
    clock = Clock()
    backend = adapter(stack, endpoint.environ, clock, lock_wait=125.0)
    with pytest.raises(EcomaError, match=r"more than 125 s; nothing was applied") as caught:
        backend.up(lambda _: None)
    assert "`pulumi cancel --stack staging`" in str(caught.value)
    assert clock.sleeps == [10.0, 20.0, 30.0, 30.0, 30.0, 5.0]  # the last pause ends at the bound
    assert stack.calls == [("up",)] * 7  # a last try at the bound, then no more


def test_the_default_wait_for_the_lock_is_15_minutes() -> None:
    assert LOCK_WAIT == 15 * 60


def test_simulated_other_pulumi_failures_are_not_retried(endpoint: SimulatedTokenEndpoint) -> None:
    stack = RecordingStack({"aws": {"count": 0}})
    stack.failure = automation.CommandError(
        automation.CommandResult("", "error: quota exceeded", 255)
    )
    clock = Clock()
    with pytest.raises(EcomaError, match=r"(?s)stack staging: pulumi failed: .*quota exceeded"):
        adapter(stack, endpoint.environ, clock).up(lambda _: None)
    assert stack.calls == [("up",)]
    assert clock.sleeps == []


# --------------------------------------------------------------------- no update from a stale plan


def test_simulated_a_plan_made_before_another_update_is_not_applied_after_the_wait(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"count": 0}}, conflicts=1)
    stack.while_locked = [{"aws": {"count": 3}}]  # the update that held the lock grew the pool
    backend = adapter(stack, endpoint.environ)
    backend.outputs()
    with pytest.raises(
        StaleStackError, match=r"changed since this run read it.*nothing was applied"
    ):
        backend.up(lambda _: None)
    assert stack.calls == [("up",)]  # tried once, found it locked; never again


def test_simulated_a_plan_made_before_another_whole_update_is_not_applied(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"role_arn": ROLE, "count": 2}})
    backend = adapter(stack, endpoint.environ)
    backend.outputs()  # the caller plans a scale-down from count 1, then drains for minutes...
    stack.burst_output = {"aws": {"count": 3}}  # ...while another command grew the pool
    with pytest.raises(StaleStackError):
        backend.up(lambda _: None)
    assert stack.calls == []  # no update, and no token asked for one
    assert endpoint.requests == []


def test_simulated_an_unchanged_stack_after_the_wait_is_updated(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"count": 0}}, conflicts=1)
    stack.while_locked = [{"aws": {"count": 1}}]  # the other update changed nothing we read
    backend = adapter(stack, endpoint.environ)
    backend.outputs()
    backend.up(lambda _: None)
    assert stack.calls == [("up",), ("up",)]


def test_simulated_the_runs_own_update_is_what_its_next_update_builds_on(
    endpoint: SimulatedTokenEndpoint,
) -> None:
    stack = RecordingStack({"aws": {"count": 0}})
    backend = adapter(stack, endpoint.environ)
    backend.outputs()
    stack.after_up = {"aws": {"count": 2}}  # the drill's burst
    assert backend.up(lambda _: None).outputs == {"burst": {"aws": {"count": 2}}}
    stack.after_up = {"aws": {"count": 0}}  # the drill's teardown, planned from the burst's result
    backend.up(lambda _: None)
    assert stack.calls == [("up",), ("up",)]
