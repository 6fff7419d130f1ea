"""The stream supervisor: owns every stream and restarts it, paced, whatever ends it.

Supervision of the watch side (``bridge.supervision`` describes the daemon side):

- **One owner per stream.** A stream is a reflector run by ``keep_running`` in a task owned
  by ``StreamSupervisor``; CRD discovery's reflector and the resolution of built-in kinds are
  run the same way by ``bridge.watch.discovery``. Nothing a stream raises ends it, except
  ``StreamGone`` (403/404: the kind is skipped with one warning and re-checked every
  ``recheck_interval``, or dropped when its CRD is gone) and cancellation (``stop``, a
  version change, a drain).
- **Any failure restarts the stream with backoff** (``bridge.watch.backoff.Pacing``: client-go
  like, exponential with jitter up to 30 s, reset only after a healthy period, Retry-After
  honoured), counted in ``kube_event_bridge_stream_restarts_total{group,kind,reason}`` and
  logged naming the kind. Connection failures, HTTP errors (``http_NNN``) and very short
  watches resume from the stream's position (the last resourceVersion applied: nothing is
  replayed or lost); a malformed line (``malformed``) or an unexpected exception (``error``)
  re-lists and diffs, since what the failed read held is unknown. A watch that the server
  ends normally is re-opened at once only after a healthy period, else after the backoff.
- **Not flowing is visible.** ``kube_event_bridge_stream_up{group,kind}`` is 1 while every
  stream of the kind flows, 0 while one is failing, backing off, not yet flowing or skipped;
  ``not_flowing()`` names the streams that are failing; ``source_unreachable`` is true once
  *every* supervised stream has been failing for more than ``unreachable_after`` seconds
  (every request refused or answered 5xx: the API server is down or cut off), also exported
  as ``kube_event_bridge_source_up``. A supervising task that itself ends unexpectedly (a
  bug) is logged and reported by ``not_flowing()`` for ever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bridge import metrics
from bridge.errors import ApiError, TransportError
from bridge.kube.resources import Resource
from bridge.kube.transport import Transport
from bridge.watch.health import StreamHealth
from bridge.watch.kinds import KindStatus
from bridge.watch.options import EngineOptions, WatchOptions
from bridge.watch.reflector import (
    MalformedLine,
    Outlet,
    Reflector,
    Source,
    StreamGone,
    StreamSpec,
    VeryShortWatch,
)
from bridge.watch.selection import Selection, kind_names
from bridge.watch.tracker import StreamCheckpoint
from bridge.watch.trackers import Trackers

if TYPE_CHECKING:
    from prometheus_client import Gauge

log = logging.getLogger(__name__)


@dataclass
class WatchContext:
    """What the parts of one engine share."""

    transport: Transport
    selection: Selection
    options: EngineOptions
    trackers: Trackers
    kinds: dict[str, KindStatus] = field(default_factory=dict)  # str(resource) -> decision
    list_gate: asyncio.Semaphore = field(default_factory=asyncio.Semaphore)

    def source(self, options: WatchOptions | None = None) -> Source:
        return Source(self.transport, options or self.options.watch, self.list_gate,
                      self.options.pacing, max_pending=2 * self.options.max_in_flight)


# ---- one stream: attempts for ever, paced ------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """How a failed attempt is restarted."""

    reason: str  # the restart reason label
    relist: bool  # the next attempt re-lists and diffs (else it resumes from the position)
    retry_after: float | None = None
    level: int = logging.WARNING


def classify(exc: Exception) -> Failure:
    if isinstance(exc, ApiError):
        busy = exc.status in (429, 503)  # the server says "later" (e.g. storage initializing)
        return Failure(f"http_{exc.status}", False, exc.retry_after,
                       logging.INFO if busy else logging.WARNING)
    if isinstance(exc, TransportError):
        return Failure("connection", False)
    if isinstance(exc, VeryShortWatch):
        return Failure("very_short_watch", False)
    if isinstance(exc, MalformedLine):
        return Failure("malformed", True)
    return Failure("error", True, level=logging.ERROR)


async def keep_running(reflector: Reflector) -> None:
    """Run one stream's attempts for ever (see the module docstring); raises only
    ``StreamGone`` (and ``CancelledError``)."""
    pacing, health, labels = reflector.pacing, reflector.health, reflector.labels
    backoff = pacing.backoff()
    what = f"{reflector.key} ({reflector.resource.kind})"
    while True:
        try:
            ended = await reflector.list_and_watch()
        except StreamGone:
            raise
        except Exception as exc:
            failure = classify(exc)
            if health.healthy(pacing.healthy_after):
                backoff.reset()  # the failure ends a healthy period: start over, small
            health.failed(failure.reason, str(exc))
            metrics.stream_restarts.labels(**labels, reason=failure.reason).inc()
            metrics.watch_restarts.labels(**labels, reason=failure.reason).inc()
            if failure.relist:
                reflector.forget_position()
            delay = pacing.delay(backoff, failure.retry_after)
            log.log(failure.level, "%s: %s; %s in %.1fs", what, exc,
                    "re-listing and diffing" if failure.relist else "retrying", delay,
                    exc_info=exc if failure.reason == "error" else None)
            await pacing.sleep(delay)
            continue
        metrics.watch_restarts.labels(**labels, reason=ended).inc()
        if health.healthy(pacing.healthy_after):
            backoff.reset()  # flowed long enough: re-open at once
            continue
        delay = pacing.delay(backoff)
        log.debug("%s: watch ended (%s) before a healthy period; re-opening in %.1fs", what,
                  ended, delay)
        await pacing.sleep(delay)


# ---- every stream --------------------------------------------------------------------------


@dataclass(eq=False)
class _Stream:
    reflector: Reflector
    task: asyncio.Task[None]
    labels: tuple[str, str]  # (group, kind) of the stream_up gauge


@dataclass(eq=False)
class _Watched:
    """A supervised thing that is not a resource stream (CRD discovery, a built-in kind's
    resolution): counted in readiness and source reachability."""

    health: StreamHealth
    labels: tuple[str, str] | None


class StreamSupervisor:
    def __init__(self, context: WatchContext, outlet: Outlet) -> None:
        self._ctx = context
        self._outlet = outlet
        self._streams: dict[str, _Stream] = {}
        self._others: dict[str, _Watched] = {}
        self._skipped: dict[str, tuple[str, str]] = {}  # key -> labels, while skipped
        self._broken: set[str] = set()  # supervising tasks that ended unexpectedly
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gauges: set[tuple[str, str]] = set()
        self._stopping = False

    # ---- lifecycle -----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task this supervisor owns (cancelled by ``stop``); one that ends with an
        exception is logged and reported by ``not_flowing``."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or self._stopping:
            return
        exc = task.exception()
        if exc is not None:
            log.error("watch task %r failed; it is not restarted (a bug: please report it)",
                      task.get_name(), exc_info=exc)
            self._broken.add(task.get_name())

    async def stop(self) -> None:
        self._stopping = True
        tasks = [s.task for s in self._streams.values()] + list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._streams.clear()
        self._others.clear()
        self._skipped.clear()
        for labels in self._gauges:
            _remove_gauge(metrics.stream_up, labels)
            _remove_gauge(metrics.kind_skipped, labels)
        self._gauges.clear()
        metrics.watched_kinds.set(0)

    # ---- streams -------------------------------------------------------------------------

    def start_resource(self, resource: Resource, builtin: bool) -> None:
        """Watch ``resource`` (one stream, or one per selected namespace); a stream already
        watching it at another version is replaced, carrying its position and inventory."""
        ctx = self._ctx
        namespaces: list[str | None]
        if resource.namespaced and ctx.selection.namespaces:
            namespaces = list(ctx.selection.namespaces)
        else:
            namespaces = [None]
        shard = ctx.options.shard
        split = shard is not None and shard.splits(kind_names(resource))
        for namespace in namespaces:
            key = resource.group_resource + (f"@{namespace}" if namespace else "")
            if shard is not None and not split and not shard.owns_stream(key):
                continue  # another shard's stream
            current = self._streams.get(key)
            if current is not None:
                if current.reflector.resource == resource:
                    continue
                log.info("%s: preferred version changed %s -> %s; re-watching", key,
                         current.reflector.resource.version, resource.version)
                current.task.cancel()  # its tracker (position + inventory) carries over
            options = ctx.options.watch
            selector = Selection.label_selector(resource, options.label_selector)
            if selector != options.label_selector:
                options = dataclasses.replace(options, label_selector=selector)
            reflector = Reflector(
                StreamSpec(key, resource, namespace, StreamHealth(ctx.options.pacing.clock),
                           owns=shard.owns_namespace if shard is not None and split else None),
                ctx.trackers.tracker(key, resource, builtin), self._outlet,
                ctx.source(options))
            labels = (reflector.labels["group"], reflector.labels["kind"])
            reflector.health.on_change = lambda labels=labels: self._refresh(labels)
            task = asyncio.create_task(self._supervise(key, reflector), name=f"stream {key}")
            self._streams[key] = _Stream(reflector, task, labels)
            self._skipped.pop(key, None)
            self._refresh(labels)
            if current is not None and current.labels != labels:
                self._refresh(current.labels)
        metrics.watched_kinds.set(len(self._streams))

    async def _supervise(self, key: str, reflector: Reflector) -> None:
        try:
            await keep_running(reflector)
        except StreamGone as exc:
            self._gone(key, reflector, exc)
        except Exception as exc:  # a bug in the supervision itself: never silent
            log.error("%s: the stream's supervisor failed; the stream stopped (a bug: please "
                      "report it)", key, exc_info=exc)
            reflector.health.failed("supervisor", repr(exc))
            self._broken.add(f"stream {key}")
            raise

    def _gone(self, key: str, reflector: Reflector, exc: StreamGone) -> None:
        stream = self._streams.get(key)
        labels = (reflector.labels["group"], reflector.labels["kind"])
        if stream is not None and stream.reflector is reflector:
            del self._streams[key]
            metrics.watched_kinds.set(len(self._streams))
        status = self._ctx.kinds.get(str(reflector.resource))
        if exc.error.not_found and (status is None or not status.watched):
            self._refresh(labels)
            return  # the CRD is gone (discovery drains what its stream still held)
        reason = "forbidden" if exc.error.forbidden else "vanished"
        self._skipped[key] = labels
        self._refresh(labels)
        self._skip(reflector.resource, reason, exc.error)
        self.spawn(self._recheck(key, reflector.resource), f"recheck {key}")

    def _skip(self, resource: Resource, reason: str, error: ApiError) -> None:
        log.warning(
            "%s is %s (%s): skipping it, other kinds continue; re-checking every %.0fs. %s",
            resource, reason, error.message or error.reason, self._ctx.options.recheck_interval,
            "Grant get/list/watch on it to the bridge's identity." if reason == "forbidden"
            else "",
        )
        status = self._ctx.kinds.get(str(resource))
        if status is not None:
            status.watched = False
            status.reason = reason
        metrics.skipped_kinds.labels(reason=reason).inc()

    async def _recheck(self, key: str, resource: Resource) -> None:
        kinds = self._ctx.kinds
        while str(resource) in kinds:  # until its CRD is deleted
            await asyncio.sleep(self._ctx.options.recheck_interval)
            try:
                await self._ctx.transport.request("GET", resource.collection_path(),
                                                  {"limit": "1"})
            except ApiError as exc:
                if exc.forbidden or exc.not_found:
                    continue  # other errors: the stream's own supervision retries them
            except TransportError:
                continue
            status = kinds.get(str(resource))
            if status is not None and status.reason in ("forbidden", "vanished"):
                reason = status.reason
                status.watched, status.reason = True, f"re-checked after {reason}"
                metrics.skipped_kinds.labels(reason=reason).dec()
                log.info("%s is accessible again; watching it", resource)
                self.start_resource(resource, status.builtin)
            return
        labels = self._skipped.pop(key, None)
        if labels is not None:
            self._refresh(labels)

    def drain(self, key: str, checkpoint: StreamCheckpoint) -> None:
        self.spawn(self._drain(key, checkpoint), f"drain {key}")

    async def _drain(self, key: str, checkpoint: StreamCheckpoint) -> None:
        """The stream's CRD is gone: stop watching it and emit the deletion of every object
        it still knows (none, normally; some when its watch was cut while the CRD's objects
        were deleted, or when the CRD was deleted while the bridge was stopped)."""
        stream = self._streams.pop(key, None)
        labels = self._skipped.pop(key, None)
        if stream is not None:
            stream.task.cancel()
            await asyncio.gather(stream.task, return_exceptions=True)
            metrics.watched_kinds.set(len(self._streams))
            labels = stream.labels
        if labels is not None:
            self._refresh(labels)
        plural, _, group = group_resource(key).partition(".")
        resource = Resource(group, checkpoint.version, plural, checkpoint.kind, True)
        reflector = Reflector(StreamSpec(key, resource),
                              self._ctx.trackers.tracker(key, resource, builtin=False),
                              self._outlet, self._ctx.source())
        deleted = await reflector.drain()
        if deleted:
            log.info("%s: its CRD is gone; emitted the deletion of the %d objects it still "
                     "knew", key, deleted)

    # ---- other supervised things (discovery) ---------------------------------------------

    def watch_health(self, key: str, health: StreamHealth,
                     labels: tuple[str, str] | None = None) -> None:
        """Count ``health`` in readiness, reachability and (with labels) ``stream_up``."""
        self._others[key] = _Watched(health, labels)
        if labels is not None:
            health.on_change = lambda: self._refresh(labels)
            self._refresh(labels)

    def forget_health(self, key: str) -> None:
        watched = self._others.pop(key, None)
        if watched is not None and watched.labels is not None:
            self._refresh(watched.labels)

    # ---- status --------------------------------------------------------------------------

    def reflectors(self) -> list[Reflector]:
        return [s.reflector for s in self._streams.values()]

    def stream_keys(self) -> list[str]:
        return sorted(self._streams)

    def _healths(self) -> list[tuple[str, StreamHealth]]:
        return ([(k, s.reflector.health) for k, s in self._streams.items()]
                + [(k, w.health) for k, w in self._others.items()])

    def not_flowing(self, longer_than: float = 0.0) -> list[str]:
        """Streams failing (for more than ``longer_than`` seconds), sorted; CRD discovery is
        ``crds``, a built-in kind still being resolved ``builtin <spec>``."""
        failing = {key for key, health in self._healths()
                   if (since := health.failing_for()) is not None and since >= longer_than}
        return sorted(failing | self._broken)

    @property
    def source_unreachable(self) -> bool:
        """Every supervised stream has been failing for more than ``unreachable_after``."""
        healths = self._healths()
        limit = self._ctx.options.unreachable_after
        return bool(healths) and all(
            (since := health.failing_for()) is not None and since > limit
            for _, health in healths)

    def failures(self) -> dict[str, str]:
        """Each failing stream's last restart reason and error."""
        return {key: f"{health.reason}: {health.error}" for key, health in self._healths()
                if health.failing_since is not None}

    def _refresh(self, labels: tuple[str, str]) -> None:
        ups = [s.reflector.health.up for s in self._streams.values() if s.labels == labels]
        ups += [w.health.up for w in self._others.values() if w.labels == labels]
        skipped = [False for other in self._skipped.values() if other == labels]
        ups += skipped
        if skipped:
            metrics.kind_skipped.labels(group=labels[0], kind=labels[1]).set(1)
        else:
            _remove_gauge(metrics.kind_skipped, labels)
        if not ups:
            if labels in self._gauges:
                self._gauges.discard(labels)
                _remove_gauge(metrics.stream_up, labels)
            return
        self._gauges.add(labels)
        metrics.stream_up.labels(group=labels[0], kind=labels[1]).set(1 if all(ups) else 0)


def _remove_gauge(gauge: Gauge, labels: tuple[str, str]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def group_resource(key: str) -> str:
    """A stream key is ``plural.group``, with ``@namespace`` for a per-namespace stream."""
    return key.partition("@")[0]
