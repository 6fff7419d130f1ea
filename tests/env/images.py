"""The images the tests run, all built locally on ``docker.base_image()`` (no registry).

- ``bridge()``: the project's own ``Dockerfile`` with ``BASE`` set to the local base.
- ``server(name)``: the test world's servers (etcd, kube-apiserver, Kafka, nats-server) from
  the binaries and jars ``tests.env.builds`` caches, each with a Dockerfile in
  ``tests/images/<name>/``; ``server_path`` maps a host path of those builds to where the
  image holds it, so a world command line runs unchanged inside its container.

Every build goes through the engine's layer cache: a warm rebuild takes about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.env import builds, docker, versions

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "tests" / "images"
BRIDGE_TAG = "keb-test/kube-event-bridge:local"


def bridge(engine: docker.Engine) -> str:
    """The image id (not the tag, which a build from another checkout may move)."""
    base = docker.base_image(engine)
    return docker.build(engine, docker.Build(BRIDGE_TAG, ROOT, args=(("BASE", base),)))


@dataclass(frozen=True)
class ServerImage:
    """A server's image and where it holds what the world's command line names on the host."""

    image: str  # the id
    paths: tuple[tuple[str, str], ...]  # (host path, path in the image)

    def translate(self, argv: list[str]) -> list[str]:
        out = []
        for arg in argv:
            for host, inside in self.paths:
                arg = arg.replace(host, inside)
            out.append(arg)
        return out


@contextmanager
def _context(files: dict[str, Path]) -> Iterator[Path]:
    """A build context holding just ``files`` (hard links into the build cache), private
    to this build."""
    parent = docker.home() / "contexts"
    parent.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        context = Path(tmp)
        for target, source in files.items():
            if source.is_dir():
                shutil.copytree(source, context / target, copy_function=_link)
            else:
                _link(str(source), str(context / target))
        yield context


def _link(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def _binary(engine: docker.Engine, base: str, name: str, binary: Path, tag: str) -> ServerImage:
    with _context({name: binary.resolve()}) as context:
        image = docker.build(engine, docker.Build(
            tag, context, IMAGES / "binary" / "Dockerfile", (("BASE", base), ("BINARY", name))))
    return ServerImage(image, ((str(binary), f"/usr/local/bin/{name}"),))


def _kafka(engine: docker.Engine, base: str) -> ServerImage:
    libs = builds.kafka_libs()
    with _context({"libs": libs}) as context:
        image = docker.build(engine, docker.Build(
            f"keb-test/kafka:{versions.KAFKA}", context, IMAGES / "kafka" / "Dockerfile",
            (("BASE", base),)))
    return ServerImage(image, ((str(builds.java()), "/usr/bin/java"),
                               (str(libs), "/opt/kafka/libs")))


def servers(engine: docker.Engine) -> dict[str, ServerImage]:
    """An image for each service of the test world (``tests.env.world.SERVICES``)."""
    base = docker.base_image(engine)
    return {
        "etcd": _binary(engine, base, "etcd", builds.etcd(), f"keb-test/etcd:v{versions.ETCD}"),
        "kube-apiserver": _binary(engine, base, "kube-apiserver", builds.kube_apiserver(),
                                  f"keb-test/kube-apiserver:v{versions.KUBERNETES}"),
        "kafka": _kafka(engine, base),
        "nats": _binary(engine, base, "nats-server", builds.nats_server(),
                        "keb-test/nats-server:local"),
    }
