"""One worker per sink: batches, sends, retries transient failures in order, dead-letters
permanent ones, and reports each acknowledged event back.

Order per object is kept by construction: a batch is retried from its first transiently
failed event onward (later events are re-sent even if they were accepted, so nothing
overtakes an earlier change; re-sends carry the same ids), and the next batch waits.

Nothing is acknowledged that neither the sink nor its dead-letter destination holds. A
worker is *down* (``down_reason``; ``Delivery.sinks_down()`` and so readiness, and
``kube_event_bridge_sink_up{sink} 0``) while any of these lasts, and its later events wait
behind it, so the in-flight window fills and reading from the cluster pauses (backpressure):

- **failing**: a send failed transiently (``SinkError(transient=True)``, or any exception
  other than ``SinkError`` raised by ``send``); the batch is retried with backoff (up to
  ``retry_max``) until the sink accepts it.
- **dead letter failing**: an event the sink rejected permanently (or one the size policy
  refused) could not be handed to the sink's dead-letter destination; that is retried with
  the same backoff, the event stays unacknowledged and every later event waits, until the
  dead-letter destination holds it. Each failed attempt counts in
  ``kube_event_bridge_dead_letter_failures_total{sink}`` and logs the event's id, kind and
  subject.
- **protocol violation** (permanent until the process restarts): ``send`` returned something
  other than one ``None | SinkError`` per event. What it returned is logged with the sink's
  name and counted in ``kube_event_bridge_sink_protocol_errors_total{sink}``; the worker
  acknowledges nothing from that batch on and never sends again. It does not end either
  (a daemon-level task that ends is fatal): it holds its events, so the checkpoint stays
  before them, while sinks that are not routed those events go on.
- **destination missing or contradicting**: a send or dead letter failed with a
  ``DestinationError`` (a Kafka topic or NATS stream that does not exist, or whose settings
  contradict the sink's config); its message, which names the destination and the command to
  run, is the down reason, and ``kube_event_bridge_sink_destination_missing{sink,destination,
  problem}`` is 1 until the sink accepts events again. Retried with the same backoff.
- **stalled**: a send or a dead letter has been waiting for over 5 s; **unhealthy**: the
  sink's ``healthy`` is false (or raises).
"""

from __future__ import annotations

import asyncio
import logging
import reprlib
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import Counter as CounterMetric

from bridge import metrics
from bridge.errors import BridgeError
from bridge.events.event import Event
from bridge.watch.backoff import Backoff
from bridge.watch.delta import DeltaType
from sinks.base import Sink, SinkError
from sinks.provisioning import DestinationError

log = logging.getLogger(__name__)

STALLED_AFTER = 5.0  # seconds a send or dead letter may wait before the sink counts as down

sink_protocol_errors = CounterMetric(
    "kube_event_bridge_sink_protocol_errors_total", "Sinks stopped because send() broke the "
    "sink protocol (not one None or SinkError per event)", ["sink"],
    registry=metrics.REGISTRY)
dead_letter_failures = CounterMetric(
    "kube_event_bridge_dead_letter_failures_total", "Failed attempts to hand an event to a "
    "sink's dead-letter destination (the event stays unacknowledged and is retried)",
    ["sink"], registry=metrics.REGISTRY)

_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 120
_brief.maxlist = _brief.maxtuple = 6


class SinkProtocolError(BridgeError):
    """A sink's ``send`` answered something other than one ``None | SinkError`` per event."""


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
        self.sending_since: float | None = None  # a send or a dead letter is awaited
        self.dead_letter_failing = False
        self.protocol_error: str | None = None  # set once, for good
        self.destination_problem: str | None = None  # a DestinationError's message
        self._destinations_down: set[tuple[str, str]] = set()  # (destination, problem)
        self._published: dict[tuple[str, DeltaType], Any] = {}  # label children, cached

    def submit(self, items: list[tuple[Event, str | None]]) -> None:
        """Queue events (with a dead-letter reason where they must not be sent)."""
        self._pending.extend(items)
        self._has_work.set()

    async def run(self) -> None:
        """Deliver forever; after a protocol violation, hold everything and wait (until
        cancelled) instead of ending."""
        batch_size = self.sink.settings.batch_size
        pending = self._pending
        while self.protocol_error is None:
            while not pending:
                self._has_work.clear()
                await self._has_work.wait()
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            await self._deliver(batch)
        await asyncio.Event().wait()

    @property
    def down_reason(self) -> str | None:
        """Why this sink counts as down (readiness), or None while it delivers."""
        if self.protocol_error is not None:
            return f"protocol violation: {self.protocol_error}"
        if self.destination_problem is not None:
            return self.destination_problem
        if self.dead_letter_failing:
            return "dead-letter destination failing"
        if self.failing_since is not None:
            return "failing"
        if self.stalled:
            return f"no acknowledgement for over {STALLED_AFTER:.0f}s"
        try:
            healthy = self.sink.healthy
        except Exception:  # a plugin's bug: report it as unhealthy, not as a 500
            healthy = False
        return None if healthy else "unhealthy"

    @property
    def down(self) -> bool:
        return self.down_reason is not None

    @property
    def stalled(self) -> bool:
        """A send or dead letter has been waiting for over 5 s (broker unreachable but the
        client still retrying inside its own timeout)."""
        return (self.sending_since is not None
                and time.monotonic() - self.sending_since > STALLED_AFTER)

    async def _deliver(self, batch: list[tuple[Event, str | None]]) -> None:
        backoff = Backoff(*self._retry)
        while batch:
            to_send = [event for event, reason in batch if reason is None]
            try:
                results = await self._send(to_send) if to_send else []
            except SinkProtocolError as exc:
                self._violated(str(exc))
                return  # nothing from here on is acknowledged
            outcome = iter(results)
            retry_from: int | None = None
            error: SinkError | None = None
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
            self._destination(error)
            delay = backoff.next_delay()
            self._down(f"{batch[0][0].id}: {error}; retrying {len(batch)} events in "
                       f"{delay:.1f}s")
            await asyncio.sleep(delay)

    async def _send(self, events: list[Event]) -> list[SinkError | None]:
        """The sink's results, checked: one ``None | SinkError`` per event, or
        ``SinkProtocolError``."""
        started = self.sending_since = time.monotonic()
        results: object
        try:
            results = await self.sink.send(events)
        except SinkError as exc:
            results = [exc] * len(events)
        except Exception as exc:
            # Not the protocol (a failure is a SinkError), but most often a client library's
            # network error the plugin did not wrap: retried like a transient failure, so a
            # plugin bug that always raises shows as a sink that stays down.
            if self.failing_since is None:
                log.exception("sink %s: send raised %r instead of returning SinkErrors; "
                              "treated as a transient failure of the batch", self.name, exc)
            results = [SinkError(f"send raised {exc!r}")] * len(events)
        finally:
            self.sending_since = None
        metrics.publish_latency.labels(sink=self.name).observe(time.monotonic() - started)
        return self._checked(results, events)

    def _checked(self, results: object, events: Sequence[Event]) -> list[SinkError | None]:
        if not isinstance(results, list | tuple):
            raise SinkProtocolError(
                f"send() returned {_brief.repr(results)} (a {type(results).__name__}) for "
                f"{len(events)} events; it must return a list of one result per event")
        if len(results) != len(events):
            raise SinkProtocolError(
                f"send() returned {len(results)} results for {len(events)} events: "
                f"{_brief.repr(results)}")
        for event, result in zip(events, results, strict=True):
            if result is not None and not isinstance(result, SinkError):
                raise SinkProtocolError(
                    f"send() returned {_brief.repr(result)} (a {type(result).__name__}) as "
                    f"the result for event {event.id}; each result must be None (accepted) "
                    f"or a SinkError")
        return list(results)

    def _violated(self, problem: str) -> None:
        self.protocol_error = problem
        sink_protocol_errors.labels(sink=self.name).inc()
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        metrics.sink_up.labels(sink=self.name).set(0)
        log.error("sink %s (type %s) broke the sink protocol: %s. The sink is stopped until "
                  "the process restarts: nothing from this batch on is acknowledged to it, so "
                  "the checkpoint stays before these events; sinks not routed them go on",
                  self.name, self.sink.settings.type, problem)

    async def _dead_letter(self, event: Event, reason: str) -> None:
        """Hand ``event`` to the dead-letter destination, retrying with backoff for as long
        as it fails; the event is acknowledged only once the destination holds it."""
        backoff = Backoff(*self._retry)
        attempt = 0
        while True:
            attempt += 1
            self.sending_since = time.monotonic()
            try:
                await self.sink.dead_letter(event, reason)
            except Exception as exc:
                dead_letter_failures.labels(sink=self.name).inc()
                self.dead_letter_failing = True
                self._destination(exc)
                delay = backoff.next_delay()
                self._down(f"dead-lettering event {event.id} ({event.attributes.get('kind')} "
                           f"{event.attributes.get('subject')}) failed (attempt {attempt}): "
                           f"{exc!r}; it stays unacknowledged and later events wait; "
                           f"retrying in {delay:.1f}s (dead-letter reason: {reason})")
            else:
                break
            finally:
                self.sending_since = None
            await asyncio.sleep(delay)
        self.dead_letter_failing = False
        metrics.dead_lettered.labels(sink=self.name, reason="permanent").inc()
        log.warning("sink %s: event %s (%s %s) dead-lettered%s: %s", self.name, event.id,
                    event.attributes.get("kind"), event.attributes.get("subject"),
                    f" after {attempt} attempts" if attempt > 1 else "", reason)
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

    def _destination(self, error: BaseException | None) -> None:
        """Show a missing or contradicting destination as the down reason and in the metric,
        while the sink's failures say so."""
        if not isinstance(error, DestinationError):
            self._destinations_fine()
            return
        self.destination_problem = str(error)
        key = (error.destination, error.problem)
        if key not in self._destinations_down:
            self._destinations_down.add(key)
            metrics.destination_missing.labels(sink=self.name, destination=key[0],
                                               problem=key[1]).set(1)

    def _destinations_fine(self) -> None:
        for destination, problem in self._destinations_down:
            metrics.destination_missing.labels(sink=self.name, destination=destination,
                                               problem=problem).set(0)
        self._destinations_down.clear()
        self.destination_problem = None

    def _up(self) -> None:
        self._destinations_fine()
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
