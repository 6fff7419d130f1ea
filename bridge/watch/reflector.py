"""One stream (a resource, optionally one namespace): list, watch, resume, repair gaps.

In the spirit of client-go's reflector, ``list_and_watch`` is one attempt:

- with a position (a checkpoint's resourceVersion, or the last one seen): watch from it, so
  only what changed since is emitted;
- without one (first start, after 410 Gone, after a failure that may have left a read half
  applied): re-list (streaming watch-list where the server supports it, else paginated list)
  and diff against the inventory, emitting only the difference (synthetic added/updated/
  deleted), then watch. The first ever list is a snapshot, or with ``initial: skip`` is
  recorded without being emitted: the stream stays in that first mode until its first sync
  completes, however many attempts that takes;
- a silent connection is noticed by a read timeout (bookmarks arrive about every minute).

An attempt *returns* when the server ends the watch (``"timeout"``) or answers 410
(``"gone"``: the position is dropped, the next attempt re-lists), and *raises* on anything
else: ``StreamGone`` (403/404), ``VeryShortWatch`` (the watch ended within
``Pacing.very_short`` without a single event: an error, as in client-go), ``MalformedLine``
(a watch line or list body that is not what the API promises), ``ApiError``,
``TransportError``, or any unexpected exception. Whether and when the next attempt runs is
decided by the stream's supervisor (``bridge.watch.supervisor.keep_running``); the reflector
reports through ``health`` when data flows. ``position`` is the last resourceVersion applied,
so an attempt that fails mid-watch resumes without replaying or losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from bridge import metrics
from bridge.errors import ApiError, BridgeError
from bridge.kube.resources import Resource
from bridge.kube.transport import Transport
from bridge.watch.backoff import Pacing
from bridge.watch.delta import Delta, DeltaType
from bridge.watch.health import StreamHealth
from bridge.watch.inventory import Entry
from bridge.watch.options import WatchOptions
from bridge.watch.tracker import StreamTracker

__all__ = ["MalformedLine", "Outlet", "Reflector", "Source", "StreamGone", "StreamSpec",
           "VeryShortWatch", "WatchOptions"]

log = logging.getLogger(__name__)

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
RESUME_ACCEPTED = 1.0  # seconds a resumed watch must stay open without a 410


class StreamGone(BridgeError):
    """The resource is no longer served (404) or no longer permitted (403)."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(str(error))
        self.error = error


class VeryShortWatch(BridgeError):
    """The server ended a watch at once without sending anything (client-go's
    ``VeryShortWatchError``): retried with backoff like any failure."""


class MalformedLine(BridgeError):
    """A watch line (or a list body) that is not a well-formed API answer."""

    def __init__(self, key: str, what: str, data: bytes, cause: Exception) -> None:
        super().__init__(f"malformed {what} ({type(cause).__name__}: {cause}): "
                         f"{bytes(data[:200])!r}{'...' if len(data) > 200 else ''}")
        self.key = key
        self.data = data


class _Gone(BridgeError):
    """410: the resume point is older than the server's history."""


class Outlet(Protocol):
    """Where a reflector's deltas go. ``reserve(count)`` waits for room for up to ``count``
    changes (cancel-safe, nothing is recorded yet); ``push`` hands the recorded deltas over
    and gives back the room they did not use, without awaiting, so a cancelled reflector
    never leaves a recorded change undelivered."""

    async def reserve(self, count: int) -> None: ...

    def push(self, deltas: list[Delta], unused: int) -> None: ...


@dataclass(frozen=True)
class StreamSpec:
    """What one stream watches, and who hears about it."""

    key: str
    resource: Resource
    namespace: str | None = None
    health: StreamHealth | None = None  # None: the reflector makes its own
    on_synced: Callable[[], None] | None = None  # called once, when the initial sync is done
    # a split (hot) kind's shard: records only the objects of the namespaces it owns
    owns: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class Source:
    """The API server as the streams of one engine read it."""

    transport: Transport
    options: WatchOptions
    list_gate: asyncio.Semaphore  # bounds concurrent lists (a watch-list's initial state too)
    pacing: Pacing = field(default_factory=Pacing)
    # recorded changes a stream may hold uncommitted (0: no bound): changes that are not
    # delivered (filtered, ``initial: skip``) free their window room at once but commit
    # only behind the delivered ones before them, so a stalled sink must also stop them
    max_pending: int = 0


@dataclass(frozen=True, slots=True)
class _Mode:
    """How a pass records changes: synthetic (a re-list's diff, no resume points) or live
    (watch events, each a resume point); delivered, or only recorded (``initial: skip``)."""

    synthetic: bool
    deliver: bool


_LIVE = _Mode(synthetic=False, deliver=True)
_RELIST = _Mode(synthetic=True, deliver=True)
_RELIST_QUIET = _Mode(synthetic=True, deliver=False)


class Reflector:
    def __init__(self, spec: StreamSpec, tracker: StreamTracker, outlet: Outlet,
                 source: Source) -> None:
        self.key = spec.key
        self.resource = spec.resource
        self.namespace = spec.namespace
        self.transport = source.transport
        self.tracker = tracker
        self.options = source.options
        self.pacing = source.pacing
        self.health = spec.health or StreamHealth(source.pacing.clock)
        self._outlet = outlet
        self._list_gate = source.list_gate
        self._max_pending = source.max_pending
        self._on_synced = spec.on_synced
        self.owns = spec.owns
        self._path = spec.resource.collection_path(spec.namespace)
        self._watch_list = source.options.watch_list
        self.noise = source.options.noise.for_resource(spec.resource)  # None: no rule
        self.labels = {"group": spec.resource.group or "core", "kind": spec.resource.kind}
        self._observed: dict[tuple[DeltaType, bool], Any] = {}  # label children, cached
        self.objects_listed = 0
        self._reads = 0  # watch reads received, ever (tells an empty watch from a live one)
        self.position: str | None = tracker.committed.resource_version
        self._first = self.position is None  # until the first sync completes
        self.synced = False

    # ---- one attempt ---------------------------------------------------------------------

    async def list_and_watch(self) -> str:
        """Re-list and diff when there is no position, then watch until the server ends the
        watch. Returns ``"timeout"`` (ended by the server) or ``"gone"`` (410: the next
        attempt re-lists); raises on every other end (see the module docstring)."""
        try:
            if self.position is None:
                await self._resync()
            else:
                await self._watch(self.position)
        except _Gone:
            return self._gone()
        except ApiError as exc:
            if exc.forbidden or exc.not_found:
                raise StreamGone(exc) from exc
            if exc.gone and self.position is not None:
                return self._gone()
            raise
        finally:
            self.health.disconnected()
        return "timeout"

    def forget_position(self) -> None:
        """The next attempt re-lists and diffs (after a failure that may have left a read
        half applied)."""
        self.position = None

    def _gone(self) -> str:
        metrics.relists.labels(**self.labels, reason="gone").inc()
        log.info("%s: resourceVersion %s is gone; re-listing and diffing", self.key,
                 self.position)
        self.position = None
        return "gone"

    def _synced(self) -> None:
        if not self.synced:
            self.synced = True
            self._first = False
            if self._on_synced is not None:
                self._on_synced()

    def _accepted(self) -> None:
        """A watch stayed open ``RESUME_ACCEPTED`` seconds: its resume point was accepted."""
        self._synced()
        self.health.flowing()

    def _check_length(self, opened: float, reads: int) -> None:
        """A watch that ended within ``very_short`` seconds without one read is an error."""
        lasted = self.pacing.clock() - opened
        if self._reads == reads and lasted < self.pacing.very_short:
            raise VeryShortWatch(f"the server ended the watch after {lasted:.2f}s without "
                                 "sending anything (very short watch)")

    # ---- re-list and diff ----------------------------------------------------------------

    async def _resync(self) -> None:
        """Bring the inventory in line with the server, then watch."""
        mode = _RELIST_QUIET if self._first and self.options.initial == "skip" else _RELIST
        if not self._first:
            metrics.relists.labels(**self.labels, reason="resync").inc()
        if self._first and self.tracker.journaled:
            # the list's resourceVersion must be journaled before its first change leaves:
            # a paginated list tells it with its first page (a watch-list only at its end)
            self.position = await self._paginated_resync(mode,
                                                         at=self.tracker.committed.listed)
            self._synced()
            await self._watch(self.position)
            return
        if self._watch_list:
            try:
                await self._watch_list_resync(mode)
                return
            except ApiError as exc:
                if exc.status not in (400, 422):  # only "invalid parameter" means unsupported
                    raise
                log.info("%s: server refused the streaming watch-list (%s); using paginated "
                         "lists", self.key, exc)
                self._watch_list = False
        self.position = await self._paginated_resync(mode)
        self._synced()
        await self._watch(self.position)

    async def _paginated_resync(self, mode: _Mode, at: str | None = None) -> str:
        """A paginated list and diff. ``at``: list exactly at that resourceVersion (the
        journaled position of an initial list a crash interrupted, so that the watch
        replays every change since); if it is gone, a fresh list (final states only)."""
        seen: set[str] = set()
        exact = {"resourceVersion": at, "resourceVersionMatch": "Exact"} if at else {}
        params = self._params(limit=str(self.options.page_size), **exact)
        # journal where this list is served only while nothing is known from before it:
        # a re-list at that position skips the deletion pass
        record = self._first and self.tracker.journaled and not at
        record = record and self.tracker.knows_nothing()
        async with self._list_gate:
            self.health.connected()
            while True:
                try:
                    data = await self.transport.request("GET", self._path, params)
                except ApiError as exc:
                    if exc.gone and ("continue" in params or exact):
                        log.info("%s: %s; a full list and diff", self.key,
                                 "list continue token expired" if "continue" in params else
                                 f"the initial list's resourceVersion {at} is gone (changes "
                                 "made since arrive as final states)")
                        seen.clear()
                        exact, record = {}, False
                        if self.tracker.journaled:
                            self.tracker.listing(None)  # what it knows may predate the list
                        params = self._params()
                        continue
                    raise
                try:
                    body = orjson.loads(data)
                    items = body.get("items") or []
                    meta = body.get("metadata") or {}
                    if record and "continue" not in params:
                        self.tracker.listing(str(meta.get("resourceVersion") or ""))
                    async with self._output(len(items), mode) as rec:
                        for item in items:
                            item.setdefault("apiVersion", self.resource.api_version)
                            item.setdefault("kind", self.resource.kind)
                            self._reconcile(item, seen, rec)
                except (ValueError, AttributeError) as exc:
                    raise MalformedLine(self.key, "list response", data, exc) from exc
                self.health.flowing()
                token = meta.get("continue")
                if not token:
                    rv = str(meta.get("resourceVersion") or "")
                    break
                params = self._params(limit=str(self.options.page_size), cont=token)
        if not exact:  # at the initial list's own position, what it did not hold was made
            await self._delete_unseen(seen, mode)  # later: the watch replays it from there
        self.tracker.mark(rv)
        return rv

    async def _watch_list_resync(self, mode: _Mode) -> None:
        """sendInitialEvents: the current state as ADDED events, then a bookmark, then live.

        The initial events are diffed like a list; after the end-of-initial-events bookmark
        the same connection carries on as an ordinary watch. When the server ends the stream
        before that bookmark, the next attempt starts over (in the same mode).
        """
        seen: set[str] = set()
        params = self._params(watch="1", sendInitialEvents="true",
                              resourceVersionMatch="NotOlderThan", allowWatchBookmarks="true",
                              timeoutSeconds=str(self._watch_timeout()))
        async with contextlib.AsyncExitStack() as stack:
            async with self._list_gate:  # the initial state counts as a list
                batches = await stack.enter_async_context(
                    self.transport.stream(self._path, params, self.options.read_timeout))
                self.health.connected()
                opened, reads = self.pacing.clock(), self._reads
                self.position, rest = await self._initial_events(batches, seen, mode)
            if self.position is not None:
                if rest:  # live events that came in the same read as the end bookmark
                    await self._apply(rest)
                await self._pump(batches)
        self._check_length(opened, reads)

    async def _initial_events(self, batches: AsyncIterator[list[bytes]], seen: set[str],
                              mode: _Mode) -> tuple[str | None, list[bytes]]:
        """Diff the initial ADDED events; at the end bookmark returns its resourceVersion and
        the lines of the same read that follow it."""
        async for lines in batches:
            self._reads += 1
            end: tuple[str, list[bytes]] | None = None
            async with self._output(len(lines), mode) as rec:
                line = b""
                try:
                    for index, line in enumerate(lines):
                        event = orjson.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ADDED":
                            self._reconcile(obj, seen, rec)
                        elif kind == "BOOKMARK":
                            meta = obj.get("metadata") or {}
                            if (meta.get("annotations") or {}).get(INITIAL_EVENTS_END) == "true":
                                end = str(meta.get("resourceVersion")), lines[index + 1:]
                                break
                        elif kind == "ERROR":
                            raise self._error_event(obj)
                except (ValueError, AttributeError) as exc:
                    raise MalformedLine(self.key, "watch line", line, exc) from exc
            self.health.flowing()
            if end is not None:
                await self._delete_unseen(seen, mode)
                self.tracker.mark(end[0])
                self._synced()
                return end
        return None, []

    def _reconcile(self, obj: dict[str, Any], seen: set[str], rec: _Recorder) -> None:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        seen.add(uid)
        self.objects_listed += 1
        rv = str(meta.get("resourceVersion"))
        known = self.tracker.get(uid)
        if known is None:
            rec.record(DeltaType.ADDED, obj, uid, rv)
        elif known.resource_version != rv:
            rec.record(DeltaType.UPDATED, obj, uid, rv)

    async def _delete_unseen(self, seen: set[str], mode: _Mode) -> int:
        """Synthetic deletions of every known object not in ``seen``; returns how many."""
        gone = [(uid, entry) for uid, entry in self.tracker.items() if uid not in seen]
        for start in range(0, len(gone), _DELETE_CHUNK):
            chunk = gone[start:start + _DELETE_CHUNK]
            async with self._output(len(chunk), mode) as rec:
                for uid, entry in chunk:
                    rec.record(DeltaType.DELETED, self._last_known(uid, entry), uid,
                               entry.resource_version)
        return len(gone)

    async def drain(self) -> int:
        """The resource went away (CRD deleted): every object still known is deleted;
        returns how many."""
        return await self._delete_unseen(set(), _RELIST)

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
            self.health.connected()
            opened, reads = self.pacing.clock(), self._reads
            # resumed: in sync once the server accepted the resourceVersion, i.e. the first
            # event is not a 410, or a second passed without one
            accepted = asyncio.get_running_loop().call_later(RESUME_ACCEPTED, self._accepted)
            try:
                await self._pump(batches)
            finally:
                accepted.cancel()
        self._check_length(opened, reads)

    async def _pump(self, batches: AsyncIterator[list[bytes]]) -> None:
        """Apply watch events until the server ends the stream, advancing the position."""
        health = self.health
        async for lines in batches:
            self._reads += 1
            await self._apply(lines)
            if not health.up:
                health.flowing()

    async def _apply(self, lines: list[bytes]) -> None:
        """One read's watch events, applied without awaiting (see ``_output``)."""
        async with self._output(len(lines), _LIVE) as rec:
            line = b""
            try:
                for line in lines:
                    event = orjson.loads(line)
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind in _WATCH_TYPES:
                        self._synced()
                        self.position = self._on_event(kind, obj, rec)
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
            except (ValueError, AttributeError) as exc:
                raise MalformedLine(self.key, "watch line", line, exc) from exc

    def _on_event(self, kind: str, obj: dict[str, Any], rec: _Recorder) -> str:
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid"))
        rv = str(meta.get("resourceVersion"))
        known = self.tracker.get(uid)
        if kind == "DELETED":
            rec.record(DeltaType.DELETED, obj, uid, rv)
        elif known is not None and known.resource_version == rv:
            self.tracker.mark(rv)  # already delivered (e.g. seen by the re-list)
        else:
            rec.record(DeltaType.ADDED if kind == "ADDED" and known is None
                       else DeltaType.UPDATED, obj, uid, rv)
        return rv

    def _error_event(self, status: dict[str, Any]) -> Exception:
        code = int(status.get("code") or 500)
        if code == 410:
            return _Gone()
        retry = (status.get("details") or {}).get("retryAfterSeconds")
        return ApiError(code, str(status.get("reason") or "Error"),
                        str(status.get("message") or ""), self._path,
                        retry_after=float(retry) if retry else None)

    # ---- output --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _output(self, room: int, mode: _Mode) -> AsyncIterator[_Recorder]:
        """Room for ``room`` changes is reserved first; the body records them without
        awaiting; what it recorded is handed over (and the unused room given back) even
        when it raises."""
        limit = self._max_pending
        # polled, and only while a sink holds back: an event set on every commit would
        # cost the hot path more than this wait ever does
        while limit and self.tracker.in_flight >= limit:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self._outlet.reserve(room)
        rec = _Recorder(self, mode)
        try:
            yield rec
        finally:
            self._hand_over(rec.out, room)

    def _hand_over(self, out: list[Delta], reserved: int) -> None:
        self._outlet.push(out, reserved - len(out))
        if not out:
            return
        for (kind, synthetic), count in Counter((d.type, d.synthetic) for d in out).items():
            counter = self._observed.get((kind, synthetic))
            if counter is None:
                counter = self._observed[(kind, synthetic)] = metrics.events_observed.labels(
                    **self.labels, type=kind.value, synthetic=str(synthetic).lower())
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


class _Recorder:
    """Records one read's (or one list page's) changes in the tracker and collects the
    deltas to hand on. Room for them was reserved by ``Reflector._output``; the mode says
    whether they are synthetic and whether they are delivered (an undelivered or filtered
    change, or an update a noise filter suppresses, counts as acknowledged at once)."""

    __slots__ = ("_deliver", "_key", "_noise", "_owns", "_resource", "_synthetic", "_tracker",
                 "_types", "out")

    def __init__(self, reflector: Reflector, mode: _Mode) -> None:
        self.out: list[Delta] = []
        self._tracker = reflector.tracker
        self._types = reflector.options.event_types
        self._resource = reflector.resource
        self._key = reflector.key
        self._noise = reflector.noise
        self._synthetic = mode.synthetic
        self._deliver = mode.deliver
        self._owns = reflector.owns

    def record(self, kind: DeltaType, obj: dict[str, Any], uid: str, rv: str) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        synthetic = self._synthetic
        if self._owns is not None and not self._owns(namespace):
            if not synthetic:  # another shard's object: only its resume point counts here
                self._tracker.mark(rv)
            return
        deliver = self._deliver and kind in self._types
        noise = self._noise
        if kind is DeltaType.DELETED:
            entry = None
        elif noise is None:
            entry = Entry(rv, namespace, name)
        else:
            entry = Entry(rv, namespace, name, noise.fingerprint(obj))
            if deliver and kind is DeltaType.UPDATED:  # against the state recorded before
                deliver = not noise.suppressed(self._tracker.get(uid), entry)
        # a live event is a resume point, a diff is not
        seq = self._tracker.record(uid, entry, None if synthetic else rv)
        if deliver:
            # positional on purpose: keyword arguments cost ~10% of a read's apply time
            self.out.append(Delta(kind, self._resource, obj, uid, rv, synthetic, self._key, seq,
                                  time.time(), namespace, name))
        else:
            self._tracker.ack(seq)


_WATCH_TYPES = frozenset(("ADDED", "MODIFIED", "DELETED"))
_DELETE_CHUNK = 500  # synthetic deletions handed over per reservation
