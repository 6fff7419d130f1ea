"""The delta queue: where every stream's deltas wait for the consumer, under the window.

Reflectors ``reserve`` room for a read, then ``push`` what they recorded (giving back the room
they did not use); the consumer iterates (each iteration takes *everything* ready, as one list,
so it can build and commit a group at once; each stream's deltas keep their order) and
``ack``s deltas once they are durably delivered, which advances the streams' trackers and
frees room in the window (backpressure: at most ``max_in_flight`` unacknowledged changes,
plus one read per stream).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from itertools import chain

from bridge.watch.delta import Delta
from bridge.watch.trackers import Trackers
from bridge.watch.window import Window


class DeltaQueue:
    def __init__(self, max_in_flight: int, trackers: Trackers) -> None:
        self._trackers = trackers
        self._window = Window(max_in_flight)
        self._ready: deque[list[Delta]] = deque()  # bounded by the window
        self._has_ready = asyncio.Event()

    # ---- the reflectors' side (``reflector.Outlet``) ----------------------------------------

    async def reserve(self, count: int) -> None:
        if self._ready:  # let the consumer take what waits first: parsed objects kept alive
            await asyncio.sleep(0)  # across many reads make parsing and allocation slower
        await self._window.acquire(count)

    def push(self, deltas: list[Delta], unused: int) -> None:
        if unused:
            self._window.release(unused)
        if deltas:
            self._ready.append(deltas)
            self._has_ready.set()

    # ---- the consumer's side ---------------------------------------------------------------

    async def batches(self) -> AsyncIterator[list[Delta]]:
        """Everything ready, as one list per iteration (per-stream order kept)."""
        ready = self._ready
        while True:
            while not ready:
                self._has_ready.clear()
                await self._has_ready.wait()
            if len(ready) == 1:
                yield ready.popleft()
            else:
                batch = list(chain.from_iterable(ready))
                ready.clear()
                yield batch

    def ack(self, deltas: Sequence[Delta]) -> None:
        self._trackers.ack(deltas)
        self._window.release(len(deltas))

    @property
    def queued(self) -> int:
        """Deltas pushed and not yet taken by the consumer."""
        return sum(len(batch) for batch in self._ready)
