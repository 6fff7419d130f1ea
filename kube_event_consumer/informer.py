"""The informer: reads a source, keeps the view, calls handlers, commits after them."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NamedTuple

from kube_event_consumer.errors import ConsumerError, DecodeError, HandlerError
from kube_event_consumer.event import ChangeType, Event, ObjectKey, Tombstone
from kube_event_consumer.order import Verdict
from kube_event_consumer.source import Message, Source
from kube_event_consumer.view import View


@dataclass(frozen=True, slots=True)
class Change:
    """A transition of the view, as handlers see it. ``event`` is the change (for a Kafka
    tombstone: the object's last event); ``previous`` the event the view held before (None
    for an add); ``replayed``: an earlier run already handled it (it was before the
    committed position) and it is handed out again while the view is rebuilt."""

    type: ChangeType
    event: Event
    previous: Event | None
    replayed: bool

    @property
    def object(self) -> dict[str, Any]:
        return self.event.object

    @property
    def key(self) -> ObjectKey:
        return self.event.key


class Anomaly(NamedTuple):
    """Reported to ``on_anomaly``. ``out_of_order``: an event older than the state held,
    sent before it (not applied); ``gap``: after the backlog was read, an update of an
    object the view never had (applied: it carries the whole state);
    ``undecodable``: a message that is not a bridge CloudEvent (skipped)."""

    kind: Literal["out_of_order", "gap", "undecodable"]
    detail: str
    event: Event | None


@dataclass
class Stats:
    """Counters since the informer started."""

    received: int = 0
    applied: int = 0  # changed the view
    duplicates: int = 0  # same id again, or a re-send of an older state
    out_of_order: int = 0
    gaps: int = 0
    undecodable: int = 0
    tombstones: int = 0  # Kafka tombstones that removed an object
    skipped: int = 0  # kinds not selected


Handler = Callable[[Change], Awaitable[None] | None]


class Informer:
    """Rebuilds the cluster's objects from a source (``KafkaSource``, ``NatsSource``) and
    calls ``on_added / on_updated / on_deleted`` handlers (plain or async functions) for
    every transition, in per-object order; commits each batch after its handlers returned.
    ``synced`` is set once the backlog the source held at start has been read.

    ``kinds``: keep only these kinds (``Kind.group``, or ``Kind`` for any group)."""

    def __init__(self, source: Source, *, kinds: Iterable[str] = (),
                 on_anomaly: Callable[[Anomaly], None] | None = None,
                 remember_deleted: int = 100_000) -> None:
        self.source = source
        self.view = View(remember_deleted=remember_deleted)
        self.stats = Stats()
        self.synced = asyncio.Event()
        self._kinds = frozenset(kinds)
        self._on_anomaly = on_anomaly
        self._handlers: dict[ChangeType, list[Handler]] = {t: [] for t in ChangeType}
        self._task: asyncio.Task[None] | None = None

    # ---- handlers --------------------------------------------------------------------------

    def on_added(self, handler: Handler) -> Handler:
        self._handlers[ChangeType.ADDED].append(handler)
        return handler

    def on_updated(self, handler: Handler) -> Handler:
        self._handlers[ChangeType.UPDATED].append(handler)
        return handler

    def on_deleted(self, handler: Handler) -> Handler:
        self._handlers[ChangeType.DELETED].append(handler)
        return handler

    # ---- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Read until cancelled. Raises ``HandlerError`` when a handler raises (that batch
        is not committed) and ``SourceError`` when the broker fails."""
        await self.source.start()
        try:
            while True:
                batch = await self.source.next_batch()
                for message in batch.messages:
                    await self._message(message)
                if batch.commit is not None:
                    await batch.commit()
                if batch.caught_up and not self.synced.is_set():
                    self.synced.set()
        finally:
            await self.source.close()

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until the backlog is read (``TimeoutError`` after ``timeout`` seconds); re-raises
        what stopped ``run`` if it stopped first (within ``async with``)."""
        waiter = asyncio.ensure_future(self.synced.wait())
        watched = {waiter} | ({self._task} if self._task is not None else set())
        done, _ = await asyncio.wait(watched, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task is not None and self._task in done:
            self._task.result()
        if not self.synced.is_set():
            raise TimeoutError(f"not synced after {timeout} s")

    async def __aenter__(self) -> Informer:
        self._task = asyncio.create_task(self.run(), name="kube-event-consumer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except ConsumerError:
            if exc_type is None:  # what stopped ``run``, unless something else is raised
                raise

    # ---- one message -----------------------------------------------------------------------

    async def _message(self, message: Message) -> None:
        stats = self.stats
        stats.received += 1
        payload = message.payload
        if isinstance(payload, DecodeError):
            stats.undecodable += 1
            self._report(Anomaly("undecodable", str(payload), None))
            return
        if isinstance(payload, Tombstone):
            gone = self.view.tombstone(payload)
            if gone is not None:
                stats.tombstones += 1
                stats.applied += 1
                await self._handle(Change(ChangeType.DELETED, gone, gone, message.replayed))
            return
        if self._kinds and not (payload.kind in self._kinds
                                or payload.kind.partition(".")[0] in self._kinds):
            stats.skipped += 1
            return
        outcome = self.view.apply(payload, topic=message.topic,
                                  expect_known=self.synced.is_set())
        if outcome.verdict is Verdict.DUPLICATE:
            stats.duplicates += 1
            return
        if outcome.verdict is Verdict.OUT_OF_ORDER:
            stats.out_of_order += 1
            self._report(Anomaly("out_of_order", f"{payload.id} (sequence {payload.sequence}) "
                                 "arrived after a newer state; not applied", payload))
            return
        if outcome.gap:
            stats.gaps += 1
            self._report(Anomaly("gap", f"{payload.id}: an update of an object never seen; "
                                 "applied", payload))
        if outcome.change is not None:
            stats.applied += 1
            await self._handle(Change(outcome.change, payload, outcome.previous,
                                      message.replayed))

    async def _handle(self, change: Change) -> None:
        for handler in self._handlers[change.type]:
            try:
                result = handler(change)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise HandlerError(f"{handler!r} failed on {change.event.id}") from exc

    def _report(self, anomaly: Anomaly) -> None:
        if self._on_anomaly is not None:
            self._on_anomaly(anomaly)
