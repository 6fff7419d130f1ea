"""Start, find and stop the world's daemons by pid file, robust to a killed previous run.

A pid file records the pid and the exact argv; a process counts as ours only when it is
alive *and* its /proc cmdline still equals that argv (so a recycled pid is never killed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Daemon:
    name: str
    argv: list[str]
    workdir: Path
    env: dict[str, str] | None = None

    @property
    def pidfile(self) -> Path:
        return self.workdir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.workdir / f"{self.name}.log"


def _cmdline(pid: int) -> list[str] | None:
    """The process's argv, or None if it does not exist or is a zombie.

    Right after exec the kernel briefly shows an empty cmdline, so an empty answer is
    re-read for a moment before it counts as "not running"."""
    for _ in range(50):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if raw:
            return raw.rstrip(b"\0").decode(errors="replace").split("\0")
        time.sleep(0.01)
    return None  # a zombie or kernel thread


def running_pid(daemon: Daemon, argv: list[str] | None = None) -> int | None:
    """The pid of ``daemon`` if it runs with ``argv`` (default: whatever argv it recorded)."""
    try:
        record = json.loads(daemon.pidfile.read_text())
    except (OSError, ValueError):
        return None
    pid = int(record["pid"])
    want = argv if argv is not None else record["argv"]
    if _cmdline(pid) == want and record["argv"] == want:
        return pid
    return None


def start(daemon: Daemon) -> int:
    daemon.workdir.mkdir(parents=True, exist_ok=True)
    with open(daemon.logfile, "ab") as log:
        log.write(f"\n==== start {time.strftime('%H:%M:%S')}: {' '.join(daemon.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            daemon.argv,
            cwd=daemon.workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=daemon.env,
            start_new_session=True,
        )
    daemon.pidfile.write_text(json.dumps({"pid": proc.pid, "argv": daemon.argv}))
    return proc.pid


def stop(daemon: Daemon, grace: float = 15.0, sig: int = signal.SIGTERM) -> None:
    pid = running_pid(daemon)
    if pid is not None:
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _cmdline(pid) is not None:
            _reap(pid)
            time.sleep(0.1)
        if _cmdline(pid) is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _cmdline(pid) is not None:
                _reap(pid)
                time.sleep(0.05)
    daemon.pidfile.unlink(missing_ok=True)


def kill(daemon: Daemon) -> None:
    """SIGKILL, as a crash would."""
    stop(daemon, grace=0.0, sig=signal.SIGKILL)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(avoid: set[int]) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    daemon: Daemon, ready: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``ready`` until true; fail with the daemon's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if running_pid(daemon) is None:
            raise RuntimeError(f"{daemon.name} exited while starting ({what}).\n{log_tail(daemon)}")
        time.sleep(0.2)
    raise RuntimeError(
        f"{daemon.name} not ready after {timeout:.0f}s ({what}).\n{log_tail(daemon)}")


def log_tail(daemon: Daemon, lines: int = 40) -> str:
    try:
        text = daemon.logfile.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {daemon.logfile})"
    return f"--- last {len(text)} lines of {daemon.logfile} ---\n" + "\n".join(text)
