"""One worker per sink: batches, sends, retries transient failures in order, dead-letters
permanent ones, and reports each acknowledged event back.

Order per object is kept by construction: a batch is retried from its first transiently
failed event onward (later events are re-sent even if they were accepted, so nothing
overtakes an earlier change; re-sends carry the same ids), and the next batch waits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from bridge import metrics
from bridge.events.event import Event
from bridge.watch.backoff import Backoff
from bridge.watch.delta import DeltaType
from sinks.base import Sink, SinkError

log = logging.getLogger(__name__)

DEAD_LETTER_ATTEMPTS = 5


class SinkWorker:
    def __init__(self, sink: Sink, on_acked: Callable[[list[Event]], None],
                 retry_initial: float = 0.2, retry_max: float = 30.0) -> None:
        self.sink = sink
        self.name = sink.settings.name
        # (event, dead-letter reason or None); bounded by the engine's in-flight window
        self._pending: deque[tuple[Event, str | None]] = deque()
        self._has_work = asyncio.Event()
        self._on_acked = on_acked
        self._retry = (retry_initial, retry_max)
        self.failing_since: float | None = None
        self.sending_since: float | None = None
        self._published: dict[tuple[str, DeltaType], Any] = {}  # label children, cached

    def submit(self, items: list[tuple[Event, str | None]]) -> None:
        """Queue events (with a dead-letter reason where they must not be sent)."""
        self._pending.extend(items)
        self._has_work.set()

    async def run(self) -> None:
        batch_size = self.sink.settings.batch_size
        pending = self._pending
        while True:
            while not pending:
                self._has_work.clear()
                await self._has_work.wait()
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            await self._deliver(batch)

    async def _deliver(self, batch: list[tuple[Event, str | None]]) -> None:
        backoff = Backoff(*self._retry)
        while batch:
            to_send = [event for event, reason in batch if reason is None]
            results = await self._send(to_send) if to_send else []
            outcome = iter(results)
            retry_from: int | None = None
            acked: list[Event] = []
            for index, (event, reason) in enumerate(batch):
                error = next(outcome) if reason is None else None
                if reason is None and error is None:
                    acked.append(event)
                elif reason is not None or (error is not None and not error.transient):
                    self._acked(acked)
                    acked = []
                    await self._dead_letter(event, reason or str(error))
                else:
                    retry_from = index
                    metrics.events_failed.labels(sink=self.name, transient="true").inc()
                    break
            self._acked(acked)
            if retry_from is None:
                self._up()
                return
            batch = batch[retry_from:]
            delay = backoff.next_delay()
            self._down(f"{batch[0][0].id}: {error}; retrying {len(batch)} events in "
                       f"{delay:.1f}s")
            await asyncio.sleep(delay)

    @property
    def stalled(self) -> bool:
        """A send has been waiting for acknowledgements for over 5 s (broker unreachable
        but the client still retrying inside its own timeout)."""
        return self.sending_since is not None and time.monotonic() - self.sending_since > 5

    async def _send(self, events: list[Event]) -> list[SinkError | None]:
        started = self.sending_since = time.monotonic()
        try:
            results = await self.sink.send(events)
        except SinkError as exc:
            results = [exc] * len(events)
        except Exception as exc:  # a sink bug must not kill delivery: retry, loudly
            log.exception("sink %s raised unexpectedly", self.name)
            results = [SinkError(repr(exc))] * len(events)
        finally:
            self.sending_since = None
        metrics.publish_latency.labels(sink=self.name).observe(time.monotonic() - started)
        return results

    async def _dead_letter(self, event: Event, reason: str) -> None:
        for attempt in range(1, DEAD_LETTER_ATTEMPTS + 1):
            try:
                await self.sink.dead_letter(event, reason)
                metrics.dead_lettered.labels(sink=self.name, reason="permanent").inc()
                log.warning("sink %s: event %s (%s %s) dead-lettered: %s", self.name, event.id,
                            event.attributes.get("kind"), event.attributes.get("subject"),
                            reason)
                break
            except Exception as exc:
                log.error("sink %s: dead-lettering %s failed (attempt %d/%d): %r", self.name,
                          event.id, attempt, DEAD_LETTER_ATTEMPTS, exc)
                await asyncio.sleep(min(2.0**attempt * 0.1, 5))
        else:
            metrics.dead_lettered.labels(sink=self.name, reason="dead-letter-failed").inc()
            log.error("sink %s: GAVE UP on event %s after %d dead-letter attempts; its "
                      "attributes: %s; reason: %s", self.name, event.id, DEAD_LETTER_ATTEMPTS,
                      event.attributes, reason)
        self._acked([event])

    def _acked(self, events: list[Event]) -> None:
        if not events:
            return
        tally = Counter((event.delta.resource.kind, event.delta.type) for event in events)
        for (kind, change), count in tally.items():
            counter = self._published.get((kind, change))
            if counter is None:
                counter = self._published[(kind, change)] = metrics.events_published.labels(
                    sink=self.name, kind=kind, type=change.value)
            counter.inc(count)
        self._on_acked(events)

    def _up(self) -> None:
        if self.failing_since is not None:
            log.info("sink %s: delivering again after %.1fs", self.name,
                     time.monotonic() - self.failing_since)
        self.failing_since = None
        metrics.sink_up.labels(sink=self.name).set(1)

    def _down(self, message: str) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.warning("sink %s is failing: %s (reading from the cluster pauses once the "
                        "in-flight window is full; nothing is dropped)", self.name, message)
        else:
            log.info("sink %s still failing: %s", self.name, message)
        metrics.sink_up.labels(sink=self.name).set(0)
