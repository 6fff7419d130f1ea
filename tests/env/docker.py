"""A Docker engine for the tests, and the local base image every test image is built on.

No image registry needs to be reachable:

- ``engine()`` uses ``$DOCKER_HOST`` or the system's engine when one answers; otherwise it
  starts (once, shared by every test run on this machine) a ``dockerd`` of the ``docker.io``
  package with its own socket, data-root and exec-root under ``<cache>/docker``. It runs
  with ``--bridge=none --iptables=false``: containers use ``--network host``, so all
  traffic stays on 127.0.0.1. The data-root keeps images and the build cache between runs.
  It keeps running after the tests (other runs share it); ``python -m tests.env.docker
  stop`` stops it.
- ``base_image()`` is Debian bookworm (minbase + python3, python3-venv, ca-certificates)
  made with ``debootstrap`` once, cached as a tarball in ``<cache>/images`` and imported
  with ``docker import`` whenever the engine lacks it.

An engine that cannot start is an error saying why, never a reason to skip a test.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.env import versions

BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# the tarball and tag name what they hold: a changed package list makes a new base
_BASE_KEY = hashlib.sha1(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()[:8]
BASE_IMAGE = f"keb-base:{BASE_SUITE}-{_BASE_KEY}"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
_START_TIMEOUT = 90.0


class DockerError(RuntimeError):
    """The engine is unreachable or a docker command failed; the message says which."""


@dataclass(frozen=True)
class Engine:
    """A reachable engine and the client that talks to it."""

    client: str
    host: str

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1"}

    def run(self, *args: str, timeout: float = 600, stdin: bytes | None = None,
            check: bool = True) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run([self.client, *args], input=stdin, capture_output=True,
                              env=self.env(), timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:3])} failed (exit {done.returncode}):\n"
                              f"{done.stderr.decode(errors='replace')[-3000:]}")
        return done

    def text(self, *args: str, timeout: float = 600) -> str:
        return self.run(*args, timeout=timeout).stdout.decode().strip()

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False, timeout=30).returncode == 0


def home() -> Path:
    path = versions.cache_root() / "docker"
    path.mkdir(parents=True, exist_ok=True)
    return path


def client() -> str:
    """The ``docker.io`` package's client: it speaks to its engine's built-in BuildKit with
    ``DOCKER_BUILDKIT=1``; a newer client found earlier on PATH (e.g. /usr/local/bin)
    needs the buildx plugin for that, which the package does not ship."""
    for candidate in (shutil.which("docker", path="/usr/bin:/bin"), shutil.which("docker")):
        if candidate:
            return candidate
    raise DockerError("no docker client found: run `make deps` (installs docker.io)")


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(home() / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _answers(candidate: Engine) -> bool:
    try:
        done = candidate.run("version", "--format", "{{.Server.Version}}", timeout=10,
                             check=False)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _run_dir() -> Path:
    """Where the engine's sockets live: ``home()`` unless its path is too long for a unix
    socket (108 bytes, and containerd's sockets go deeper), then a short one in /tmp."""
    if len(str(home())) <= 60:
        return home()
    digest = hashlib.sha1(str(home()).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"keb-docker-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _own_socket() -> Path:
    return _run_dir() / "docker.sock"


def _pidfile() -> Path:
    return home() / "dockerd.pid"


def _log() -> Path:
    return home() / "dockerd.log"


def engine() -> Engine:
    """A reachable engine: ``$DOCKER_HOST`` or the system's if one answers, else our own
    ``dockerd``."""
    docker = client()
    for host in (os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"):
        if host and _answers(Engine(docker, host)):
            return Engine(docker, host)
    own = Engine(docker, f"unix://{_own_socket()}")
    if _answers(own):
        return own
    with _locked("dockerd"):
        if not _answers(own):
            _start_dockerd(own)
    return own


def _start_dockerd(own: Engine) -> None:
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/sbin")
    if dockerd is None:
        raise DockerError("dockerd not found: run `make deps` (installs docker.io)")
    _stop_dockerd()  # a stale one that no longer answers
    argv = [
        dockerd, f"--host=unix://{_own_socket()}", f"--data-root={home() / 'data'}",
        f"--exec-root={_run_dir() / 'exec'}", f"--pidfile={_pidfile()}",
        "--bridge=none", "--iptables=false", "--ip6tables=false", "--log-level=warn",
    ]
    print(f"[env] starting dockerd (log: {_log()})", file=sys.stderr, flush=True)
    with open(_log(), "ab") as log:
        log.write(f"\n==== start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + _START_TIMEOUT
    while not _answers(own):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(_log().read_text(errors="replace").splitlines()[-25:])
            state = (f"exited with {proc.returncode}" if proc.poll() is not None
                     else f"not answering after {_START_TIMEOUT:.0f}s")
            raise DockerError(f"the Docker engine could not start: dockerd {state}; "
                              f"log {_log()}:\n{tail}")
        time.sleep(0.3)


def _stop_dockerd() -> bool:
    try:
        pid = int(_pidfile().read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return False
    if b"dockerd" not in cmdline:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    return True


def stop() -> bool:
    """Stop our own dockerd (never one we did not start); True if one was running."""
    with _locked("dockerd"):
        return _stop_dockerd()


# ---- the local base image ------------------------------------------------------------------


def _base_tarball() -> Path:
    path = versions.cache_root() / "images" / f"keb-base-{BASE_SUITE}-{_BASE_KEY}.tar"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _debootstrap(tarball: Path) -> None:
    tool = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if tool is None:
        raise DockerError("debootstrap not found: run `make deps` (installs debootstrap)")
    rootfs = tarball.parent / f"rootfs-{BASE_SUITE}.tmp"
    shutil.rmtree(rootfs, ignore_errors=True)
    log = tarball.parent / f"debootstrap-{BASE_SUITE}.log"
    print(f"[env] building the base image with debootstrap (first time only; log: {log})",
          file=sys.stderr, flush=True)
    with open(log, "w") as out:
        done = subprocess.run(
            [tool, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE,
             str(rootfs)], stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise DockerError(f"debootstrap failed (exit {done.returncode}); log {log}:\n{tail}")
    shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True,
                   timeout=600)
    partial.rename(tarball)
    shutil.rmtree(rootfs, ignore_errors=True)


def base_image(docker: Engine) -> str:
    """``BASE_IMAGE`` in ``docker``: imported from the cached tarball, which is made with
    debootstrap the first time."""
    if docker.has_image(BASE_IMAGE):
        return BASE_IMAGE
    with _locked("base-image"):
        if docker.has_image(BASE_IMAGE):
            return BASE_IMAGE
        tarball = _base_tarball()
        if not tarball.exists():
            _debootstrap(tarball)
        docker.run("import", "--change", "CMD [\"/bin/bash\"]", str(tarball), BASE_IMAGE,
                   timeout=900)
    return BASE_IMAGE


# ---- builds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One ``docker build`` (BuildKit, host network, the host's CA bundle as a secret)."""

    tag: str
    context: Path
    dockerfile: Path | None = None
    args: tuple[tuple[str, str], ...] = ()


def build(docker: Engine, spec: Build) -> str:
    """Build ``spec`` (layers cached in the engine's data-root); the id of the image built
    (the tag alone could be moved meanwhile by a build from another checkout)."""
    source = (spec.dockerfile or spec.context).resolve()  # one log per checkout and image
    checkout = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    stem = f"{spec.tag.replace('/', '_').replace(':', '_')}-{checkout}"
    log = home() / "builds" / f"{stem}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    iidfile = log.with_suffix(".iid")
    argv = ["build", "--network=host", "--progress=plain", "--tag", spec.tag,
            "--iidfile", str(iidfile)]
    if HOST_CA_BUNDLE.exists():  # pip trusts what the host trusts (e.g. a proxy's CA)
        argv += ["--secret", f"id=cacert,src={HOST_CA_BUNDLE}"]
    if spec.dockerfile is not None:
        argv += ["--file", str(spec.dockerfile)]
    for key, value in spec.args:
        argv += ["--build-arg", f"{key}={value}"]
    with open(log, "wb") as out:
        done = subprocess.run([docker.client, *argv, str(spec.context)], env=docker.env(),
                              stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise DockerError(f"docker build of {spec.tag} failed (exit {done.returncode}); "
                          f"log {log}:\n{tail}")
    return iidfile.read_text().strip()


def main(argv: list[str]) -> int:
    """``python -m tests.env.docker up|stop``: start (and print) or stop our engine."""
    try:
        if argv == ["up"]:
            docker = engine()
            base_image(docker)
            print(f"export DOCKER_HOST={docker.host}")
        elif argv == ["stop"]:
            print("stopped" if stop() else "not running")
        else:
            print("usage: python -m tests.env.docker up|stop", file=sys.stderr)
            return 2
    except DockerError as exc:
        print(f"tests.env.docker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
