"""One operation at a time per world directory: ``fcntl.flock`` on ``<world>/.lock``.

Two ``python -m tests.env up`` at once on one world dir used to start a second
kube-apiserver (both saw "not running" and started one; the pid file then named only the
last, and ``down`` leaked the other). Every mutating operation (up, down, gap, start, stop,
kill, restart) now holds the lock from its first check to its last pid-file write; a second
invocation waits for it, saying who holds it, instead of racing.

- Across processes: ``flock`` (released by the kernel when the holder dies, so a killed run
  never leaves a stale lock).
- Across threads of one process: a per-directory ``RLock`` in front of the ``flock`` (two
  descriptors of one file conflict even inside one process), which also makes the lock
  re-entrant for nested operations (``up`` -> ``start``, ``gap`` -> ``restart``).
- ``down`` deletes the world dir, lock file included, while holding the lock: a waiter
  that then gets the lock on the deleted file notices (its descriptor's inode is no longer
  the path's) and locks the current file instead.
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".lock"
WAIT_TIMEOUT = float(os.environ.get("KEB_WORLD_LOCK_TIMEOUT", "3600"))  # a first build: ~15 min
_POLL = 0.1
_REMIND = 30.0  # seconds between "still waiting" messages


@dataclass
class _Held:
    rlock: threading.RLock
    fd: int = -1
    depth: int = 0


_HELD: dict[str, _Held] = {}
_HELD_GUARD = threading.Lock()


def _state(root: Path) -> _Held:
    key = os.path.abspath(root)
    with _HELD_GUARD:
        return _HELD.setdefault(key, _Held(threading.RLock()))


def holder(root: Path) -> str:
    """What the lock file says about its current holder ("" when unknown)."""
    try:
        return (root / LOCK_NAME).read_text().strip()
    except OSError:
        return ""


def _try_flock(root: Path) -> int | None:
    """Lock the current ``<root>/.lock``; its descriptor, or None if another holds it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        same = os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        same = False
    if not same:  # the dir was deleted (``down``) between our open and our lock: retry
        os.close(fd)
        return _try_flock(root)
    return fd


@contextmanager
def world_lock(root: Path, operation: str, timeout: float | None = None) -> Iterator[None]:
    """Hold the world lock of ``root`` for ``operation`` (re-entrant in one thread)."""
    state = _state(root)
    with state.rlock:
        if state.depth == 0:
            state.fd = _acquire(root, operation, WAIT_TIMEOUT if timeout is None else timeout)
        state.depth += 1
        try:
            yield
        finally:
            state.depth -= 1
            if state.depth == 0:
                fd, state.fd = state.fd, -1
                os.close(fd)  # releases the flock


def _acquire(root: Path, operation: str, timeout: float) -> int:
    started = time.monotonic()
    reminded = 0.0
    while True:
        fd = _try_flock(root)
        if fd is not None:
            break
        waited = time.monotonic() - started
        if reminded == 0.0 or waited - reminded >= _REMIND:
            reminded = max(waited, 1e-9)
            print(f"[env] {operation}: waiting for the world lock on {root} "
                  f"(held by {holder(root) or 'another process'}; {waited:.0f}s so far)",
                  file=sys.stderr, flush=True)
        if waited > timeout:
            raise TimeoutError(
                f"world lock on {root} still held by {holder(root) or 'another process'} "
                f"after {timeout:.0f}s; is a `tests.env` operation stuck?")
        time.sleep(_POLL)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {operation}\n".encode(), 0)
    return fd
