"""The test world with every server in a container (``BRIDGE_TEST_BACKEND=testcontainers``).

The same servers, configuration, PKI and readiness checks as ``tests.env.world``; only where
they run differs: each is a container of a locally built image (``tests.env.images``),
started with the ``testcontainers`` package on the host network, so it listens on the same
free loopback ports. The world directory is mounted at its own path, so every command line
and config file of the local world works unchanged; a server's output goes to the same log
file. A container's main process is recorded in the usual pid file (pid as the host sees
it, argv as run in the image), which keeps port bookkeeping and readiness waits as they are.
Stop is a graceful ``docker stop``, kill a SIGKILL, restart a new container on the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from tests.env import docker, images, procs
from tests.env.lock import world_lock
from tests.env.world import World

_STOP_GRACE = 15  # seconds, as procs.stop gives a local server
_LOG_TO_FILE = 'exec "$0" "$@" >>"$KEB_LOG" 2>&1'  # the server replaces the shell: pid 1


def root() -> Path:
    """Next to the local world's directory (``versions.run_root``, which is not created
    here), so both can run at once."""
    local = os.environ.get("KEB_WORLD_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"keb-world-{os.getuid()}")
    path = Path(f"{local}-containers")
    path.mkdir(parents=True, exist_ok=True)
    return path


class ContainerWorld(World):
    def __init__(self, engine: docker.Engine, directory: Path | None = None) -> None:
        super().__init__(directory or root())
        self.engine = engine
        os.environ["DOCKER_HOST"] = engine.host  # for testcontainers' client
        testcontainers_config.ryuk_disabled = True  # its reaper image is in a registry
        self.images = images.servers(engine)
        self.prefix = "keb-" + hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:8]

    def container_name(self, service: str) -> str:
        return f"{self.prefix}-{service}"

    def _image(self, program: str) -> images.ServerImage:
        """The image holding ``program`` (a path on the host or in the image)."""
        for image in self.images.values():
            if any(program in pair for pair in image.paths):
                return image
        raise RuntimeError(f"no test image holds {program}")

    def _daemon(self, service: str, ports: dict[str, int]) -> procs.Daemon:
        daemon = super()._daemon(service, ports)
        argv = self._image(daemon.argv[0]).translate(daemon.argv)
        return procs.Daemon(daemon.name, argv, daemon.workdir, daemon.env)

    def _run_tool(self, argv: list[str], work: Path, log: Path) -> None:
        """A one-shot command in the image of the server whose build it comes from."""
        image = self._image(argv[0])
        container = self._container(image.image, image.translate(argv), log,
                                    f"{self.prefix}-tool-{work.name}")
        container.start()
        try:
            code = container.get_wrapped_container().wait(timeout=300)["StatusCode"]
        finally:
            container.stop()
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"{' '.join(argv[:3])} failed in {image.image} (exit {code}); "
                               f"log {log}:\n{tail}")

    def _container(self, image: str, argv: list[str], log: Path, name: str,
                   env: dict[str, str] | None = None) -> DockerContainer:
        self._remove(name)
        return (DockerContainer(image, network_mode="host", user=f"{os.getuid()}:{os.getgid()}",
                                entrypoint=["/bin/sh", "-c", _LOG_TO_FILE], name=name,
                                working_dir=str(log.parent))
                .with_command(argv)
                .with_envs(**(env or {}), KEB_LOG=str(log))
                .with_volume_mapping(str(self.root), str(self.root), "rw"))

    def _launch(self, daemon: procs.Daemon) -> None:
        """A new container for ``daemon`` (the world's lock is held)."""
        self._remove(self.container_name(daemon.name))
        daemon.pidfile.unlink(missing_ok=True)
        daemon.workdir.mkdir(parents=True, exist_ok=True)
        with open(daemon.logfile, "ab") as log:
            log.write(f"\n==== start {time.strftime('%H:%M:%S')} in a container: "
                      f"{' '.join(daemon.argv)}\n".encode())
        container = self._container(self._image(daemon.argv[0]).image, daemon.argv,
                                    daemon.logfile, self.container_name(daemon.name),
                                    daemon.env).start()
        self._record_pid(daemon, container)

    def _record_pid(self, daemon: procs.Daemon, container: DockerContainer) -> None:
        """The pid file of the server process once the container's shell has exec'd it."""
        wrapped = container.get_wrapped_container()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            wrapped.reload()
            if wrapped.status != "running":
                break
            record = {"pid": int(wrapped.attrs["State"]["Pid"]), "argv": daemon.argv}
            daemon.pidfile.write_text(json.dumps(record))
            if procs.running_pid(daemon) is not None:
                return
            time.sleep(0.05)
        daemon.pidfile.unlink(missing_ok=True)
        raise RuntimeError(f"{daemon.name} container {wrapped.name} did not start its server "
                           f"(status {wrapped.status}).\n{procs.log_tail(daemon)}")

    def _remove(self, name: str, graceful: bool = True) -> None:
        """``docker stop`` (SIGTERM, then SIGKILL after the grace) unless not graceful, then
        ``docker rm --force`` (SIGKILL if still running)."""
        if graceful:
            self.engine.run("stop", "--time", str(_STOP_GRACE), name, check=False,
                            timeout=_STOP_GRACE + 30)
        self.engine.run("rm", "--force", name, check=False, timeout=60)

    def stop(self, service: str) -> None:
        with world_lock(self.root, f"stop {service}"):
            self._remove(self.container_name(service))
            self.daemon_stub(service).pidfile.unlink(missing_ok=True)

    def kill(self, service: str) -> None:
        with world_lock(self.root, f"kill {service}"):
            self._remove(self.container_name(service), graceful=False)
            self.daemon_stub(service).pidfile.unlink(missing_ok=True)
