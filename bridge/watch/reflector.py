"""One stream (a resource, optionally one namespace): list, watch, resume, repair gaps.

The loop, in the spirit of client-go's reflector:
- with a checkpoint: watch from its resourceVersion (only what changed since is emitted);
- otherwise, or when the server answers 410 Gone: re-list (streaming watch-list where the
  server supports it, else paginated list) and diff against the inventory, emitting only
  the difference (synthetic added/updated/deleted); the first ever list is a snapshot;
- transient failures back off exponentially and resume from the last resourceVersion seen;
- a silent connection is noticed by a read timeout (bookmarks arrive about every minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from bridge import metrics
from bridge.errors import ApiError, TransportError
from bridge.kube.resources import Resource
from bridge.kube.transport import Transport
from bridge.watch.backoff import Backoff
from bridge.watch.delta import Delta, DeltaType
from bridge.watch.inventory import Entry
from bridge.watch.tracker import StreamTracker

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
RESUME_ACCEPTED = 1.0  # seconds a resumed watch must stay open without a 410


@dataclass(frozen=True)
class WatchOptions:
    page_size: int = 500
    read_timeout: float = 120.0
    min_watch_timeout: int = 300  # server-side timeoutSeconds is jittered in [min, 2*min)
    initial: str = "snapshot"  # or "skip": first start records the inventory, emits nothing
    label_selector: str = ""
    field_selector: str = ""
    watch_list: bool = True  # try sendInitialEvents; falls back when the server refuses
    event_types: frozenset[DeltaType] = frozenset(DeltaType)


class StreamGone(Exception):
    """The resource is no longer served (404) or no longer permitted (403)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class _Gone(Exception):
    """410: the resume point is older than the server's history."""


class Outlet(Protocol):
    """Where a reflector's deltas go. ``reserve(count)`` waits for room for up to ``count``
    changes (cancel-safe, nothing is recorded yet); ``push`` hands the recorded deltas over
    and gives back the room they did not use, without awaiting, so a cancelled reflector
    never leaves a recorded change undelivered."""

    async def reserve(self, count: int) -> None: ...

    def push(self, deltas: list[Delta], unused: int) -> None: ...


class Reflector:
    def __init__(
        self,
        key: str,
        resource: Resource,
        namespace: str | None,
        transport: Transport,
        tracker: StreamTracker,
        outlet: Outlet,
        options: WatchOptions,
        list_gate: asyncio.Semaphore,
        on_synced: Callable[[], None] = lambda: None,
    ) -> None:
        self.key = key
        self.resource = resource
        self.namespace = namespace
        self.transport = transport
        self.tracker = tracker
        self.options = options
        self._outlet = outlet
        self._list_gate = list_gate
        self._on_synced = on_synced
        self._path = resource.collection_path(namespace)
        self._watch_list = options.watch_list
        self._labels = {"group": resource.group or "core", "kind": resource.kind}
        self._observed: dict[tuple[DeltaType, bool], Any] = {}  # label children, cached
        self.objects_listed = 0
        self._backoff = Backoff()
        self.position: str | None = tracker.committed.resource_version
        self.synced = False

    # ---- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled; raises ``StreamGone`` on 403/404.

        ``self.position`` is the last resourceVersion seen (event, bookmark or list); any
        failure resumes from it, so a cut connection replays nothing and loses nothing.
        """
        first = self.position is None
        while True:
            try:
                if self.position is None:
                    await self._resync(first)
                    first = False
                else:
                    await self._watch(self.position)
                self._restart("timeout")
            except _Gone:
                self._restart("gone")
                metrics.relists.labels(**self._labels, reason="gone").inc()
                log.info("%s: resourceVersion %s is gone; re-listing and diffing", self.key,
                         self.position)
                self.position = None
            except ApiError as exc:
                if exc.forbidden or exc.not_found:
                    raise StreamGone(exc) from exc
                self._restart(f"http_{exc.status}")
                await self._sleep(exc)
            except TransportError as exc:
                self._restart("connection")
                await self._sleep(exc)

    def _synced(self) -> None:
        if not self.synced:
            self.synced = True
            self._on_synced()

    def _restart(self, reason: str) -> None:
        metrics.watch_restarts.labels(**self._labels, reason=reason).inc()

    async def _sleep(self, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        busy = isinstance(exc, ApiError) and exc.status in (429, 503)  # server says "later"
        if busy:  # e.g. "storage is (re)initializing" after an API server restart: soon
            delay = min(delay, 1.0)
        log.log(logging.INFO if busy else logging.WARNING, "%s: %s; retrying in %.1fs",
                self.key, exc, delay)
        await asyncio.sleep(delay)

    # ---- re-list and diff ----------------------------------------------------------------

    async def _resync(self, first: bool) -> None:
        """Bring the inventory in line with the server, then watch."""
        deliver = not (first and self.options.initial == "skip")
        if not first:
            metrics.relists.labels(**self._labels, reason="resync").inc()
        if self._watch_list:
            try:
                await self._watch_list_resync(deliver)
                return
            except ApiError as exc:
                if exc.status not in (400, 422):  # only "invalid parameter" means unsupported
                    raise
                log.info("%s: server refused the streaming watch-list (%s); using paginated "
                         "lists", self.key, exc)
                self._watch_list = False
        self.position = await self._paginated_resync(deliver)
        self._synced()
        await self._watch(self.position)

    async def _paginated_resync(self, deliver: bool) -> str:
        seen: set[str] = set()
        params = self._params(limit=str(self.options.page_size))
        async with self._list_gate:
            while True:
                try:
                    body = orjson.loads(await self.transport.request("GET", self._path, params))
                except ApiError as exc:
                    if exc.gone and "continue" in params:
                        log.info("%s: list continue token expired; full list", self.key)
                        seen.clear()
                        params = self._params()
                        continue
                    raise
                items = body.get("items") or []
                async with self._output(len(items)) as out:
                    for item in items:
                        item.setdefault("apiVersion", self.resource.api_version)
                        item.setdefault("kind", self.resource.kind)
                        self._reconcile(item, seen, deliver, out)
                meta = body.get("metadata") or {}
                token = meta.get("continue")
                if not token:
                    rv = str(meta.get("resourceVersion") or "")
                    break
                params = self._params(limit=str(self.options.page_size), cont=token)
        await self._delete_unseen(seen, deliver)
        self.tracker.mark(rv)
        return rv

    async def _watch_list_resync(self, deliver: bool) -> None:
        """sendInitialEvents: the current state as ADDED events, then a bookmark, then live.

        The initial events are diffed like a list; after the end-of-initial-events bookmark
        the same connection carries on as an ordinary watch.
        """
        seen: set[str] = set()
        params = self._params(watch="1", sendInitialEvents="true",
                              resourceVersionMatch="NotOlderThan", allowWatchBookmarks="true",
                              timeoutSeconds=str(self._watch_timeout()))
        async with contextlib.AsyncExitStack() as stack:
            async with self._list_gate:  # the initial state counts as a list
                batches = await stack.enter_async_context(
                    self.transport.stream(self._path, params, self.options.read_timeout))
                self._backoff.reset()
                self.position, rest = await self._initial_events(batches, seen, deliver)
            if self.position is not None:
                if rest:  # live events that came in the same read as the end bookmark
                    await self._apply(rest)
                await self._pump(batches)

    async def _initial_events(self, batches: AsyncIterator[list[bytes]], seen: set[str],
                              deliver: bool) -> tuple[str | None, list[bytes]]:
        """Diff the initial ADDED events; at the end bookmark returns its resourceVersion and
        the lines of the same read that follow it."""
        async for lines in batches:
            end: tuple[str, list[bytes]] | None = None
            async with self._output(len(lines)) as out:
                for index, line in enumerate(lines):
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ADDED":
                        self._reconcile(obj, seen, deliver, out)
                    elif kind == "BOOKMARK":
                        meta = obj.get("metadata") or {}
                        if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                            end = str(meta.get("resourceVersion")), lines[index + 1:]
                            break
                    elif kind == "ERROR":
                        raise self._error_event(obj)
            if end is not None:
                await self._delete_unseen(seen, deliver)
                self.tracker.mark(end[0])
                self._synced()
                return end
        return None, []

    def _reconcile(self, obj: dict[str, Any], seen: set[str], deliver: bool,
                   out: list[Delta]) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        seen.add(uid)
        self.objects_listed += 1
        rv = str(meta.get("resourceVersion"))
        known = self.tracker.get(uid)
        if known is None:
            self._record(DeltaType.ADDED, obj, uid, rv, None, True, deliver, out)
        elif known.resource_version != rv:
            self._record(DeltaType.UPDATED, obj, uid, rv, None, True, deliver, out)

    async def _delete_unseen(self, seen: set[str], deliver: bool) -> int:
        """Synthetic deletions of every known object not in ``seen``; returns how many."""
        gone = [(uid, entry) for uid, entry in self.tracker.items() if uid not in seen]
        for start in range(0, len(gone), _DELETE_CHUNK):
            chunk = gone[start:start + _DELETE_CHUNK]
            async with self._output(len(chunk)) as out:
                for uid, entry in chunk:
                    self._record(DeltaType.DELETED, self._last_known(uid, entry), uid,
                                 entry.resource_version, None, True, deliver, out)
        return len(gone)

    async def drain(self) -> int:
        """The resource went away (CRD deleted): every object still known is deleted;
        returns how many."""
        return await self._delete_unseen(set(), True)

    def _last_known(self, uid: str, entry: Entry) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": entry.name, "uid": uid,
                                "resourceVersion": entry.resource_version}
        if entry.namespace:
            meta["namespace"] = entry.namespace
        return {"apiVersion": self.resource.api_version, "kind": self.resource.kind,
                "metadata": meta}

    # ---- watch ---------------------------------------------------------------------------

    async def _watch(self, rv: str) -> None:
        params = self._params(watch="1", resourceVersion=rv, allowWatchBookmarks="true",
                              timeoutSeconds=str(self._watch_timeout()))
        log.debug("%s: watching from resourceVersion %s", self.key, rv)
        async with self.transport.stream(self._path, params,
                                         self.options.read_timeout) as batches:
            self._backoff.reset()
            # resumed: in sync once the server accepted the resourceVersion, i.e. the first
            # event is not a 410, or a second passed without one
            accepted = asyncio.get_running_loop().call_later(RESUME_ACCEPTED, self._synced)
            try:
                await self._pump(batches)
            finally:
                accepted.cancel()

    async def _pump(self, batches: AsyncIterator[list[bytes]]) -> None:
        """Apply watch events until the server ends the stream, advancing the position."""
        async for lines in batches:
            await self._apply(lines)

    async def _apply(self, lines: list[bytes]) -> None:
        """One read's watch events, applied without awaiting (see ``_output``)."""
        async with self._output(len(lines)) as out:
            for line in lines:
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in _WATCH_TYPES:
                    self._synced()
                    self.position = self._on_event(kind, obj, out)
                elif kind == "BOOKMARK":
                    self._synced()
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.position = str(rv)
                        self.tracker.mark(self.position)
                elif kind == "ERROR":
                    raise self._error_event(obj)
                else:
                    self._synced()
                    log.warning("%s: unknown watch event type %r skipped", self.key, kind)

    def _on_event(self, kind: str, obj: dict[str, Any], out: list[Delta]) -> str:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        rv = str(meta.get("resourceVersion"))
        known = self.tracker.get(uid)
        if kind == "DELETED":
            self._record(DeltaType.DELETED, obj, uid, rv, rv, False, True, out)
        elif known is not None and known.resource_version == rv:
            self.tracker.mark(rv)  # already delivered (e.g. seen by the re-list)
        else:
            kind_out = DeltaType.ADDED if kind == "ADDED" and known is None else DeltaType.UPDATED
            self._record(kind_out, obj, uid, rv, rv, False, True, out)
        return rv

    def _error_event(self, status: dict[str, Any]) -> Exception:
        code = int(status.get("code") or 500)
        if code == 410:
            return _Gone()
        return ApiError(code, str(status.get("reason") or "Error"),
                        str(status.get("message") or ""), self._path)

    # ---- output --------------------------------------------------------------------------

    def _record(self, kind: DeltaType, obj: dict[str, Any], uid: str, rv: str,
                resume_rv: str | None, synthetic: bool, deliver: bool,
                out: list[Delta]) -> None:
        """Record a change in the tracker; append it to ``out`` unless it is filtered out
        (then it counts as acknowledged at once). Room for it was reserved by the caller."""
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        seq = self.tracker.record(
            uid, None if kind is DeltaType.DELETED else Entry(rv, namespace, name), resume_rv)
        if deliver and kind in self.options.event_types:
            out.append(Delta(kind, self.resource, obj, uid, rv, synthetic, self.key, seq,
                             time.time(), namespace, name))
        else:
            self.tracker.ack(seq)

    @contextlib.asynccontextmanager
    async def _output(self, room: int) -> AsyncIterator[list[Delta]]:
        """Room for ``room`` changes is reserved first; the body records them into the list
        without awaiting; what it recorded is handed over (and the unused room given back)
        even when it raises."""
        await self._outlet.reserve(room)
        out: list[Delta] = []
        try:
            yield out
        finally:
            self._hand_over(out, room)

    def _hand_over(self, out: list[Delta], reserved: int) -> None:
        self._outlet.push(out, reserved - len(out))
        if not out:
            return
        for (kind, synthetic), count in Counter((d.type, d.synthetic) for d in out).items():
            counter = self._observed.get((kind, synthetic))
            if counter is None:
                counter = self._observed[(kind, synthetic)] = metrics.events_observed.labels(
                    **self._labels, type=kind.value, synthetic=str(synthetic).lower())
            counter.inc(count)

    # ---- helpers -------------------------------------------------------------------------

    def _params(self, cont: str | None = None, **extra: str) -> dict[str, str]:
        params = dict(extra)
        if cont:
            params["continue"] = cont
        if self.options.label_selector:
            params["labelSelector"] = self.options.label_selector
        if self.options.field_selector:
            params["fieldSelector"] = self.options.field_selector
        return params

    def _watch_timeout(self) -> int:
        low = self.options.min_watch_timeout
        return random.randint(low, 2 * low)


_WATCH_TYPES = frozenset(("ADDED", "MODIFIED", "DELETED"))
_DELETE_CHUNK = 500  # synthetic deletions handed over per reservation
