"""Where the real servers for integration tests come from.

``BRIDGE_TEST_BACKEND``:
- ``local`` (default): the project's own test world (``python -m tests.env up``).
- ``external``: a user's own cluster and brokers, from ``KUBECONFIG``,
  ``KAFKA_BOOTSTRAP_SERVERS`` and ``NATS_URL``.
- ``testcontainers``: Kafka, NATS and K3s containers (needs a reachable Docker engine).

A missing server is an error with a message saying what to do, never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
def testcontainers() -> Iterator[Endpoints]:
    try:
        import docker

        docker.from_env().ping()
    except Exception as exc:
        raise BackendError(
            f"BRIDGE_TEST_BACKEND=testcontainers needs a reachable Docker engine: {exc}"
        ) from exc
    from testcontainers.k3s import K3SContainer
    from testcontainers.kafka import KafkaContainer
    from testcontainers.nats import NatsContainer

    with ExitStack() as stack:
        k3s = stack.enter_context(K3SContainer())
        kafka = stack.enter_context(KafkaContainer().with_kraft())
        nats = stack.enter_context(NatsContainer().with_command("-js"))
        kubeconfig = Path(os.environ.get("TMPDIR", "/tmp")) / "keb-k3s-kubeconfig"
        kubeconfig.write_text(k3s.config_yaml())
        yield Endpoints(
            kubeconfig=kubeconfig,
            kafka_bootstrap_servers=kafka.get_bootstrap_server(),
            nats_url=nats.nats_uri(),
            etcd_endpoints="",
            apiserver_url="",
            ca_file=Path(),
        )
