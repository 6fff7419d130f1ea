"""`python -m tests.env up` is idempotent and recovers from killed daemons."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.env import procs
from tests.env.world import World


def _up() -> tuple[str, float]:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tests.env", "up"], capture_output=True,
                         text=True, check=True, timeout=600)
    return out.stdout, time.monotonic() - started


def test_up_twice_is_idempotent_and_fast(world: World) -> None:
    first, _ = _up()
    second, seconds = _up()
    assert first == second
    assert "export KUBECONFIG=" in first and "export NATS_URL=" in first
    assert seconds < 30


def test_up_recovers_after_kill_9(world: World) -> None:
    before, _ = _up()
    creds = world.endpoints().nats_secure_creds_file.read_text()
    killed = ("nats", "kafka", "kafka-secure", "nats-operator")
    for service in killed:
        world.kill(service)
        assert procs.running_pid(world.daemon_stub(service)) is None
    after, _ = _up()
    assert after == before  # same ports, same credentials
    assert world.endpoints().nats_secure_creds_file.read_text() == creds
    for service in killed:
        assert procs.running_pid(world.daemon_stub(service)) is not None
