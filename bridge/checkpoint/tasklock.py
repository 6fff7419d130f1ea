"""An asyncio lock that the task holding it may take again.

The checkpoint writer holds a store's transaction lock around each flush; delivery of an
exactly-once sink holds it from the start of a transaction to its commit, which is a flush
made by the same task (``bridge.delivery.transactional``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class TaskLock:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._owner: asyncio.Task[Any] | None = None

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold the lock; free (and a no-op) for the task that already holds it."""
        task = asyncio.current_task()
        if task is not None and self._owner is task:
            yield
            return
        async with self._lock:
            self._owner = task
            try:
                yield
            finally:
                self._owner = None
