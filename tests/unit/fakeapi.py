"""An in-memory stand-in for the API server behind the ``Transport`` seam (unit tests only).

It keeps objects per collection path, a global resourceVersion counter and an event history;
lists paginate, watches replay history after a resourceVersion and then follow live writes,
``compact()`` makes older resourceVersions answer 410, ``drop_watches()`` cuts connections.

Faults: ``fail_next_watches`` (connection refused), ``errors[path]`` (the next requests to a
path raise these, in order), ``empty_watches`` (watches on these paths end at once, empty),
``cut_initial_events[path]`` (the next watch-list ends after that many initial events,
before its end bookmark), ``send_malformed(path)`` (the open watches on a path get a line
that is not JSON). ``stamps`` records (``clock()``, verb, path) per request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson

from bridge.errors import ApiError, TransportError


class FakeApi:
    def __init__(self, watch_list: bool = True) -> None:
        self.rv = 100
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.compacted = 0
        self.watch_list = watch_list
        self.forbidden: set[str] = set()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._changed = asyncio.Condition()
        self._generation = 0
        self.fail_next_watches = 0
        self.errors: dict[str, list[Exception]] = {}
        self.empty_watches: set[str] = set()
        self.cut_initial_events: dict[str, int] = {}
        self._malformed: dict[str, int] = {}
        self.clock = time.monotonic
        self.stamps: list[tuple[float, str, str]] = []
        self.documents: dict[str, dict[str, Any]] = {}  # path -> discovery document

    # ---- writes --------------------------------------------------------------------------

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    async def _record(self, path: str, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, path, kind, orjson.loads(orjson.dumps(obj))))
        async with self._changed:
            self._changed.notify_all()

    async def create(self, path: str, name: str, namespace: str = "", **spec: Any) -> dict[
            str, Any]:
        meta: dict[str, Any] = {"name": name, "uid": str(uuid.uuid4()),
                                "resourceVersion": self._bump()}
        if namespace:
            meta["namespace"] = namespace
        obj = {"apiVersion": "x.example.com/v1", "kind": "Thing", "metadata": meta,
               "spec": dict(spec)}
        self.objects.setdefault(path, {})[meta["uid"]] = obj
        await self._record(path, "ADDED", obj)
        return obj

    async def update(self, path: str, uid: str, **spec: Any) -> dict[str, Any]:
        obj = self.objects[path][uid]
        obj["spec"].update(spec)
        obj["metadata"]["resourceVersion"] = self._bump()
        await self._record(path, "MODIFIED", obj)
        return obj

    async def delete(self, path: str, uid: str) -> dict[str, Any]:
        obj = self.objects[path].pop(uid)
        obj["metadata"]["resourceVersion"] = self._bump()
        await self._record(path, "DELETED", obj)
        return obj

    def compact(self) -> None:
        self.compacted = self.rv

    async def send_malformed(self, path: str) -> None:
        """The watches open on ``path`` get one line that is not JSON."""
        self._malformed[path] = self._malformed.get(path, 0) + 1
        async with self._changed:
            self._changed.notify_all()

    def _fault(self, path: str) -> None:
        queued = self.errors.get(path)
        if queued:
            raise queued.pop(0)

    async def drop_watches(self) -> None:
        self._generation += 1
        async with self._changed:
            self._changed.notify_all()

    # ---- Transport -----------------------------------------------------------------------

    async def request(self, method: str, path: str, params: Mapping[str, str] | None = None,
                      body: bytes | None = None, content_type: str = "") -> bytes:
        params = dict(params or {})
        self.requests.append((path, params))
        self.stamps.append((self.clock(), method, path))
        self._fault(path)
        if path in self.forbidden:
            raise ApiError(403, "Forbidden", "nope", path)
        if path in self.documents:
            return orjson.dumps(self.documents[path])
        if path not in self.objects:
            raise ApiError(404, "NotFound", "no such resource", path)
        items = sorted(self.objects[path].values(), key=lambda o: o["metadata"]["name"])
        start = 0
        if "continue" in params:
            token_rv, offset = params["continue"].split(":")
            if int(token_rv) <= self.compacted:
                raise ApiError(410, "Expired", "continue token expired", path)
            start = int(offset)
        limit = int(params.get("limit", "0")) or len(items)
        page = items[start:start + limit]
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(items):
            meta["continue"] = f"{self.rv}:{start + limit}"
        return orjson.dumps({"items": page, "metadata": meta})

    @asynccontextmanager
    async def stream(self, path: str, params: Mapping[str, str],
                     read_timeout: float) -> AsyncIterator[AsyncIterator[list[bytes]]]:
        params = dict(params)
        self.requests.append((path, params))
        self.stamps.append((self.clock(), "WATCH", path))
        if self.fail_next_watches > 0:
            self.fail_next_watches -= 1
            raise TransportError("connection refused (fake)")
        self._fault(path)
        if path in self.forbidden:
            raise ApiError(403, "Forbidden", "nope", path)
        if path not in self.objects:
            raise ApiError(404, "NotFound", "no such resource", path)
        if params.get("sendInitialEvents") == "true" and not self.watch_list:
            raise ApiError(422, "Invalid", "sendInitialEvents is forbidden", path)
        if path in self.empty_watches:
            yield _empty()
            return
        yield self._events(path, params)

    async def _events(self, path: str, params: dict[str, str]) -> AsyncIterator[list[bytes]]:
        generation = self._generation
        if params.get("sendInitialEvents") == "true":
            since = self.rv  # the initial state and its end, as one read
            initial = [orjson.dumps({"type": "ADDED", "object": obj})
                       for obj in list(self.objects[path].values())]
            cut = self.cut_initial_events.pop(path, None)
            if cut is not None:  # the server ends the stream before the end bookmark
                yield initial[:cut]
                return
            yield [*initial,
                   orjson.dumps({"type": "BOOKMARK", "object": {"metadata": {
                       "resourceVersion": str(since),
                       "annotations": {"k8s.io/initial-events-end": "true"}}}})]
        else:
            since = int(params["resourceVersion"])
            if since < self.compacted:
                yield [orjson.dumps({"type": "ERROR", "object": {
                    "kind": "Status", "code": 410, "reason": "Expired",
                    "message": "too old resource version"}})]
                return
        while True:
            if self._malformed.get(path):
                self._malformed[path] -= 1
                yield [b'{"type": "MODIFIED", "object": {"metadata": ']
            ready = []  # everything since the last read, as one read
            for rv, event_path, kind, obj in list(self.history):
                if rv > since and event_path == path:
                    since = rv
                    ready.append(orjson.dumps({"type": kind, "object": obj}))
            if ready:
                yield ready
            async with self._changed:
                if generation != self._generation:
                    return
                if not (any(rv > since and p == path for rv, p, _, _ in self.history)
                        or self._malformed.get(path)):
                    await self._changed.wait()
            if generation != self._generation:
                return

    async def close(self) -> None:
        return None


async def _empty() -> AsyncIterator[list[bytes]]:
    return
    yield  # an async generator that yields nothing


class VirtualTime:
    """A clock that moves only when a sleeper sleeps (``Pacing(clock=..., sleep=...)``):
    request rates and backoff delays are asserted over simulated time, not wall-clock speed.
    ``advance`` moves it by hand (a connection that stays open for a while)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds
