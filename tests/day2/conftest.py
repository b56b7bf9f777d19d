"""The day-2 tests' fixtures: the simulated API server behind the real Kubernetes adapter, a fake
clock and the stand-in playbook runner (day2_doubles.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from day2_doubles import FakeClock, SimulatedPlaybook
from kubernetes import client
from simulated_apiserver import SimulatedApiServer

from ecoma_infra.day2.common import Waits
from ecoma_infra.platforms.kubernetes import KubernetesCluster


@pytest.fixture
def apiserver() -> Iterator[SimulatedApiServer]:
    server = SimulatedApiServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(apiserver: SimulatedApiServer, clock: FakeClock) -> Iterator[KubernetesCluster]:
    api_client = client.ApiClient(client.Configuration(host=apiserver.url))
    yield KubernetesCluster(api_client, poll_interval=2.0, clock=clock, sleep=clock.sleep)
    api_client.close()


@pytest.fixture
def waits(clock: FakeClock) -> Waits:
    return Waits(drain=60.0, ready=120.0, poll=5.0, clock=clock, sleep=clock.sleep)


@pytest.fixture
def playbook(apiserver: SimulatedApiServer) -> SimulatedPlaybook:
    return SimulatedPlaybook(apiserver)
