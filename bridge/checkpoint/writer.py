"""The checkpoint writer: journal first, then deliver; compact into a base now and then.

Why a write-ahead journal (and not a periodic full save):
- **Nothing that left the process is unknown to the next start.** A change is handed to a
  sink only after the journal segment recording it is durable (``durable()``, awaited by
  delivery before each dispatch). After a crash the journal says which objects *may* have
  reached a sink; they load as uncertain objects and are delivered again or deleted, so a
  crash before the first save, during the initial snapshot, in a crash loop, or followed by
  a ``410`` loses no deletion. (A consumer may get a synthetic ``deleted`` for an object
  whose ``added`` never reached it, as with client-go's ``DeletedFinalStateUnknown``.)
- **Cost grows with changes, not objects.** A segment carries only what changed since the
  last one: each change (~100 bytes) and, per stream, its committed position when it moved.
  The base (every inventory) is rewritten only when the journal outgrows ``compact_ratio``
  times the base, so bytes written stay within ``1 + 1/compact_ratio`` times the changes.
- **Acknowledgements become durable within ``interval``**, or sooner when a segment goes
  out anyway, so a restart repeats at most that much; a crash loop makes progress.
- **Group commit**: everything recorded before a flush starts goes into it, so under load
  one store write covers many network reads; ``min_write_interval`` bounds writes per second
  (the configmap store: every write is an API request).

With an exactly-once Kafka sink the store's transaction is shared: each flush holds the
store's ``exclusive()`` lock, and a flush made by delivery inside its open transaction
(``flush(commit=True)``) is that transaction's commit (``bridge.delivery.transactional``).

A store that cannot be written stops delivery (nothing may leave unjournaled): reported by a
log line, ``kube_event_bridge_checkpoint_saves_total{result="error"}`` and readiness, then
retried with backoff; the next successful write is a full base. A fenced store
(``CheckpointFenced``: another writer took over) is fatal: the daemon stops with exit 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass

from bridge import metrics
from bridge.checkpoint.codec import (
    SEGMENT_VERSION,
    CheckpointFenced,
    StreamOps,
    StreamState,
    encode_base,
    encode_segments,
)
from bridge.checkpoint.store import CheckpointStore
from bridge.watch.backoff import Backoff
from bridge.watch.tracker import Header, StreamCheckpoint, StreamTracker

log = logging.getLogger(__name__)

Trackers = Callable[[], Mapping[str, StreamTracker]]
Exclusive = Callable[[], AbstractAsyncContextManager[None]]
EMPTY_SEGMENT = b'{"j":%d,"s":[]}' % SEGMENT_VERSION  # commits a transaction with nothing new
WRITE_TIMEOUT = 60.0  # seconds one store write may take before it counts as failed
STALLED_AFTER = 10.0  # seconds a write may take before readiness reports the store


@dataclass(frozen=True)
class WriterOptions:
    interval: float = 1.0  # acknowledgements reach the store within this many seconds
    min_write_interval: float = 0.0  # at least this long between two store writes
    compact_ratio: float = 1.0  # a new base once the journal outgrows ratio x the base
    compact_min_bytes: int = 1 << 20  # ... and this many bytes
    bookmark_interval: float = 60.0  # positions moved only by bookmarks wait this long


def _frozen(checkpoint: StreamCheckpoint) -> StreamCheckpoint:
    """A copy that acknowledgements arriving meanwhile do not change."""
    return dataclasses.replace(checkpoint, inventory=checkpoint.inventory.copy(),
                               uncertain=set(checkpoint.uncertain))


class CheckpointWriter:
    def __init__(self, store: CheckpointStore, trackers: Trackers, *,
                 options: WriterOptions | None = None,
                 may_write: Callable[[], bool] = lambda: True,
                 exclusive: Exclusive | None = None) -> None:
        """``may_write``: asked right before every store write (False once the daemon is
        stopping for a fatal reason: a fenced or deposed writer writes nothing more).
        ``exclusive``: held around each flush (a store transaction shared with a sink)."""
        self.store = store
        self._trackers = trackers
        self.options = options or WriterOptions()
        self.may_write = may_write
        self._exclusive: Exclusive = exclusive or nullcontext
        self._lock = asyncio.Lock()  # one flush at a time (the task's and the final one)
        self._unwritten: list[StreamOps] = []  # taken by a write that failed: next time
        self._deferred: dict[str, Header] = {}  # positions moved only by bookmarks
        self._deferred_since = 0.0
        self._written: dict[str, Header] = {}  # the last position written per stream
        self._writing_since: float | None = None
        self._started = 0  # flushes begun
        self._completed = 0  # the last flush that made its records durable
        self._done = asyncio.Condition()
        self._wake = asyncio.Event()
        self._base_bytes = 0
        self._journal_bytes = 0
        self._segments = 0
        self._rebase_next = True
        self._next_write = 0.0  # monotonic time before which no write starts
        self.failing_since: float | None = None
        self.last_success = time.monotonic()

    # ---- delivery's side -----------------------------------------------------------------

    async def durable(self) -> None:
        """Return once everything recorded before this call is in the store."""
        target = self._started + 1  # a flush already under way may have missed it
        self._wake.set()
        async with self._done:
            await self._done.wait_for(lambda: self._completed >= target)

    # ---- the writer task -----------------------------------------------------------------

    async def run(self) -> None:
        """Flush when asked (``durable``) or every ``interval``; owned by the daemon's
        supervisor: it only ends by raising ``CheckpointFenced``."""
        backoff = Backoff(initial=0.5, maximum=30.0)
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.options.interval)
            except TimeoutError:
                pass
            delay = self._next_write - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._wake.clear()
            try:
                await self.flush()
            except CheckpointFenced:
                raise
            except Exception as exc:
                self._failed(exc)
                await asyncio.sleep(backoff.next_delay())
                self._wake.set()  # retry: delivery waits for this
                continue
            backoff.reset()
            metrics.checkpoint_age.set(0.0)

    def _failed(self, exc: Exception) -> None:
        metrics.checkpoint_saves.labels(result="error").inc()
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        metrics.checkpoint_age.set(now - self.last_success)
        log.error("CHECKPOINT NOT SAVED to %s: %s. Delivery waits (nothing is sent that "
                  "the checkpoint does not cover) and retries with backoff; failing for %.0fs. "
                  "Fix the store (disk full? read-only? permissions? broker down?).",
                  self.store.description, exc, now - self.failing_since)

    async def flush(self, *, final: bool = False, commit: bool = False) -> None:
        """One write: a journal segment with every change recorded and every committed
        position moved since the last one, or a new base when the journal has grown too
        big. Flushes never overlap. ``final``: positions moved by bookmarks go too.
        ``commit``: write something even when nothing changed (it commits the caller's
        open store transaction)."""
        async with self._exclusive(), self._lock:
            if final:
                self._deferred_since = -self.options.bookmark_interval
            self._started += 1
            epoch = self._started
            self._writing_since = time.monotonic()
            try:
                writes = await self._write(commit=commit)
            finally:
                self._writing_since = None
            self._done_writing(writes)
            async with self._done:
                self._completed = max(self._completed, epoch)
                self._done.notify_all()

    async def _write(self, *, commit: bool) -> int:
        """The store writes of one flush; returns how many. What a failed or cancelled
        write took from the trackers is kept for the next one (re-writing an intent or a
        position is harmless: replay keys intents by sequence)."""
        trackers = self._trackers()
        ops = self._take(trackers)
        if self._rebase_next or self._compaction_due():
            states = [(key, StreamState(_frozen(t.committed), t.pending()))
                      for key, t in trackers.items()]  # a consistent cut, in the loop
            self._unwritten, self._deferred = ops, {}  # in the base; kept if it fails
            headers = {key: state.checkpoint.header() for key, state in states}
            blob = await asyncio.to_thread(encode_base, states)  # the loop goes on
            await self._store_write(self.store.rebase, blob)
            self._unwritten = []
            self._written = headers
            self._wrote("base", len(blob))
            self._base_bytes, self._journal_bytes, self._segments = len(blob), 0, 0
            self._rebase_next = False
            return 1
        writes = 0
        self._unwritten = ops
        segments = encode_segments(ops, self.store.segment_limit)
        for segment in segments or ([EMPTY_SEGMENT] if commit else []):
            await self._store_write(self.store.append, segment)
            self._wrote("journal", len(segment))
            self._journal_bytes += len(segment)
            self._segments += 1
            writes += 1
        self._unwritten = []
        self._written_now(ops)
        return writes

    def _take(self, trackers: Mapping[str, StreamTracker]) -> list[StreamOps]:
        """What to write: what a failed write took, then every tracker's new records and
        moved positions; a position moved by bookmarks alone waits ``bookmark_interval``
        (unless something else of its stream is written first)."""
        ops = list(self._unwritten)
        now = time.monotonic()
        for key, tracker in trackers.items():
            if not tracker.dirty:
                continue
            records, header = tracker.take_journal()
            deferred = self._deferred.pop(key, None)
            if not records and header is not None and self._bookmark_only(key, header):
                if not self._deferred:
                    self._deferred_since = now
                self._deferred[key] = header
            elif records or header is not None or deferred is not None:
                ops.append((key, header or deferred, records))
        if self._deferred and now - self._deferred_since >= self.options.bookmark_interval:
            ops.extend((key, header, []) for key, header in self._deferred.items())
            self._deferred = {}
        return ops

    def _bookmark_only(self, key: str, header: Header) -> bool:
        """Only the resume point moved since the last written position (nothing was
        acknowledged): losing it costs a slightly older resume point, nothing else."""
        last = self._written.get(key)
        return last is not None and last[1:] == header[1:]

    def _written_now(self, ops: list[StreamOps]) -> None:
        for key, header, _ in ops:
            if header is not None:
                self._written[key] = header

    async def _store_write(self, write: Callable[[bytes], Awaitable[None]],
                           data: bytes) -> None:
        if not self.may_write():  # asked before the write is even begun
            raise CheckpointFenced("the daemon is stopping for a fatal reason: no more "
                                   "checkpoint writes")
        async with asyncio.timeout(WRITE_TIMEOUT):
            await write(data)

    def _done_writing(self, writes: int) -> None:
        now = time.monotonic()
        if writes:
            self._next_write = now + writes * self.options.min_write_interval
        if self.failing_since is not None:
            log.info("checkpoint store %s is writable again after %.0fs",
                     self.store.description, now - self.failing_since)
        self.failing_since = None
        self.last_success = now  # nothing to write counts: the store holds everything

    def _compaction_due(self) -> bool:
        if self._segments >= self.store.max_segments:
            return True
        threshold = max(self.options.compact_min_bytes,
                        self.options.compact_ratio * self._base_bytes)
        return self._journal_bytes > threshold

    def _wrote(self, kind: str, size: int) -> None:
        metrics.checkpoint_saves.labels(result="ok").inc()
        metrics.checkpoint_writes.labels(kind=kind).inc()
        metrics.checkpoint_bytes.labels(kind=kind).inc(size)
        log.debug("checkpoint %s written: %d bytes", kind, size)

    @property
    def failing(self) -> bool:
        """The last write failed, or the current one has taken over ``STALLED_AFTER``."""
        writing = self._writing_since
        return self.failing_since is not None or (
            writing is not None and time.monotonic() - writing > STALLED_AFTER)
