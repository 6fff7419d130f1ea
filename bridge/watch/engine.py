"""The watch engine: every selected kind's changes as deltas, with backpressure and acks.

A thin facade over the parts a reader can name, in the order a change travels:

- ``discovery`` (``Discovery``): which resources exist and are selected: built-in kinds
  resolved, CRDs watched live; it starts, re-watches and drains streams;
- ``supervisor`` (``StreamSupervisor``): one reflector per stream (``reflector.Reflector``:
  list / watch-list / watch / resume / gap repair), each restarted with client-go-like backoff
  whatever ends it (``backoff.Pacing``), forbidden or vanished kinds skipped and re-checked;
  it knows which streams flow (``health``);
- ``queue`` (``DeltaQueue``): the reflectors' outlet and the consumer's iterator, under the
  in-flight window; acks go to the streams' ``trackers`` (``Trackers``), whose committed
  state is the checkpoint.

Output: ``async for deltas in engine`` (each iteration: everything ready, as one list; per
stream in order) with backpressure (a window capping unacknowledged deltas);
``engine.ack(deltas)`` once they are durably delivered.

Readiness and the API server (for the daemon): ``not_flowing()`` names the streams failing
now (a kind whose stream is backing off after an error, CRD discovery as ``crds``);
``source_unreachable`` is true once every stream has been failing for more than
``EngineOptions.unreachable_after`` seconds (10 by default): the API server is down or
refuses everything. Meanwhile nothing is lost (every stream resumes from its position, or
re-lists and diffs), retries stay backed off (at most one request per stream per 30 s once
the backoff is at its cap), and the daemon should report not ready: it cannot deliver what
it cannot see. Skipped kinds (forbidden, vanished) are not "not flowing": they are a decision,
logged and counted in ``kube_event_bridge_skipped_kinds``. Metrics:
``kube_event_bridge_stream_up{group,kind}``, ``kube_event_bridge_stream_restarts_total
{group,kind,reason}``, ``kube_event_bridge_source_up``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from bridge import metrics
from bridge.kube.transport import Transport
from bridge.watch.delta import Delta
from bridge.watch.discovery import Discovery
from bridge.watch.kinds import CRD_RESOURCE, KindStatus
from bridge.watch.options import EngineOptions, WatchOptions
from bridge.watch.queue import DeltaQueue
from bridge.watch.selection import Selection
from bridge.watch.supervisor import StreamSupervisor, WatchContext
from bridge.watch.tracker import StreamCheckpoint, StreamTracker
from bridge.watch.trackers import Trackers

__all__ = ["CRD_RESOURCE", "EngineOptions", "KindStatus", "WatchEngine", "WatchOptions"]


class WatchEngine:
    def __init__(
        self,
        transport: Transport,
        selection: Selection,
        options: EngineOptions | None = None,
        checkpoints: dict[str, StreamCheckpoint] | None = None,
    ) -> None:
        self.transport = transport
        self.selection = selection
        self.options = options or EngineOptions()
        self._trackers = Trackers(checkpoints, journal=self.options.journal)
        self.queue = DeltaQueue(self.options.max_in_flight, self._trackers)
        context = WatchContext(transport, selection, self.options, self._trackers,
                               list_gate=asyncio.Semaphore(self.options.list_concurrency))
        self._kinds = context.kinds
        self.supervisor = StreamSupervisor(context, self.queue)
        self.discovery = Discovery(context, self.supervisor)

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        metrics.source_up.set_function(lambda: 0 if self.source_unreachable else 1)
        self.discovery.start()

    async def stop(self) -> None:
        await self.supervisor.stop()

    async def __aenter__(self) -> WatchEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- output --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[list[Delta]]:
        return self.queue.batches()

    def ack(self, deltas: Sequence[Delta]) -> None:
        self.queue.ack(deltas)

    def trackers(self) -> dict[str, StreamTracker]:
        """Every stream's tracker, including streams loaded from the checkpoint and not
        watched (yet): what the checkpoint writer persists (a start that cannot discover
        its kinds, API server down, must not write a checkpoint that forgot them)."""
        return self._trackers.all()

    def checkpoints(self) -> dict[str, StreamCheckpoint]:
        """The committed state of every stream (only acked changes count), including
        streams loaded and not watched (yet)."""
        return self._trackers.checkpoints()

    # ---- status --------------------------------------------------------------------------

    @property
    def kinds(self) -> list[KindStatus]:
        return sorted(self._kinds.values(), key=lambda k: (k.resource.group, k.resource.plural))

    def sync_progress(self) -> tuple[int, int, int]:
        """(streams synced, streams total, objects listed so far)."""
        reflectors = self.supervisor.reflectors()
        synced = sum(1 for r in reflectors if r.synced)
        listed = sum(r.objects_listed for r in reflectors)
        return synced, len(reflectors), listed

    async def wait_synced(self) -> None:
        """Until discovery is done and every started stream finished its initial sync."""
        await self.discovery.synced.wait()
        while True:
            synced, total, _ = self.sync_progress()
            if synced == total:
                return
            await asyncio.sleep(0.05)

    @property
    def discovery_synced(self) -> bool:
        return self.discovery.synced.is_set()

    @property
    def queued(self) -> int:
        """Deltas emitted and not yet taken by the consumer."""
        return self.queue.queued

    def stream_keys(self) -> list[str]:
        return self.supervisor.stream_keys()

    # ---- health (readiness) ----------------------------------------------------------------

    def not_flowing(self, longer_than: float = 0.0) -> list[str]:
        """Streams failing now (for more than ``longer_than`` seconds): kinds backing off
        after an error, ``crds`` for CRD discovery, ``builtin <spec>`` for a built-in kind
        not resolved yet. Skipped (forbidden/vanished) kinds are not listed."""
        return self.supervisor.not_flowing(longer_than)

    @property
    def source_unreachable(self) -> bool:
        """Every stream has been failing for more than ``options.unreachable_after``
        seconds: the API server is unreachable (or answers every request with an error)."""
        return self.supervisor.source_unreachable

    def failures(self) -> dict[str, str]:
        """Each failing stream's last restart reason and error, for logs and /readyz."""
        return self.supervisor.failures()
