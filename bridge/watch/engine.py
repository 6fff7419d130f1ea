"""The watch engine: live CRD discovery driving one reflector per stream.

CRDs are themselves watched by a reflector; its changes start a stream when a CRD becomes
Established, re-watch at a new version when the preferred served version changes (carrying
the stream's position and inventory, so nothing is lost or repeated), and drain a stream
when its CRD is deleted (its objects' deletions are emitted, then it stops). Forbidden or
vanished kinds are skipped with one warning and re-checked periodically.

Output: ``async for deltas in engine`` (lists, one per network read of a stream) with
backpressure (a window capping unacknowledged deltas); ``engine.ack(deltas)`` once they are
durably delivered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge import metrics
from bridge.errors import ApiError, TransportError
from bridge.kube.resources import Resource
from bridge.kube.transport import Transport
from bridge.watch.delta import Delta, DeltaType
from bridge.watch.kinds import crd_group_resource, crd_resource, resolve_builtin
from bridge.watch.reflector import Reflector, StreamGone, WatchOptions
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint, StreamTracker
from bridge.watch.window import Window

log = logging.getLogger(__name__)

CRD_RESOURCE = Resource("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                        "CustomResourceDefinition", False)


@dataclass
class EngineOptions:
    watch: WatchOptions = field(default_factory=WatchOptions)
    max_in_flight: int = 10000
    list_concurrency: int = 8
    recheck_interval: float = 60.0
    versions: dict[str, str] = field(default_factory=dict)  # "plural.group" -> version
    journal: bool = False  # trackers keep their changes for a checkpoint writer's journal


@dataclass
class KindStatus:
    """What the engine decided about one resource, for `kinds` and logs."""

    resource: Resource
    watched: bool
    reason: str
    builtin: bool = False


@dataclass
class _Stream:
    key: str
    resource: Resource
    namespace: str | None
    reflector: Reflector
    task: asyncio.Task[None]


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
        self._trackers = {key: StreamTracker(checkpoint, journal=self.options.journal)
                          for key, checkpoint in (checkpoints or {}).items()}
        self._streams: dict[str, _Stream] = {}
        self._kinds: dict[str, KindStatus] = {}
        self._ready: deque[list[Delta]] = deque()  # bounded by the window
        self._has_ready = asyncio.Event()
        self._window = Window(self.options.max_in_flight)
        self._list_gate = asyncio.Semaphore(self.options.list_concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._discovery_synced = asyncio.Event()
        self._crds: set[str] = set()  # group_resource of every CRD that exists

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        await self._start_builtins()
        if self.selection.crds or self.selection.include:
            self._spawn(self._discover_crds(), "crd-discovery")
        else:
            self._discovery_synced.set()

    async def stop(self) -> None:
        tasks = [s.task for s in self._streams.values()] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        metrics.watched_kinds.set(0)

    async def __aenter__(self) -> WatchEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task %s failed: %r", task.get_name(), task.exception())

    # ---- output --------------------------------------------------------------------------

    async def reserve(self, count: int) -> None:
        if self._ready:  # let the consumer take what waits first: parsed objects kept alive
            await asyncio.sleep(0)  # across many reads make parsing and allocation slower
        await self._window.acquire(count)

    def push(self, deltas: list[Delta], unused: int) -> None:
        if unused:
            self._window.release(unused)
        if deltas:
            self._ready.append(deltas)
            self._has_ready.set()

    def __aiter__(self) -> AsyncIterator[list[Delta]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[Delta]]:
        while True:
            while not self._ready:
                self._has_ready.clear()
                await self._has_ready.wait()
            yield self._ready.popleft()

    def ack(self, deltas: Sequence[Delta]) -> None:
        trackers = self._trackers
        for delta in deltas:
            tracker = trackers.get(delta.stream)
            if tracker is not None:
                tracker.ack(delta.sequence)
        self._window.release(len(deltas))

    def trackers(self) -> dict[str, StreamTracker]:
        """Every stream's tracker, including streams loaded from the checkpoint and not
        watched (yet): what the checkpoint writer persists (a start that cannot discover
        its kinds, API server down, must not write a checkpoint that forgot them)."""
        return self._trackers

    def checkpoints(self) -> dict[str, StreamCheckpoint]:
        """The committed state of every stream (only acked changes count)."""
        return {key: tracker.committed for key, tracker in self._trackers.items()}

    # ---- status --------------------------------------------------------------------------

    @property
    def kinds(self) -> list[KindStatus]:
        return sorted(self._kinds.values(), key=lambda k: (k.resource.group, k.resource.plural))

    def sync_progress(self) -> tuple[int, int, int]:
        """(streams synced, streams total, objects listed so far)."""
        streams = list(self._streams.values())
        synced = sum(1 for s in streams if s.reflector.synced)
        listed = sum(s.reflector.objects_listed for s in streams)
        return synced, len(streams), listed

    async def wait_synced(self) -> None:
        """Until CRDs are discovered and every started stream finished its initial sync."""
        await self._discovery_synced.wait()
        while True:
            synced, total, _ = self.sync_progress()
            if synced == total:
                return
            await asyncio.sleep(0.05)

    @property
    def discovery_synced(self) -> bool:
        return self._discovery_synced.is_set()

    @property
    def queued(self) -> int:
        """Deltas emitted and not yet taken by the consumer."""
        return sum(len(batch) for batch in self._ready)

    def stream_keys(self) -> list[str]:
        return sorted(self._streams)

    # ---- streams -------------------------------------------------------------------------

    def _tracker(self, key: str, resource: Resource, builtin: bool) -> StreamTracker:
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = StreamTracker(StreamCheckpoint(),
                                                          journal=self.options.journal)
        committed = tracker.committed
        committed.version, committed.kind = resource.version, resource.kind
        committed.crd = not builtin
        return tracker

    def _start_resource(self, resource: Resource, builtin: bool) -> None:
        namespaces: list[str | None]
        if resource.namespaced and self.selection.namespaces:
            namespaces = list(self.selection.namespaces)
        else:
            namespaces = [None]
        for namespace in namespaces:
            key = resource.group_resource + (f"@{namespace}" if namespace else "")
            current = self._streams.get(key)
            if current is not None:
                if current.resource == resource:
                    continue
                log.info("%s: preferred version changed %s -> %s; re-watching", key,
                         current.resource.version, resource.version)
                current.task.cancel()  # its tracker (position + inventory) carries over
            tracker = self._tracker(key, resource, builtin)
            options = self.options.watch
            selector = Selection.label_selector(resource, options.label_selector)
            if selector != options.label_selector:
                options = dataclasses.replace(options, label_selector=selector)
            reflector = Reflector(key, resource, namespace, self.transport, tracker, self,
                                  options, self._list_gate)
            task = asyncio.create_task(self._run_stream(key, reflector), name=f"stream {key}")
            self._streams[key] = _Stream(key, resource, namespace, reflector, task)
        metrics.watched_kinds.set(len(self._streams))

    async def _run_stream(self, key: str, reflector: Reflector) -> None:
        try:
            await reflector.run()
        except StreamGone as exc:
            stream = self._streams.get(key)
            if stream is not None and stream.reflector is reflector:
                del self._streams[key]
                metrics.watched_kinds.set(len(self._streams))
            status = self._kinds.get(str(reflector.resource))
            if exc.error.not_found and (status is None or not status.watched):
                return  # the CRD is gone (``on_crd`` drains what its stream still held)
            reason = "forbidden" if exc.error.forbidden else "vanished"
            self._skip(reflector.resource, reason, exc.error)
            self._spawn(self._recheck(reflector.resource), f"recheck {key}")

    def _skip(self, resource: Resource, reason: str, error: ApiError) -> None:
        log.warning(
            "%s is %s (%s): skipping it, other kinds continue; re-checking every %.0fs. %s",
            resource, reason, error.message or error.reason, self.options.recheck_interval,
            "Grant get/list/watch on it to the bridge's identity." if reason == "forbidden"
            else "",
        )
        status = self._kinds.get(str(resource))
        if status is not None:
            status.watched = False
            status.reason = reason
        metrics.skipped_kinds.labels(reason=reason).inc()

    async def _recheck(self, resource: Resource) -> None:
        while str(resource) in self._kinds:  # until its CRD is deleted
            await asyncio.sleep(self.options.recheck_interval)
            try:
                await self.transport.request("GET", resource.collection_path(),
                                             {"limit": "1"})
            except ApiError as exc:
                if exc.forbidden or exc.not_found:
                    continue
            except TransportError:
                continue
            status = self._kinds.get(str(resource))
            if status is not None and status.reason in ("forbidden", "vanished"):
                reason = status.reason
                status.watched, status.reason = True, f"re-checked after {reason}"
                metrics.skipped_kinds.labels(reason=reason).dec()
                log.info("%s is accessible again; watching it", resource)
                self._start_resource(resource, status.builtin if status else False)
            return

    # ---- built-ins -----------------------------------------------------------------------

    async def _start_builtins(self) -> None:
        for spec in self.selection.builtins:
            try:
                resource = await resolve_builtin(self.transport, spec)
            except (LookupError, ValueError) as exc:
                log.warning("built-in kind %s is not watched: %s", spec, exc)
                continue
            self._consider(resource, builtin=True)

    def _consider(self, resource: Resource, builtin: bool) -> None:
        watched, reason = self.selection.decide(resource, builtin)
        self._kinds[str(resource)] = KindStatus(resource, watched, reason, builtin)
        for key in [k for k in self._kinds if k != str(resource)
                    and self._kinds[k].resource.group_resource == resource.group_resource]:
            del self._kinds[key]  # an older version of the same resource
        if watched:
            self._start_resource(resource, builtin)

    # ---- CRD discovery -------------------------------------------------------------------

    async def _discover_crds(self) -> None:
        tracker = StreamTracker(StreamCheckpoint())
        reflector = Reflector(
            "crds", CRD_RESOURCE, None, self.transport, tracker,
            _CrdOutlet(self, tracker), WatchOptions(read_timeout=self.options.watch.read_timeout),
            self._list_gate, on_synced=self._on_discovery_synced,
        )
        try:
            await reflector.run()
        except StreamGone as exc:
            log.error("cannot list CustomResourceDefinitions (%s): CRD kinds are not watched. "
                      "Grant get/list/watch on customresourcedefinitions.apiextensions.k8s.io",
                      exc)
            self._discovery_synced.set()

    def _on_discovery_synced(self) -> None:
        self._discovery_synced.set()
        for key, tracker in sorted(self._trackers.items()):
            if key in self._streams:
                continue
            checkpoint = tracker.committed
            if checkpoint.crd and checkpoint.kind and _group_resource(key) not in self._crds:
                self._spawn(self._drain(key, checkpoint), f"drain {key}")
                continue
            log.warning("%s is in the checkpoint but not watched now (its CRD is gone, not "
                        "Established, or no longer selected): its state (%d objects) is kept, "
                        "so its changes are caught up if it is watched again", key,
                        len(checkpoint.inventory))

    def on_crd(self, delta: Delta) -> None:
        group_resource = crd_group_resource(delta.obj)
        deleted = delta.type is DeltaType.DELETED
        if deleted:
            self._crds.discard(group_resource)
        else:
            self._crds.add(group_resource)
        resource = None if deleted else crd_resource(delta.obj, self.options.versions)
        if resource is not None:
            self._consider(resource, builtin=False)
        elif deleted or (delta.obj.get("metadata") or {}).get("deletionTimestamp"):
            for key in [k for k, s in self._kinds.items()
                        if s.resource.group_resource == group_resource]:
                del self._kinds[key]
        if deleted:  # the API server deleted the CRD's objects first; a stream that missed
            # some of that (its watch cut at the time) emits their deletions now
            for key, tracker in list(self._trackers.items()):
                if _group_resource(key) == group_resource:
                    self._spawn(self._drain(key, tracker.committed), f"drain {key}")

    async def _drain(self, key: str, checkpoint: StreamCheckpoint) -> None:
        """The stream's CRD is gone: stop watching it and emit the deletion of every object
        it still knows (none, normally; some when its watch was cut while the CRD's objects
        were deleted, or when the CRD was deleted while the bridge was stopped)."""
        stream = self._streams.pop(key, None)
        if stream is not None:
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)
            metrics.watched_kinds.set(len(self._streams))
        plural, _, group = _group_resource(key).partition(".")
        resource = Resource(group, checkpoint.version, plural, checkpoint.kind, True)
        reflector = Reflector(key, resource, None, self.transport,
                              self._tracker(key, resource, builtin=False), self,
                              self.options.watch, self._list_gate)
        deleted = await reflector.drain()
        if deleted:
            log.info("%s: its CRD is gone; emitted the deletion of the %d objects it still "
                     "knew", key, deleted)


def _group_resource(key: str) -> str:
    """A stream key is ``plural.group``, with ``@namespace`` for a per-namespace stream."""
    return key.partition("@")[0]


class _CrdOutlet:
    """CRD changes are applied to the engine at once; nothing goes downstream."""

    def __init__(self, engine: WatchEngine, tracker: StreamTracker) -> None:
        self._engine = engine
        self._tracker = tracker

    async def reserve(self, count: int) -> None:
        return None

    def push(self, deltas: list[Delta], unused: int) -> None:
        for delta in deltas:
            try:
                self._engine.on_crd(delta)
            except Exception:  # one unusable CRD must not stop discovery of the others
                log.exception("CRD %s/%s could not be applied", delta.uid, delta.resource_version)
            finally:
                self._tracker.ack(delta.sequence)
