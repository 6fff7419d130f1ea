"""The in-flight window: how many recorded changes may be unacknowledged at once.

Reflectors take room for a whole network read at a time (so a read's events are applied
without awaiting in between) and give back what they did not use; delivery gives room back
as changes are acknowledged. A read is admitted whenever the window is not full, so it may
overshoot the limit by at most one read per stream and can never deadlock on a read that is
larger than the window.
"""

from __future__ import annotations

import asyncio


class Window:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._room = asyncio.Event()
        self._room.set()

    async def acquire(self, count: int) -> None:
        """Wait until the window is not full, then take ``count`` (cancel-safe: nothing is
        taken unless this returns)."""
        while self.used >= self.limit:
            self._room.clear()
            await self._room.wait()
        self.used += count

    def release(self, count: int) -> None:
        self.used -= count
        if self.used < self.limit:
            self._room.set()
