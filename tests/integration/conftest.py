"""Session fixtures backed by real servers (see tests/backends.py for where they come from)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests import backends
from tests.env import procs
from tests.env.world import Endpoints, World

_LOCAL_WORLD: list[World] = []


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    try:
        name = backends.backend_name()
        if name == "local":
            found, world = backends.local()
            _LOCAL_WORLD.append(world)
            yield found
            if os.environ.get("KEB_WORLD_OWN"):  # a parallel worker's own world
                world.down()
        elif name == "external":
            yield backends.external()
        else:
            with backends.testcontainers() as (found, world):
                _LOCAL_WORLD.append(world)
                yield found
    except backends.BackendError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def world(endpoints: Endpoints) -> World:
    """The local world itself, for tests that stop, restart or compact servers."""
    if not _LOCAL_WORLD:
        pytest.fail(
            "this test controls the servers (stop/restart/gap) and needs "
            "BRIDGE_TEST_BACKEND=local or testcontainers",
            pytrace=False,
        )
    return _LOCAL_WORLD[0]


@pytest.fixture(scope="session")
def kube(endpoints: Endpoints) -> k8s.ApiClient:
    """An admin client of the official library, for arranging test state (not the bridge)."""
    return k8s_config.new_client_from_config(config_file=str(endpoints.kubeconfig))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LOCAL_WORLD and "endpoints" in getattr(item, "fixturenames", ()):
        for daemon in _LOCAL_WORLD[0].daemons():
            report.sections.append((f"log {daemon.name}", procs.log_tail(daemon, 25)))
