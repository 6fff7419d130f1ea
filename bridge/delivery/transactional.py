"""Exactly-once delivery into Kafka: a sink's events and the checkpoint in one transaction.

The worker of an exactly-once sink runs transactions, one at a time, under the checkpoint
store's ``exclusive()`` lock (the checkpoint writer takes it around its own flushes too):

1. ``begin()`` opens a transaction on the store's transactional producer (whose
   ``transactional.id`` is stable per checkpoint, so a second instance, a zombie leader or
   a paused process is fenced by the broker);
2. events are sent, batch after batch, until ``max_events`` or ``max_wait``; each batch
   fully accepted is acknowledged (so the streams' committed positions move over it);
   dead letters go into the same transaction;
3. ``commit()`` is a checkpoint flush inside the transaction: the journal segment with the
   moved positions is appended and the transaction committed, so events and positions
   become visible to ``read_committed`` readers together, or not at all.

Any failure before the commit (a transient send error, a fatal producer error such as
``OutOfOrderSequenceNumber``, a timed-out acknowledgement, a failed flush) aborts the
transaction; the store starts a new producer where the old one is unusable, and the
transaction is retried with backoff while the lock stays held, so no other flush can
commit positions whose events were aborted. A retry re-sends what was acknowledged in
the aborted transaction (the same events, in order, not acknowledged twice) before
anything new. A commit whose outcome is unknown is settled by the next ``begin()``: if it
landed, nothing is re-sent. A fenced producer (``FencedError``) ends the task: the daemon
stops sending and saving and exits 1.

Events routed to other sinks as well enter a transaction only once those sinks have
acknowledged them (``ready``), so the positions the transaction commits cover them for
every sink; a sink's queue is taken in order, so per-object order holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from bridge import metrics
from bridge.delivery.worker import SinkProtocolError, SinkWorker
from bridge.errors import BridgeError, FencedError
from bridge.events.event import Event
from bridge.watch.backoff import Backoff
from sinks.base import Sink

log = logging.getLogger(__name__)

Item = tuple[Event, str | None]  # an event and its dead-letter reason (None: send it)


class Transactions(Protocol):
    """The checkpoint store's side (``bridge.checkpoint.kafkastore.KafkaStore``)."""

    def exclusive(self) -> AbstractAsyncContextManager[None]: ...

    async def begin(self) -> bool: ...

    async def abort(self) -> None: ...


@dataclass(frozen=True)
class TransactionPlan:
    """How an exactly-once sink's transactions are run and sized."""

    transactions: Transactions
    commit: Callable[[], Awaitable[None]]  # a checkpoint flush inside the open transaction
    max_events: int = 5000
    max_wait: float = 0.1  # seconds a transaction collects events before its commit


class TransactionAborted(BridgeError):
    """A transaction failed before its commit; it is retried."""


class TransactionalWorker(SinkWorker):
    def __init__(self, sink: Sink, on_acked: Callable[[list[Event]], None], *,
                 plan: TransactionPlan, ready: Callable[[Event], bool]) -> None:
        """``ready``: whether every other sink routed an event has acknowledged it."""
        super().__init__(sink, on_acked)
        self.plan = plan
        self._ready = ready
        self._uncommitted: list[Item] = []  # acknowledged in a transaction that failed
        self._taken: list[Item] = []  # in the open transaction, not yet acknowledged

    def wake(self) -> None:
        """An event may have become ready (another sink acknowledged it)."""
        self._has_work.set()

    async def run(self) -> None:
        while self.protocol_error is None:
            await self._work()
            await self._transaction()
        await asyncio.Event().wait()  # hold everything (see ``SinkWorker.run``)

    async def _work(self) -> None:
        """Until there is something to (re-)send."""
        while not (self._uncommitted or self._taken or self._head_ready()):
            self._has_work.clear()
            await self._has_work.wait()

    def _head_ready(self) -> bool:
        return bool(self._pending) and self._ready(self._pending[0][0])

    async def _transaction(self) -> None:
        """One transaction, retried (holding the lock) until it commits."""
        backoff = Backoff(*self._retry)
        async with self.plan.transactions.exclusive():
            while True:
                try:
                    await self._attempt()
                except FencedError:
                    raise
                except SinkProtocolError as exc:
                    await self.plan.transactions.abort()
                    self._violated(str(exc))
                    return
                except Exception as exc:
                    metrics.transactions.labels(sink=self.name, result="aborted").inc()
                    delay = backoff.next_delay()
                    self._down(f"transaction aborted: {exc}; retrying it in {delay:.1f}s "
                               "(nothing of it is visible to read_committed consumers)")
                    await self.plan.transactions.abort()
                    await asyncio.sleep(delay)
                    continue
                metrics.transactions.labels(sink=self.name, result="committed").inc()
                self._up()
                return

    async def _attempt(self) -> None:
        plan = self.plan
        if await plan.transactions.begin():
            self._uncommitted = []  # the commit in doubt landed: they are delivered
        sent = 0
        if self._uncommitted:  # first what an aborted transaction carried, as it was
            await self._resend(self._uncommitted)
            sent = len(self._uncommitted)
        deadline = time.monotonic() + plan.max_wait
        while sent < plan.max_events:
            if not self._taken:
                self._taken = self._take(plan.max_events - sent)
            if not self._taken:
                if not await self._more_before(deadline):
                    break
                continue
            await self._resend(self._taken)
            sent += len(self._taken)
            self._uncommitted += self._taken
            self._acked([event for event, _ in self._taken])
            self._taken = []
            if time.monotonic() >= deadline:
                break
        await plan.commit()
        metrics.transaction_events.labels(sink=self.name).inc(sent)
        self._uncommitted = []

    def _take(self, limit: int) -> list[Item]:
        """The ready prefix of the queue, at most one send's worth."""
        taken: list[Item] = []
        pending = self._pending
        limit = min(limit, self.sink.settings.batch_size)
        while pending and len(taken) < limit and self._ready(pending[0][0]):
            taken.append(pending.popleft())
        return taken

    async def _more_before(self, deadline: float) -> bool:
        """Wait (until ``deadline``) for a ready event."""
        while not self._head_ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._has_work.clear()
            try:
                await asyncio.wait_for(self._has_work.wait(), left)
            except TimeoutError:
                return False
        return True

    async def _resend(self, items: list[Item]) -> None:
        """Send ``items`` into the open transaction: events, and dead letters for those
        the sink rejects for good; any other failure aborts the transaction."""
        to_send = [event for event, reason in items if reason is None]
        results = iter(await self._send(to_send) if to_send else [])
        for event, reason in items:
            error = next(results) if reason is None else None
            if error is not None and error.transient:
                metrics.events_failed.labels(sink=self.name, transient="true").inc()
                raise TransactionAborted(f"{event.id}: {error}")
            if reason is not None or error is not None:
                why = reason or str(error)
                try:
                    await self.sink.dead_letter(event, why)
                except Exception as exc:
                    raise TransactionAborted(f"dead-lettering {event.id} failed: "
                                             f"{exc!r} (reason: {why})") from exc
                metrics.dead_lettered.labels(sink=self.name, reason="permanent").inc()
