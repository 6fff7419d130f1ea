"""Discovery: which resources exist and are selected, live; it tells the supervisor to start,
re-watch or drain streams.

- **Built-in kinds** named in ``watch.builtins`` are resolved from the API server's discovery
  documents, each on its own: a transient failure (connection, 5xx, 429) is retried with the
  streams' backoff (shown by ``not_flowing()`` as ``builtin <spec>``), a kind that is not
  served or not permitted is skipped with a warning.
- **CRDs** are themselves watched by a reflector, supervised like any stream
  (``keep_running``: restarted with backoff whatever ends it, re-listing and diffing the CRDs
  after a failure; ``crds`` in ``not_flowing()``). Its changes start a stream when a CRD
  becomes Established, re-watch at a new version when the preferred served version changes
  (carrying the stream's position and inventory, so nothing is lost or repeated), and drain
  a stream when its CRD is deleted (its objects' deletions are emitted, then it stops).
  Without permission to list CRDs, CRD kinds are not watched (one error log).
- ``synced`` once every built-in kind is resolved (or refused) and the CRDs were listed
  once; then checkpointed streams whose CRD is gone are drained, and checkpointed streams not
  watched now are named in a warning (their state is kept).
"""

from __future__ import annotations

import asyncio
import logging

from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from bridge.watch.health import StreamHealth
from bridge.watch.kinds import (
    CRD_RESOURCE,
    KindStatus,
    crd_group_resource,
    crd_resource,
    resolve_builtin,
)
from bridge.watch.options import WatchOptions
from bridge.watch.reflector import Reflector, StreamGone, StreamSpec
from bridge.watch.selection import parse_builtin
from bridge.watch.supervisor import (
    StreamSupervisor,
    WatchContext,
    classify,
    group_resource,
    keep_running,
)
from bridge.watch.tracker import StreamCheckpoint, StreamTracker

log = logging.getLogger(__name__)

CRDS = "crds"  # CRD discovery's key in logs and ``not_flowing()``


class Discovery:
    def __init__(self, context: WatchContext, supervisor: StreamSupervisor) -> None:
        self._ctx = context
        self._supervisor = supervisor
        self._crds: set[str] = set()  # group_resource of every CRD that exists
        self._crd_uids: dict[str, str] = {}  # group_resource -> the uid of its current CRD
        self._waiting = 0  # built-in kinds and CRD discovery not synced yet
        self._crds_synced = False
        self.synced = asyncio.Event()

    def start(self) -> None:
        selection = self._ctx.selection
        watch_crds = bool(selection.crds or selection.include)
        self._waiting = len(selection.builtins) + watch_crds
        if not self._waiting:
            self.synced.set()
        for spec in selection.builtins:
            self._supervisor.spawn(self._resolve(spec), f"resolve {spec}")
        if watch_crds:
            self._supervisor.spawn(self._watch_crds(), "crd-discovery")

    def _done(self) -> None:
        self._waiting -= 1
        if self._waiting == 0 and not self.synced.is_set():
            self.synced.set()
            if self._crds_synced:
                self._check_checkpoints()

    # ---- built-ins -----------------------------------------------------------------------

    async def _resolve(self, spec: str) -> None:
        key = f"builtin {spec}"
        pacing = self._ctx.options.pacing
        health = StreamHealth(pacing.clock)
        self._supervisor.watch_health(key, health)
        backoff = pacing.backoff()
        try:
            parse_builtin(spec)
            while True:
                try:
                    resource = await resolve_builtin(self._ctx.transport, spec)
                    break
                except LookupError:
                    raise
                except Exception as exc:
                    failure = classify(exc)
                    health.failed(failure.reason, str(exc))
                    delay = pacing.delay(backoff, failure.retry_after)
                    log.log(failure.level, "built-in kind %s cannot be resolved (%s); "
                            "retrying in %.1fs", spec, exc, delay)
                    await pacing.sleep(delay)
        except (LookupError, ValueError) as exc:
            log.warning("built-in kind %s is not watched: %s", spec, exc)
        else:
            self._consider(resource, builtin=True)
        finally:
            self._supervisor.forget_health(key)
        self._done()

    def _consider(self, resource: Resource, builtin: bool) -> None:
        kinds = self._ctx.kinds
        watched, reason = self._ctx.selection.decide(resource, builtin)
        kinds[str(resource)] = KindStatus(resource, watched, reason, builtin)
        for key in [k for k in kinds if k != str(resource)
                    and kinds[k].resource.group_resource == resource.group_resource]:
            del kinds[key]  # an older version of the same resource
        if watched:
            self._supervisor.start_resource(resource, builtin)

    # ---- CRDs ----------------------------------------------------------------------------

    async def _watch_crds(self) -> None:
        health = StreamHealth(self._ctx.options.pacing.clock)
        tracker = StreamTracker(StreamCheckpoint())
        options = WatchOptions(read_timeout=self._ctx.options.watch.read_timeout)
        reflector = Reflector(
            StreamSpec(CRDS, CRD_RESOURCE, health=health, on_synced=self._on_crds_synced),
            tracker, _CrdOutlet(self, tracker), self._ctx.source(options))
        self._supervisor.watch_health(CRDS, health, (CRD_RESOURCE.group, CRD_RESOURCE.kind))
        try:
            await keep_running(reflector)
        except StreamGone as exc:
            log.error("cannot list CustomResourceDefinitions (%s): CRD kinds are not watched. "
                      "Grant get/list/watch on customresourcedefinitions.apiextensions.k8s.io",
                      exc)
            self._supervisor.forget_health(CRDS)
            if not reflector.synced:
                self._done()

    def _on_crds_synced(self) -> None:
        self._crds_synced = True
        self._done()

    def _check_checkpoints(self) -> None:
        watched = set(self._supervisor.stream_keys())
        for key, tracker in self._ctx.trackers.items():
            if key in watched:
                continue
            checkpoint = tracker.committed
            if checkpoint.crd and checkpoint.kind and group_resource(key) not in self._crds:
                self._supervisor.drain(key, checkpoint)
                continue
            log.warning("%s is in the checkpoint but not watched now (its CRD is gone, not "
                        "Established, or no longer selected): its state (%d objects) is kept, "
                        "so its changes are caught up if it is watched again", key,
                        len(checkpoint.inventory))

    def on_crd(self, delta: Delta) -> None:
        kinds = self._ctx.kinds
        crd = crd_group_resource(delta.obj)
        deleted = delta.type is DeltaType.DELETED
        if deleted and self._crd_uids.get(crd, delta.uid) != delta.uid:
            return  # an older incarnation (deleted and re-created within one re-list diff)
        if deleted:
            self._crds.discard(crd)
            self._crd_uids.pop(crd, None)
        else:
            self._crds.add(crd)
            self._crd_uids[crd] = delta.uid
        resource = None if deleted else crd_resource(delta.obj, self._ctx.options.versions)
        if resource is not None:
            self._consider(resource, builtin=False)
        elif deleted or (delta.obj.get("metadata") or {}).get("deletionTimestamp"):
            for key in [k for k, s in kinds.items() if s.resource.group_resource == crd]:
                del kinds[key]
        if deleted:  # the API server deleted the CRD's objects first; a stream that missed
            # some of that (its watch cut at the time) emits their deletions now
            for key, tracker in self._ctx.trackers.items():
                if group_resource(key) == crd:
                    self._supervisor.drain(key, tracker.committed)


class _CrdOutlet:
    """CRD changes are applied to discovery at once; nothing goes downstream."""

    def __init__(self, discovery: Discovery, tracker: StreamTracker) -> None:
        self._discovery = discovery
        self._tracker = tracker

    async def reserve(self, count: int) -> None:
        return None

    def push(self, deltas: list[Delta], unused: int) -> None:
        for delta in deltas:
            try:
                self._discovery.on_crd(delta)
            except Exception:  # one unusable CRD must not stop discovery of the others
                log.exception("CRD %s/%s could not be applied", delta.uid, delta.resource_version)
            finally:
                self._tracker.ack(delta.sequence)
