"""Where the real servers for integration tests come from.

``BRIDGE_TEST_BACKEND``:
- ``local`` (default): the project's own test world (``python -m tests.env up``).
- ``external``: a user's own cluster and brokers, from ``KUBECONFIG``,
  ``KAFKA_BOOTSTRAP_SERVERS`` and ``NATS_URL``.
- ``testcontainers``: the same servers as ``local``, each in a container of an image built
  here from the world's cached builds on a local base image (no registry), started with the
  ``testcontainers`` package on the host network (``tests.env.containers``). The Docker
  engine is started when none runs (``tests.env.docker``).

A missing server is an error with a message saying what to do, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.env.world import Endpoints, World


class BackendError(RuntimeError):
    pass


def backend_name() -> str:
    name = os.environ.get("BRIDGE_TEST_BACKEND", "local")
    if name not in ("local", "external", "testcontainers"):
        raise BackendError(
            f"BRIDGE_TEST_BACKEND={name!r} is not one of local, external, testcontainers"
        )
    return name


def local() -> tuple[Endpoints, World]:
    world = World()
    return world.up(), world


def external() -> Endpoints:
    missing = [v for v in ("KUBECONFIG", "KAFKA_BOOTSTRAP_SERVERS", "NATS_URL")
               if not os.environ.get(v)]
    if missing:
        raise BackendError(
            f"BRIDGE_TEST_BACKEND=external needs {', '.join(missing)} in the environment "
            "(the addresses of your own cluster and brokers)"
        )
    kubeconfig = Path(os.environ["KUBECONFIG"])
    return Endpoints(
        kubeconfig=kubeconfig,
        kafka_bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"],
        nats_url=os.environ["NATS_URL"],
        etcd_endpoints=os.environ.get("ETCD_ENDPOINTS", ""),
        apiserver_url="",
        ca_file=Path(),
        **Endpoints.secured_from(os.environ),  # the secured brokers, when exported too
    )


@contextmanager
def testcontainers() -> Iterator[tuple[Endpoints, World]]:
    """The container world, up for the session and removed with its data afterwards."""
    from tests.env import containers, docker

    try:
        engine = docker.engine()
    except docker.DockerError as exc:
        raise BackendError(
            f"BRIDGE_TEST_BACKEND=testcontainers needs a Docker engine: {exc}"
        ) from exc
    world = containers.ContainerWorld(engine)
    try:
        yield world.up(), world
    finally:
        world.down()
