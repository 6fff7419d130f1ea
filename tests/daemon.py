"""Run ``kube-event-bridge run`` as a real process (for end-to-end and chaos tests)."""

from __future__ import annotations

import atexit
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.env.procs import port_open


def write_config(path: Path, **config: Any) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


_STARTED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """Bridges a failed or timed-out test left running die with the test session."""
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()


@dataclass
class BridgeProcess:
    config: Path
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        out = open(self.log, "ab")
        out.write(f"\n==== start #{self.starts}\n".encode())
        out.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        _STARTED.append(self.proc)
        out.close()

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"bridge exited with {self.proc.returncode}:\n"
                                     f"{self.tail()}")
            if self.get("/readyz")[0] == 200:
                return
            time.sleep(0.1)
        raise AssertionError(f"bridge not ready after {timeout}s:\n{self.tail()}")

    def sigterm(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def restartable_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 on Linux): a bridge that is
    killed and restarted binds it again, and meanwhile no outgoing connection can take it."""
    while True:
        port = random.randrange(20_000, 32_000)
        if port_open(port, timeout=0.1):
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def bridge(tmp: Path, **config: Any) -> BridgeProcess:
    port = restartable_port()
    config.setdefault("http", {"port": port, "address": "127.0.0.1"})
    config.setdefault("checkpoint", {"store": "file", "path": str(tmp / "checkpoint"),
                                     "interval": 0.5})
    path = write_config(tmp / "bridge.yaml", **config)
    return BridgeProcess(path, port, tmp / "bridge.log")
