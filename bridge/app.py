"""The daemon: wires config -> credentials -> engine -> delivery -> sinks, with checkpoints,
the health server, progress logs and graceful shutdown.

How it ends (the exit code says which): a stop signal flushes in-flight events within
``shutdown_grace``, journals the acknowledged positions and exits 0; a fatal failure of a
daemon-level task (``bridge.supervision``), a fenced checkpoint or a lost Lease stops
reading and sending at once, writes nothing more and exits 1, so that the orchestrator
restarts it (or a standby takes over) from the checkpoint."""

from __future__ import annotations

import asyncio
import logging
import time

from bridge import metrics
from bridge.checkpoint.factory import build_store
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.replay import restore
from bridge.checkpoint.store import CheckpointStore
from bridge.checkpoint.writer import CheckpointWriter, WriterOptions
from bridge.config.model import Config
from bridge.delivery.pipeline import Delivery
from bridge.delivery.size import SizePolicy
from bridge.delivery.transactional import TransactionPlan
from bridge.errors import BridgeError
from bridge.events.builder import EventBuilder, EventOptions
from bridge.events.redact import RedactionRule, Redactor
from bridge.httpserver import HealthServer
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.leader import LeaderElector, LeadershipLost, default_identity
from bridge.metrics import synced_streams
from bridge.sharding.claims import observed_lease
from bridge.sharding.handover import adopt_previous
from bridge.sharding.view import shard_filter
from bridge.supervision import Supervisor
from bridge.watch.delta import DeltaType
from bridge.watch.engine import EngineOptions, WatchEngine
from bridge.watch.noise import NoiseRule, NoiseRules
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
                           event_types=frozenset(DeltaType(t) for t in w.event_types),
                           noise=NoiseRules(tuple(NoiseRule(r.kind, r.status_only,
                                                            tuple(r.pointers))
                                                  for r in w.ignore_updates))),
        max_in_flight=config.max_in_flight, list_concurrency=w.list_concurrency,
        recheck_interval=w.recheck_interval, versions=dict(w.versions), journal=True,
        shard=shard_filter(config))


def event_builder(config: Config) -> EventBuilder:
    e = config.events
    redactor = Redactor(tuple(RedactionRule(r.kind, tuple(r.paths)) for r in e.redact),
                        e.allow_secret_data)
    return EventBuilder(EventOptions(cluster=config.cluster, type_prefix=e.type_prefix,
                                     partition_key=e.partition_key, previous=e.previous,
                                     strip_managed_fields=e.strip_managed_fields,
                                     redactor=redactor))


FINAL_WRITE_TIMEOUT = 60.0  # seconds the checkpoint write at a stop may take
NOT_FLOWING_GRACE = 5.0  # seconds a stream may be re-connecting before readiness says so


def _summary(failures: dict[str, str], limit: int = 5) -> str:
    shown = [f"{key} ({why})" for key, why in sorted(failures.items())[:limit]]
    more = len(failures) - limit
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def _said(exc: BaseException) -> str:
    """Our own errors say what is wrong in words; a library's exception shows its type."""
    return str(exc) if isinstance(exc, BridgeError) else repr(exc)


def writer_options(config: Config, store: CheckpointStore) -> WriterOptions:
    c = config.checkpoint
    spacing = c.min_write_interval
    return WriterOptions(
        interval=c.interval, compact_ratio=c.compact_ratio,
        min_write_interval=store.default_min_write_interval if spacing is None else spacing)


def transaction_plans(config: Config, store: KafkaStore | None,
                      writer: CheckpointWriter) -> dict[str, TransactionPlan]:
    """How each exactly-once sink's transactions run: on the Kafka checkpoint store's
    producer, committed by a checkpoint flush (the config model checked the pairing)."""
    plans: dict[str, TransactionPlan] = {}
    for sink in config.exactly_once_sinks():
        assert store is not None
        plans[sink.name] = TransactionPlan(
            transactions=store, commit=lambda: writer.flush(commit=True),
            max_events=sink.transaction.max_events, max_wait=sink.transaction.max_wait)
    return plans


async def _first(*events: asyncio.Event) -> None:
    """Until one of ``events`` is set."""
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


class Bridge:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stopping = asyncio.Event()
        self.engine: WatchEngine | None = None
        self.delivery: Delivery | None = None
        self.synced_at: float | None = None
        self.elector: LeaderElector | None = None
        self.writer: CheckpointWriter | None = None
        self.supervisor = Supervisor()

    def ready(self) -> tuple[bool, str]:
        elector = self.elector
        if elector is not None and not elector.leading:
            if elector.holder is None:  # not yet known whether this instance will lead
                return False, "starting: acquiring the leader lease"
            return True, f"standby (the leader lease is held by {elector.holder})"
        if self.engine is None or self.delivery is None:
            return False, "starting"
        if self.engine.source_unreachable:
            return False, "API server unreachable: " + _summary(self.engine.failures())
        if self.synced_at is None:
            synced, total, listed = self.engine.sync_progress()
            return False, f"initial sync: {synced}/{total} kinds, {listed} objects listed"
        stopped = self.engine.not_flowing(longer_than=NOT_FLOWING_GRACE)
        if stopped:
            failures = self.engine.failures()
            return False, "kinds not flowing: " + _summary(
                {key: failures.get(key, "restarting") for key in stopped})
        down = self.delivery.down_reasons()
        if down:
            return False, "sinks down: " + _summary(down)
        if self.writer is not None and self.writer.failing:
            return False, f"checkpoint store failing: {self.writer.store.description}"
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
                await self.supervisor.stop()
                if elector is not None and elector.leading:
                    await elector.release()
            return 1 if self.supervisor.failed.is_set() else 0
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
                             le.retry_period, observed=observed_lease())

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
        try:
            await elector.keep()
        except LeadershipLost as exc:
            self.supervisor.fail(f"lost the leader Lease ({exc}): stopping at once (nothing "
                                 "more is sent or saved) so that a standby continues from "
                                 "the checkpoint")
            return
        self.supervisor.fail("the lease keeper ended while leading")

    async def _work(self, transport: HttpTransport, elector: LeaderElector | None) -> None:
        config = self.config
        started = time.monotonic()
        store = build_store(config, transport)
        try:
            try:
                stored = await store.load()
                checkpoints = restore(stored.base, stored.segments)
                shard = shard_filter(config)
                if not checkpoints and shard is not None and config.sharding.previous:
                    checkpoints = await adopt_previous(config, transport, shard)
            except Exception as exc:  # any store or broker client error: unavailable
                raise StartupError(f"cannot read the checkpoint from {store.description}: "
                                   f"{_said(exc)}") from exc
            if checkpoints:
                log.info("resuming %d streams from the checkpoint in %s (%d journal "
                         "segments)", len(checkpoints), store.description,
                         len(stored.segments))
            shared = store if isinstance(store, KafkaStore) else None
            sinks = [registry.build(s, config.cluster, config.events.max_bytes,
                                    transactions=shared)
                     for s in config.sinks]
            await self._connect(sinks)
            engine = self.engine = WatchEngine(transport, selection(config),
                                               engine_options(config), checkpoints)
            supervisor = self.supervisor
            writer = self.writer = CheckpointWriter(
                store, engine.trackers, options=writer_options(config, store),
                may_write=lambda: not supervisor.failed.is_set() and (
                    elector is None or elector.leading),
                exclusive=shared.exclusive if shared is not None else None)
            try:  # a durable checkpoint (and a fence) before anything is read
                await writer.flush()
            except Exception as exc:
                raise StartupError(f"cannot write the checkpoint to {store.description}: "
                                   f"{_said(exc)}") from exc
            log.info("checkpoint durable in %s %.2fs after start", store.description,
                     time.monotonic() - started)
            e = config.events
            plans = transaction_plans(config, shared, writer)
            only_transactional = len(plans) == len(sinks)  # the transaction is the journal
            delivery = self.delivery = Delivery(
                engine, event_builder(config), sinks,
                SizePolicy(e.max_bytes, tuple(e.drop_fields), e.oversize),
                durable=None if only_transactional else writer.durable,
                exactly_once=plans)
            await delivery.start(supervisor)
            await engine.start()
            supervisor.spawn(writer.run(), name="checkpoint writer")
            if shared is not None:  # an idle instance learns of a takeover, too
                supervisor.spawn(shared.guard(writer.may_write), name="checkpoint fence guard")
            supervisor.spawn(self._progress(engine), name="progress")
            if elector is not None:
                supervisor.spawn(self._keep_leading(elector), name="lease keeper")
            await _first(self.stopping, supervisor.failed)
            if supervisor.failed.is_set():  # stop sending and writing, then reading
                await supervisor.stop()
                await engine.stop()
                await delivery.stop()
                return
            log.info("stopping: no new changes are read; flushing %d in-flight events "
                     "(grace %.0fs)", delivery.in_flight, config.shutdown_grace)
            await engine.stop()
            flushed = await self._flush(engine, delivery, config.shutdown_grace)
            saved = not supervisor.failed.is_set() and await self._final_write(writer)
            await supervisor.stop()
            await delivery.stop()
            log.info("stopped: %s; checkpoint %s", "all events flushed" if flushed else
                     "grace period over, unflushed events will be re-sent on the next start",
                     "saved" if saved else "NOT saved")
        finally:
            await store.close()

    async def _final_write(self, writer: CheckpointWriter) -> bool:
        try:  # bounded: an exactly-once sink retrying a transaction holds the store
            await asyncio.wait_for(writer.flush(final=True), FINAL_WRITE_TIMEOUT)
            return True
        except Exception as exc:
            log.error("final checkpoint write to %s failed: %s (the next start repeats what "
                      "was acknowledged since the last write)", writer.store.description, exc)
            return False

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
        while time.monotonic() < deadline and not self.supervisor.failed.is_set():
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
