"""The test world's process bookkeeping survives a killed previous run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tests.env import procs


def test_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    daemon = procs.Daemon("svc", ["/bin/sleep", "30"], tmp_path)
    # a pid file left by a killed run whose pid now belongs to another process (this one)
    daemon.pidfile.write_text(json.dumps({"pid": os.getpid(), "argv": daemon.argv}))
    assert procs.running_pid(daemon) is None
    procs.stop(daemon)  # must not signal the unrelated process
    assert not daemon.pidfile.exists()


def test_start_find_kill(tmp_path: Path) -> None:
    daemon = procs.Daemon("svc", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path)
    pid = procs.start(daemon)
    assert procs.running_pid(daemon) == pid
    assert procs.running_pid(daemon, ["other"]) is None
    procs.kill(daemon)
    assert procs.running_pid(daemon) is None


def test_ports() -> None:
    port = procs.free_port(set())
    assert procs.port_free(port)
    assert not procs.port_open(port)
