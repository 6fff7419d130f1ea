"""Deltas in, CloudEvents out to every routed sink; a delta is acked (and so may enter the
checkpoint) only when every sink it was routed to has acknowledged it (Benthos-style acks
travelling back to the input)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Protocol

from bridge import metrics
from bridge.delivery.router import matches
from bridge.delivery.size import SizePolicy
from bridge.delivery.worker import SinkWorker
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.watch.delta import Delta
from sinks.base import Sink


class DeltaSource(Protocol):
    def __aiter__(self) -> AsyncIterator[Delta]: ...

    def ack(self, delta: Delta) -> None: ...


class Delivery:
    def __init__(self, source: DeltaSource, builder: EventBuilder, sinks: list[Sink],
                 policy: SizePolicy | None = None) -> None:
        self.source = source
        self.builder = builder
        self.policy = policy or SizePolicy()
        self.workers = [SinkWorker(sink, self._acked) for sink in sinks]
        self._remaining: dict[Event, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.in_flight.set_function(lambda: len(self._remaining))

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(w.run(), name=f"sink {w.name}")
                       for w in self.workers]
        self._tasks.append(asyncio.create_task(self._dispatch_all(), name="dispatch"))

    async def _dispatch_all(self) -> None:
        async for delta in self.source:
            self.dispatch(delta)

    def dispatch(self, delta: Delta) -> None:
        event, dead_letter_reason = self.policy.apply(self.builder.build(delta))
        targets = [w for w in self.workers if matches(w.sink.settings.filter, event)]
        if not targets:
            self.source.ack(delta)
            return
        self._remaining[event] = len(targets)
        self._idle.clear()
        for worker in targets:
            worker.queue.put_nowait((event, dead_letter_reason))

    def _acked(self, event: Event) -> None:
        left = self._remaining[event] - 1
        if left:
            self._remaining[event] = left
            return
        del self._remaining[event]
        metrics.lag.observe(max(0.0, time.time() - event.delta.observed_at))
        self.source.ack(event.delta)
        if not self._remaining:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._remaining)

    def sinks_down(self) -> list[str]:
        """Sinks failing, stalled on acknowledgements, or reporting themselves unhealthy."""
        return [w.name for w in self.workers
                if w.failing_since is not None or w.stalled or not w.sink.healthy]

    async def drain(self) -> bool:
        """Wait until everything dispatched is acknowledged (used at shutdown)."""
        await self._idle.wait()
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.workers:
            await worker.sink.close()
