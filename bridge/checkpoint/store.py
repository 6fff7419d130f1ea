"""The store protocol (bytes in, bytes out) and the periodic saver."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bridge import metrics
from bridge.checkpoint.codec import encode, fingerprint
from bridge.watch.tracker import StreamCheckpoint

log = logging.getLogger(__name__)


class CheckpointStore(Protocol):
    description: str

    async def load(self) -> bytes: ...

    async def save(self, blob: bytes) -> None: ...

    async def close(self) -> None: ...


class Saver:
    """Saves every ``interval`` seconds when something advanced, and on demand at shutdown.
    A failing store is reported loudly (log + metric) and retried; events keep flowing and
    nothing is lost, the checkpoint just stops advancing until the store recovers."""

    def __init__(self, store: CheckpointStore,
                 snapshot: Callable[[], dict[str, StreamCheckpoint]],
                 interval: float = 2.0) -> None:
        self.store = store
        self.snapshot = snapshot
        self.interval = interval
        self._last: object = None
        self.last_success = time.monotonic()
        self.failing = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.save()
            metrics.checkpoint_age.set(time.monotonic() - self.last_success)

    async def save(self) -> bool:
        checkpoints = self.snapshot()
        mark = fingerprint(checkpoints)
        if mark == self._last:
            self.last_success = time.monotonic()
            return True
        blob = encode(checkpoints)  # synchronous: a consistent snapshot
        try:
            await self.store.save(blob)
        except Exception as exc:
            metrics.checkpoint_saves.labels(result="error").inc()
            log.error("CHECKPOINT NOT SAVED to %s: %s. Events keep flowing, but the "
                      "checkpoint is not advancing: a restart now re-sends everything since "
                      "%.0fs ago. Fix the store (disk full? read-only? permissions?).",
                      self.store.description, exc, time.monotonic() - self.last_success)
            self.failing = True
            return False
        if self.failing:
            log.info("checkpoint store %s is writable again", self.store.description)
        self.failing = False
        self._last = mark
        self.last_success = time.monotonic()
        metrics.checkpoint_saves.labels(result="ok").inc()
        return True
