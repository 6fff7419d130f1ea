"""Deltas in, CloudEvents out to every routed sink; a delta is acked (and so may enter the
checkpoint) only when every sink it was routed to has acknowledged it (Benthos-style acks
travelling back to the input). Deltas arrive, and acks travel back, in batches.

An exactly-once sink's worker (``bridge.delivery.transactional``) takes an event only once
every other sink it is routed to has acknowledged it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from bridge import metrics
from bridge.delivery.router import matches
from bridge.delivery.size import SizePolicy
from bridge.delivery.transactional import TransactionalWorker, TransactionPlan
from bridge.delivery.worker import SinkWorker
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.supervision import Supervisor
from bridge.watch.delta import Delta
from sinks.base import RouteFilter, Sink


class DeltaSource(Protocol):
    def __aiter__(self) -> AsyncIterator[list[Delta]]: ...

    def ack(self, deltas: Sequence[Delta]) -> None: ...


class Delivery:
    def __init__(self, source: DeltaSource, builder: EventBuilder, sinks: list[Sink],
                 policy: SizePolicy | None = None, *,
                 durable: Callable[[], Awaitable[None]] | None = None,
                 exactly_once: dict[str, TransactionPlan] | None = None) -> None:
        """``durable``: awaited before each dispatch; returns once every change recorded so
        far is in the checkpoint journal (nothing leaves the process unjournaled).
        ``exactly_once``: sink name -> how its transactions run."""
        self.source = source
        self._durable = durable
        self.builder = builder
        self.policy = policy or SizePolicy()
        plans = exactly_once or {}
        self._committers: list[TransactionalWorker] = [
            TransactionalWorker(sink, self._acked, plan=plans[sink.settings.name],
                                ready=self._ready)
            for sink in sinks if sink.settings.name in plans]
        by_name = {w.name: w for w in self._committers}
        self.workers: list[SinkWorker] = [by_name.get(sink.settings.name)
                                          or SinkWorker(sink, self._acked) for sink in sinks]
        self._routes: list[RouteFilter | None] = [  # None: the sink takes everything
            _route(w.sink.settings.filter) for w in self.workers]
        self._remaining: dict[Event, int] = {}  # events routed to several sinks: acks owed
        self._in_flight = 0
        self._own: Supervisor | None = None
        self._held = 0  # deltas the dispatcher holds while their journal write completes
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.in_flight.set_function(lambda: self._in_flight)

    async def start(self, supervisor: Supervisor | None = None) -> None:
        """The workers and the dispatcher run as daemon-level tasks owned by ``supervisor``
        (the daemon's: one that ends is fatal), or by one of their own."""
        if supervisor is None:
            supervisor = self._own = Supervisor()  # stopped by ``stop``
        for worker in self.workers:
            supervisor.spawn(worker.run(), name=f"sink {worker.name}")
        supervisor.spawn(self._dispatch_all(), name="dispatch")

    async def _dispatch_all(self) -> None:
        durable = self._durable
        async for deltas in self.source:
            if durable is not None:
                self._held = len(deltas)
                await durable()
                self._held = 0
            self.dispatch(deltas)

    def dispatch(self, deltas: Sequence[Delta]) -> None:
        routed: list[list[tuple[Event, str | None]]] = [[] for _ in self.workers]
        unrouted: list[Delta] = []
        build, apply = self.builder.build, self.policy.apply
        for delta in deltas:
            item = event, _ = apply(build(delta))
            delta.release()
            targets = 0
            for route, items in zip(self._routes, routed, strict=True):
                if route is None or matches(route, event):
                    items.append(item)
                    targets += 1
            if targets > 1:
                self._remaining[event] = targets
            elif not targets:
                unrouted.append(delta)
        self._in_flight += len(deltas) - len(unrouted)
        if self._in_flight:
            self._idle.clear()
        for worker, items in zip(self.workers, routed, strict=True):
            if items:
                worker.submit(items)
        if unrouted:
            self.source.ack(unrouted)

    def _ready(self, event: Event) -> bool:
        """Only one acknowledgement (an exactly-once sink's own) is still owed."""
        return self._remaining.get(event, 1) == 1

    def _acked(self, events: list[Event]) -> None:
        done: list[Delta] = []
        remaining = self._remaining
        for event in events:
            left = remaining.pop(event, 1) - 1
            if left:
                remaining[event] = left
            else:
                done.append(event.delta)
        if self._committers and len(done) < len(events):
            for committer in self._committers:
                committer.wake()
        if not done:
            return
        self._in_flight -= len(done)
        metrics.lag.observe(max(0.0, time.time() - done[0].observed_at))  # the batch's oldest
        self.source.ack(done)
        if not self._in_flight:
            self._idle.set()

    @property
    def in_flight(self) -> int:
        """Handed to sinks and not yet acknowledged, or waiting for their journal write."""
        return self._in_flight + self._held

    def sinks_down(self) -> list[str]:
        """Names of the sinks that are down (``SinkWorker.down_reason`` says why): failing,
        stalled on acknowledgements, unhealthy, unable to dead-letter, or stopped for good
        after breaking the sink protocol."""
        return [w.name for w in self.workers if w.down]

    def down_reasons(self) -> dict[str, str]:
        """Each down sink's ``down_reason``."""
        return {w.name: reason for w in self.workers if (reason := w.down_reason) is not None}

    async def drain(self) -> bool:
        """Wait until everything dispatched is acknowledged (used at shutdown)."""
        await self._idle.wait()
        return True

    async def stop(self) -> None:
        """Stop the tasks (unless the daemon's supervisor owns them) and close the sinks."""
        if self._own is not None:
            await self._own.stop()
        for worker in self.workers:
            await worker.sink.close()


def _route(route: RouteFilter) -> RouteFilter | None:
    return route if route.types or route.kinds or route.namespaces else None
