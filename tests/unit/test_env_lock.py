"""The world lock: concurrent ``tests.env`` operations on one world dir queue, never race
(finding 8 of issue 12: two ``up`` at once started a second kube-apiserver that ``down``
then leaked)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.env import lock
from tests.env.world import SERVICES, World

REPO = Path(__file__).resolve().parents[2]


def _hold_in_child(root: Path, seconds: float, then_delete: bool = False
                   ) -> subprocess.Popen[str]:
    """Another process that takes the lock, says so on stdout, holds it, then releases."""
    code = textwrap.dedent(f"""
        import shutil, sys, time
        from pathlib import Path
        from tests.env.lock import world_lock
        root = Path({str(root)!r})
        with world_lock(root, "child"):
            print("locked", flush=True)
            time.sleep({seconds})
            if {then_delete}:
                shutil.rmtree(root)  # as `down` does, lock file included
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "locked", child.stderr
    return child


def _locked_by_someone(root: Path) -> bool:
    fd = os.open(root / lock.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_second_process_waits_with_a_message(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    child = _hold_in_child(tmp_path, 1.0)
    started = time.monotonic()
    with lock.world_lock(tmp_path, "up"):
        waited = time.monotonic() - started
        assert child.wait(5) == 0  # the holder had finished before we got in
        assert _locked_by_someone(tmp_path)
        assert lock.holder(tmp_path) == f"pid {os.getpid()}: up"
    assert waited > 0.5
    err = capsys.readouterr().err
    assert "up: waiting for the world lock" in err and "child" in err
    assert not _locked_by_someone(tmp_path)


def test_reentrant_in_a_thread_exclusive_between_threads(tmp_path: Path) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def work(n: int) -> None:
        with lock.world_lock(tmp_path, f"t{n}"), lock.world_lock(tmp_path, "nested"):
            if inside:
                overlaps.append(n)
            inside.append(n)
            time.sleep(0.05)
            inside.remove(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == []
    assert not _locked_by_someone(tmp_path)


def test_waiter_locks_the_new_file_when_down_deleted_the_dir(tmp_path: Path) -> None:
    root = tmp_path / "world"
    child = _hold_in_child(root, 0.5, then_delete=True)
    with lock.world_lock(root, "up"):
        assert child.wait(5) == 0
        # the lock we hold is on the file that exists now, so a third party is kept out
        assert (root / lock.LOCK_NAME).exists()
        assert _locked_by_someone(root)


def test_wait_times_out_naming_the_holder(tmp_path: Path) -> None:
    child = _hold_in_child(tmp_path, 3.0)
    try:
        with pytest.raises(TimeoutError, match="child"), \
                lock.world_lock(tmp_path, "up", timeout=0.3):
            pass
    finally:
        child.kill()
        child.wait()


def test_concurrent_up_and_down_never_interleave(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two `up` and a `down` at once (threads; processes are covered above): each
    operation's service starts and stops run as one block, in full (an `up` starts its
    services from worker threads, in any order, under the lock its caller holds)."""
    log: list[str] = []
    monkeypatch.setattr("tests.env.builds.ensure_all", lambda: None)
    monkeypatch.setattr(World, "endpoints", lambda self: None)
    monkeypatch.setattr(World, "_prepare_pki", lambda self: None)

    def start(self: World, service: str, ports: dict[str, int]) -> None:
        log.append(f"start {service}")
        time.sleep(0.01)

    def stop(self: World, service: str) -> None:
        with lock.world_lock(self.root, f"stop {service}"):
            log.append(f"stop {service}")
            time.sleep(0.01)

    monkeypatch.setattr(World, "_start_locked", start)
    monkeypatch.setattr(World, "stop", stop)
    world = World(tmp_path / "world")
    ops = [lambda: world.up(), lambda: world.down(keep_data=True), lambda: world.up()]
    threads = [threading.Thread(target=op) for op in ops]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ups = sorted(f"start {s}" for s in SERVICES)
    downs = [f"stop {s}" for s in reversed(SERVICES)]
    blocks = [log[i:i + len(SERVICES)] for i in range(0, len(log), len(SERVICES))]
    assert sorted(sorted(b) if b[0].startswith("start") else b for b in blocks) == sorted(
        [ups, ups, downs])


def test_down_removes_the_world_and_its_lock(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(World, "stop", lambda self, service: None)
    root = tmp_path / "world"
    World(root).down()
    assert not root.exists()
