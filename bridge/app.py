"""The daemon: wires config -> credentials -> engine -> delivery -> sinks, with checkpoints,
the health server, progress logs and graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import time

from bridge import metrics
from bridge.checkpoint.codec import CheckpointError, decode
from bridge.checkpoint.factory import build_store
from bridge.checkpoint.store import Saver
from bridge.config.model import Config
from bridge.delivery.pipeline import Delivery
from bridge.delivery.size import SizePolicy
from bridge.errors import BridgeError
from bridge.events.builder import EventBuilder, EventOptions
from bridge.events.redact import RedactionRule, Redactor
from bridge.httpserver import HealthServer
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.leader import LeaderElector, default_identity
from bridge.metrics import synced_streams
from bridge.watch.delta import DeltaType
from bridge.watch.engine import EngineOptions, WatchEngine
from bridge.watch.reflector import WatchOptions
from bridge.watch.selection import Selection
from sinks import registry
from sinks.base import Sink, SinkError

log = logging.getLogger("bridge")


class StartupError(BridgeError):
    """Something the daemon needs is unavailable at start (exit code 3)."""


def selection(config: Config) -> Selection:
    w = config.watch
    return Selection(crds=w.crds == "all", builtins=tuple(w.builtins), include=tuple(w.include),
                     exclude=tuple(w.exclude), namespaces=tuple(w.namespaces))


def engine_options(config: Config) -> EngineOptions:
    w = config.watch
    return EngineOptions(
        watch=WatchOptions(page_size=w.page_size, read_timeout=w.read_timeout,
                           initial=w.initial, label_selector=w.label_selector,
                           field_selector=w.field_selector, watch_list=w.watch_list,
                           event_types=frozenset(DeltaType(t) for t in w.event_types)),
        max_in_flight=config.max_in_flight, list_concurrency=w.list_concurrency,
        recheck_interval=w.recheck_interval, versions=dict(w.versions))


def event_builder(config: Config) -> EventBuilder:
    e = config.events
    redactor = Redactor(tuple(RedactionRule(r.kind, tuple(r.paths)) for r in e.redact),
                        e.allow_secret_data)
    return EventBuilder(EventOptions(cluster=config.cluster, type_prefix=e.type_prefix,
                                     partition_key=e.partition_key, previous=e.previous,
                                     strip_managed_fields=e.strip_managed_fields,
                                     redactor=redactor))


class Bridge:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.engine: WatchEngine | None = None
        self.delivery: Delivery | None = None
        self.synced_at: float | None = None
        self.elector: LeaderElector | None = None
        self.lost_leadership = False

    def ready(self) -> tuple[bool, str]:
        elector = self.elector
        if elector is not None and not elector.leading:
            if elector.holder is None:  # not yet known whether this instance will lead
                return False, "starting: acquiring the leader lease"
            return True, f"standby (the leader lease is held by {elector.holder})"
        if self.engine is None or self.delivery is None:
            return False, "starting"
        if self.synced_at is None:
            synced, total, listed = self.engine.sync_progress()
            return False, f"initial sync: {synced}/{total} kinds, {listed} objects listed"
        down = self.delivery.sinks_down()
        if down:
            return False, f"sinks down: {', '.join(down)}"
        return True, "ready"

    async def run(self) -> int:
        """Run until a stop signal (exit code 0) or a loss of leadership (exit code 1)."""
        config = self.config
        credentials = auth.load(config.kubeconfig, config.context)
        transport = HttpTransport(credentials)
        http = None
        try:
            if config.http.port:
                http = HealthServer(config.http.address, config.http.port, self.ready)
                try:
                    await http.start()
                except OSError as exc:
                    http = None
                    raise StartupError(
                        f"cannot listen on {config.http.address}:{config.http.port} for "
                        f"/metrics: {exc.strerror or exc}. Set http.port to a free port "
                        "(0 disables the endpoint).") from exc
            elector = self.elector = self._elector(transport)
            if elector is not None and not await self._lead(elector):
                return 0  # stopped while standing by
            metrics.is_leader.set(1)
            try:
                await self._work(transport, elector)
            finally:
                if elector is not None:
                    await elector.release()
            return 1 if self.lost_leadership else 0
        finally:
            await transport.close()
            if http is not None:
                await http.stop()

    def _elector(self, transport: HttpTransport) -> LeaderElector | None:
        le = self.config.leader_election
        if not le.enabled:
            return None
        return LeaderElector(transport, le.namespace or auth.own_namespace(), le.name,
                             default_identity(), le.lease_duration, le.renew_deadline,
                             le.retry_period)

    async def _lead(self, elector: LeaderElector) -> bool:
        """Stand by until leader (True) or until told to stop (False)."""
        acquire = asyncio.create_task(elector.acquire())
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not acquire.done():
            acquire.cancel()
            await asyncio.gather(acquire, return_exceptions=True)
            return False
        acquire.result()
        return True

    async def _keep_leading(self, elector: LeaderElector) -> None:
        await elector.keep()
        log.error("lost leadership: stopping so that a standby continues from the checkpoint")
        self.lost_leadership = True
        self.stopping.set()

    async def _work(self, transport: HttpTransport, elector: LeaderElector | None) -> None:
        config = self.config
        store = build_store(config, transport)
        try:
            try:
                checkpoints = decode(await store.load())
            except (CheckpointError, OSError) as exc:
                raise StartupError(f"cannot read the checkpoint from {store.description}: "
                                   f"{exc}") from exc
            if checkpoints:
                log.info("resuming %d streams from the checkpoint in %s", len(checkpoints),
                         store.description)
            sinks = [registry.build(s, config.cluster, config.events.max_bytes)
                     for s in config.sinks]
            await self._connect(sinks)
            engine = self.engine = WatchEngine(transport, selection(config),
                                               engine_options(config), checkpoints)
            e = config.events
            delivery = self.delivery = Delivery(
                engine, event_builder(config), sinks,
                SizePolicy(e.max_bytes, tuple(e.drop_fields), e.oversize))
            saver = Saver(store, engine.checkpoints, config.checkpoint.interval)
            await delivery.start()
            await engine.start()
            tasks = [asyncio.create_task(saver.run(), name="checkpoints"),
                     asyncio.create_task(self._progress(engine), name="progress")]
            if elector is not None:
                tasks.append(asyncio.create_task(self._keep_leading(elector), name="lease"))
            await self.stopping.wait()
            log.info("stopping: no new changes are read; flushing %d in-flight events "
                     "(grace %.0fs)", delivery.in_flight, config.shutdown_grace)
            await engine.stop()
            flushed = await self._flush(engine, delivery, config.shutdown_grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            saved = await saver.save()
            await delivery.stop()
            log.info("stopped: %s; checkpoint %s", "all events flushed" if flushed else
                     "grace period over, unflushed events will be re-sent on the next start",
                     "saved" if saved else "NOT saved")
        finally:
            await store.close()

    async def _connect(self, sinks: list[Sink]) -> None:
        """Connect what is reachable now; the rest connect on first send (with retries), and
        readiness stays false until they do."""
        for sink in sinks:
            try:
                await sink.connect()
                log.info("sink %s (%s) connected", sink.settings.name, sink.settings.type)
            except SinkError as exc:
                if not exc.transient:
                    raise StartupError(str(exc)) from exc
                log.warning("%s; will keep retrying with backoff (readiness stays false)", exc)

    async def _flush(self, engine: WatchEngine, delivery: Delivery, grace: float) -> bool:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if engine.queued == 0 and delivery.in_flight == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _progress(self, engine: WatchEngine) -> None:
        started = last_log = time.monotonic()
        while True:
            await asyncio.sleep(0.2)
            synced, total, listed = engine.sync_progress()
            synced_streams.set(synced)
            if engine.discovery_synced and synced == total:
                if self.synced_at is None:
                    self.synced_at = time.monotonic()
                    log.info("initial sync complete: %d kinds, %d objects listed, %.1fs",
                             total, listed, self.synced_at - started)
            elif time.monotonic() - last_log >= 2.0:
                last_log = time.monotonic()
                log.info("initial sync: %d/%d kinds synced, %d objects listed", synced, total,
                         listed)
