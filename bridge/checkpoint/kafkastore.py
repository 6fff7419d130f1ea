"""``kafka``: a compacted topic, written by a transactional producer.

Records (``ID`` = the checkpoint id; the topic may hold several checkpoints):

- key ``ID``: the manifest (``bridge.checkpoint.chunks``).
- key ``ID/{generation}-{token}/{i}``: the base in chunks of 512 KiB.
- key ``ID/{generation}-{token}/j{n}``: journal segment ``n`` of that base.

**Fencing and atomicity come from Kafka transactions.** The producer's ``transactional.id`` is
``kube-event-bridge-checkpoint-ID``, the same for every instance using this checkpoint: a
load first starts the producer (``InitProducerId``), which aborts or completes any
transaction of a previous instance and fences it (its next write fails with
``ProducerFenced``, raised as ``CheckpointFenced``), and only then reads, so nothing that
instance commits later can be missed. Each append is one transaction (one segment), each
rebase is one transaction (the chunks, the manifest, and tombstones for every chunk and
segment of the bases it replaces), so a crash leaves either all of it or none: the reader
uses ``isolation_level=read_committed`` and reads up to the high watermark taken after the
fence. A write that fails for another reason drops the producer; the next write starts a
new one (fencing whoever took over meanwhile as well: both then stop, loudly) and checks
that the topic still holds exactly what this instance wrote.

The topic is created with ``cleanup.policy=compact`` (tombstoned keys and replaced values are
cleaned up by the broker), ``replication_factor`` and ``min.insync.replicas`` as configured;
an existing topic that is not compacted is refused (retention would delete the checkpoint).
0.1.0 wrote the same manifest and chunk keys without a transaction: it loads as a base with
no segments, and its keys are tombstoned by the first rebase.

**Exactly-once sinks share the producer** (``sinks.kafka``, ``delivery: exactly-once``):
delivery holds ``exclusive()`` (which the checkpoint writer also takes around each flush),
calls ``begin()`` to open a transaction, sends the events through ``producer``, and the
writer's next append or rebase, inside that transaction, commits events and checkpoint
together. ``abort()`` ends a transaction that failed before its commit; a commit whose
outcome is unknown is settled by the next ``begin()``, which says whether it landed.

Cost: an append is one transaction of one record (the segment, about 100 bytes per change,
plus the transaction markers); a rebase writes ``ceil(base / 512 KiB) + 1`` records and one
tombstone per replaced chunk and segment. A load reads the whole (compacted) topic once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from bridge.checkpoint.chunks import Doubt, Manifest, fenced, join, split
from bridge.checkpoint.codec import CheckpointError, CheckpointFenced
from bridge.checkpoint.store import Stored
from bridge.checkpoint.tasklock import TaskLock
from sinks.kafka_security import SaslSettings, diagnose, not_authorized, security_options
from sinks.tls import TlsSettings

log = logging.getLogger(__name__)

CHUNK = 512 * 1024
MAX_RECORD = 2 * 1024 * 1024  # the topic's max.message.bytes and the producer's request limit
HEARTBEAT = 5.0  # seconds without a commit before ``guard`` commits one (fencing check)
READ_TIMEOUT = 120.0  # seconds a load waits for the topic's open transactions to finish
_TOPIC_EXISTS = 36


class KafkaStore:
    segment_limit = 512 * 1024
    max_segments = 100_000  # a load reads the whole topic once anyway
    default_min_write_interval = 0.0

    def __init__(self, bootstrap_servers: str, topic: str, checkpoint_id: str, *,
                 tls: TlsSettings | None = None, sasl: SaslSettings | None = None,
                 replication_factor: int = 1, min_insync_replicas: int = 1,
                 client_id: str = "kube-event-bridge",
                 producer_options: dict[str, Any] | None = None) -> None:
        """``producer_options``: an exactly-once sink's producer settings (the producer is
        shared with it); the transactional id and the request size stay the store's."""
        self.bootstrap = bootstrap_servers
        self.topic = topic
        self.id = checkpoint_id
        self.transactional_id = f"kube-event-bridge-checkpoint-{checkpoint_id}"
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.description = f"kafka topic {topic} key {checkpoint_id} at {bootstrap_servers}"
        self._options: dict[str, Any] = {"bootstrap_servers": bootstrap_servers,
                                         "client_id": client_id,
                                         **security_options(tls, sasl)}
        self._producer_options = dict(producer_options or {})
        self._security = (tls, sasl)
        self._topic_checked = False
        self._producer: AIOKafkaProducer | None = None
        self._open: AIOKafkaProducer | None = None  # in a transaction begun by ``begin``
        self._exclusive = TaskLock()
        self._landed = False  # the write in doubt that the last ``_writable`` settled
        self._last_commit = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self._current: Manifest | None = None
        self._segments = 0  # segments of the current base
        self._garbage: set[str] = set()  # keys of this checkpoint to tombstone
        self._doubt: Doubt | None = None
        self._verify = False  # the producer was dropped after a failed write
        self._fenced = False  # until the next load

    # ---- load --------------------------------------------------------------------------------

    async def load(self) -> Stored:
        """Fence any previous writer (a new transactional producer), then read the current
        base and its segments. Calling it again (after a fence, say) starts afresh."""
        self._reset()
        await self._ensure_topic()
        await self._start_producer()
        latest = await self._read()
        raw = latest.get(self.id)
        base = b""
        manifest = None
        if raw:
            manifest = Manifest.loads(raw)
            chunks = []
            for index in range(manifest.chunks):
                chunk = latest.get(self._chunk_key(manifest, index))
                if chunk is None:
                    raise CheckpointError(f"checkpoint chunk {index} of {self.description} "
                                          "is missing")
                chunks.append(chunk)
            base = join(manifest, chunks)
        self._current = manifest
        segments = self._segments_of(latest, manifest)
        self._segments = len(segments)
        live = {self._chunk_key(manifest, i) for i in range(manifest.chunks)} if manifest else set()
        live.update(self._segment_key(manifest, i) for i in range(len(segments)))
        ours = re.compile(re.escape(self.id) + r"/(\d+-[0-9a-f]+|none)/j?\d+")
        self._garbage = {key for key, value in latest.items()  # not another id's "ID/..."
                         if value is not None and key not in live and ours.fullmatch(key)}
        return Stored(base, segments)

    def _segments_of(self, latest: dict[str, bytes | None],
                     manifest: Manifest | None) -> list[bytes]:
        segments: list[bytes] = []
        while (value := latest.get(self._segment_key(manifest, len(segments)))) is not None:
            segments.append(value)
        return segments

    async def _read(self) -> dict[str, bytes | None]:
        """The newest committed value of every key of this checkpoint (None: tombstone),
        reading every partition up to the high watermark as it is now."""
        mine = self.id.encode()
        prefix = mine + b"/"
        latest: dict[str, bytes | None] = {}
        marks = AIOKafkaConsumer(**self._options, enable_auto_commit=False,
                                 isolation_level="read_uncommitted")
        consumer = AIOKafkaConsumer(**self._options, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await marks.start()
        try:
            await consumer.start()
            try:
                assert self._producer is not None
                partitions = [TopicPartition(self.topic, p)
                              for p in sorted(await self._producer.partitions_for(self.topic))]
                ends = await marks.end_offsets(partitions)
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                deadline = time.monotonic() + READ_TIMEOUT
                for partition in partitions:
                    while await consumer.position(partition) < ends[partition]:
                        if time.monotonic() > deadline:
                            raise CheckpointError(
                                f"reading {self.topic} partition {partition.partition} did "
                                f"not reach offset {ends[partition]} in {READ_TIMEOUT:.0f}s "
                                "(a transaction of another producer left open?)")
                        batch = await consumer.getmany(partition, timeout_ms=1000)
                        for record in batch.get(partition, ()):
                            key = record.key
                            if key is not None and (key == mine or key.startswith(prefix)):
                                latest[key.decode()] = record.value
            finally:
                await consumer.stop()
        finally:
            await marks.stop()
        return latest

    async def _ensure_topic(self) -> None:
        """Create the topic compacted, or check that the existing one is."""
        if self._topic_checked:
            return
        admin = AIOKafkaAdminClient(**self._options)
        try:
            await admin.start()
        except KafkaConnectionError as exc:  # aiokafka says no more than "Unable to bootstrap"
            await admin.close()
            problem = await diagnose(self.bootstrap, *self._security)
            raise CheckpointError(problem.reason) from exc
        try:
            answer = await admin.create_topics([NewTopic(
                self.topic, num_partitions=1, replication_factor=self.replication_factor,
                topic_configs={"cleanup.policy": "compact",
                               "min.insync.replicas": str(self.min_insync_replicas),
                               "max.message.bytes": str(MAX_RECORD)})])
            _, code, message = answer.topic_errors[0]
            if code == _TOPIC_EXISTS:
                await self._check_topic(admin)
            elif code:
                raise CheckpointError(f"cannot create the checkpoint topic {self.topic} "
                                      f"(replication_factor={self.replication_factor}, "
                                      f"min.insync.replicas={self.min_insync_replicas}): "
                                      f"error {code}: {message}")
            else:
                log.info("created the compacted checkpoint topic %s (replication factor %d, "
                         "min.insync.replicas %d)", self.topic, self.replication_factor,
                         self.min_insync_replicas)
        finally:
            await admin.close()
        self._topic_checked = True

    async def _check_topic(self, admin: AIOKafkaAdminClient) -> None:
        answers = await admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, self.topic,
            {"cleanup.policy": None, "min.insync.replicas": None})])
        resource = answers[0].to_object()["resources"][0]
        if resource["error_code"]:
            log.warning("checkpoint topic %s: cannot read its configuration (error %s: %s); "
                        "make sure it has cleanup.policy=compact", self.topic,
                        resource["error_code"], resource["error_message"])
            return
        configs = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
        policy = str(configs.get("cleanup.policy") or "")
        if policy != "compact":
            raise CheckpointError(
                f"the checkpoint topic {self.topic} exists with cleanup.policy={policy!r}: "
                "the checkpoint needs cleanup.policy=compact (retention would delete it). "
                f"Fix it with `kafka-configs.sh --alter --entity-type topics --entity-name "
                f"{self.topic} --add-config cleanup.policy=compact`, or name another topic")
        insync = int(configs.get("min.insync.replicas") or 1)
        if insync < self.min_insync_replicas:
            log.warning("checkpoint topic %s has min.insync.replicas=%d, below the configured "
                        "%d (an existing topic is not altered)", self.topic, insync,
                        self.min_insync_replicas)

    # ---- the producer ------------------------------------------------------------------------

    async def _start_producer(self) -> AIOKafkaProducer:
        """A new transactional producer: starting it fences every earlier one with the same
        transactional id and finishes their open transactions."""
        await self._drop_producer()
        options = {**self._options, **self._producer_options}
        options["max_request_size"] = max(MAX_RECORD, options.get("max_request_size", 0))
        options.update(transactional_id=self.transactional_id, enable_idempotence=True)
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _drop_producer(self) -> None:
        producer, self._producer, self._open = self._producer, None, None
        if producer is not None:
            try:
                await producer.stop()
            except KafkaError as exc:
                log.debug("checkpoint %s: stopping the producer: %r", self.description, exc)

    async def _writable(self) -> AIOKafkaProducer:
        """The producer; after a failed write a new one, once the topic is found to hold
        exactly what this instance wrote (plus the write in doubt, or not)."""
        if self._fenced:
            raise fenced(self.description, "fenced earlier; load again to take over")
        self._landed = False
        if self._producer is not None and not self._verify:
            self._check(self._producer)
            if not self._verify:
                return self._producer
        producer = await self._start_producer()
        latest = await self._read()
        doubt, self._doubt = self._doubt, None
        raw = latest.get(self.id)
        mine = self._current.dumps() if self._current else None
        if doubt is not None and doubt.kind == "manifest" and raw == doubt.value:
            old, self._current = self._current, doubt.manifest  # the rebase landed
            self._garbage.update(self._replaced(old))
            self._segments = 0
            self._landed = True
        elif raw != mine:
            self._fenced = True
            raise fenced(self.description, "the manifest was changed by another writer")
        segments = self._segments_of(latest, self._current)
        if (doubt is not None and doubt.kind == "segment" and
                len(segments) == self._segments + 1 and segments[-1] == doubt.value):
            self._segments += 1  # the append landed
            self._landed = True
        elif len(segments) != self._segments:
            self._fenced = True
            raise fenced(self.description, "segments were written by another writer")
        self._verify = False
        return producer

    # ---- transactions shared with an exactly-once sink --------------------------------------

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Held around a whole transaction: by delivery from ``begin`` to the commit, by the
        checkpoint writer around each flush (re-entrant for the task holding it)."""
        return self._exclusive.hold()

    async def begin(self) -> bool:
        """Open a transaction (under ``exclusive``); its commit is the next append or rebase.
        Returns whether a commit whose outcome was unknown turned out to have landed."""
        producer = await self._writable()
        landed = self._landed
        try:
            await producer.begin_transaction()
        except ProducerFenced as exc:
            raise self._fenced_by(exc) from exc
        self._open = producer
        return landed

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer of the open transaction (for an exactly-once sink's sends)."""
        if self._open is None:
            raise CheckpointError(f"checkpoint {self.description}: no transaction is open")
        self._check(self._open)
        if self._verify:
            raise CheckpointError(f"checkpoint {self.description}: the producer failed")
        return self._open

    def _check(self, producer: AIOKafkaProducer) -> None:
        """Raise ``CheckpointFenced`` if the producer's sender was fenced; mark the producer
        for replacement if it ended otherwise (it would never deliver again)."""
        failure = _sender_failure(producer)
        if isinstance(failure, ProducerFenced):
            raise self._fenced_by(failure)
        if failure is not None:
            log.warning("checkpoint %s: the producer failed (%r); starting a new one",
                        self.description, failure)
            self._verify = True

    async def abort(self) -> None:
        """End the open transaction without committing (nothing of it becomes visible)."""
        producer, self._open = self._open, None
        if producer is None:
            return
        self._check(producer)
        if self._verify:
            await self._drop_producer()
            return
        try:
            await asyncio.wait_for(producer.abort_transaction(), READ_TIMEOUT)
        except ProducerFenced as exc:
            raise self._fenced_by(exc) from exc
        except Exception as exc:  # the producer is unusable: a new one, after a check
            log.warning("checkpoint %s: aborting a transaction failed (%r); starting a new "
                        "producer", self.description, exc)
            self._verify = True
            await self._drop_producer()

    def _fenced_by(self, exc: BaseException) -> BaseException:
        self._fenced = True
        self._open = None
        return fenced(self.description, "a newer producer uses transactional id "
                      f"{self.transactional_id} ({exc!r})")

    async def _transaction(self, records: list[tuple[str, bytes | None]],
                           doubt: Doubt | None) -> None:
        """One transaction with ``records``: the open one (begun by ``begin``, holding an
        exactly-once sink's events), else a new one."""
        begun, self._open = self._open, None
        producer = begun if begun is not None else await self._writable()
        try:
            if begun is None:
                await producer.begin_transaction()
            self._check(producer)
            sent = [await producer.send(self.topic, value, key=key.encode())
                    for key, value in records]
            # every record's outcome is taken (a refusal fails them all: none is left
            # unretrieved), then the first failure is raised
            outcomes = asyncio.gather(*sent, return_exceptions=True)
            await _unless_sender_ends(producer, outcomes)
            failed = next((o for o in outcomes.result() if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed
            await _unless_sender_ends(producer, producer.commit_transaction())
            self._last_commit = time.monotonic()
        except ProducerFenced as exc:
            error = self._fenced_by(exc)
            await self._drop_producer()
            raise error from exc
        except BaseException as exc:
            self._doubt, self._verify = doubt, True
            _take_transaction_error(producer)
            await self._drop_producer()
            denied = not_authorized(exc)
            if denied is not None:
                raise CheckpointError(denied) from exc
            raise

    async def guard(self, may_write: Callable[[], bool]) -> None:
        """Notice a takeover while idle: after ``HEARTBEAT`` seconds without a commit, commit
        a tiny record (key ``ID/alive``, compacted away), so an instance whose transactional
        id was taken over (a second instance, a standby) learns it within that time and
        stops (``CheckpointFenced``) instead of claiming readiness until its next change.
        Nothing is written once ``may_write`` says no (a deposed leader must not write)."""
        alive = f"{self.id}/alive"
        while True:
            await asyncio.sleep(max(0.1, self._last_commit + HEARTBEAT - time.monotonic()))
            if time.monotonic() - self._last_commit < HEARTBEAT or not may_write():
                continue
            async with self.exclusive():
                try:
                    await self._transaction([(alive, str(time.time()).encode())], None)
                except CheckpointFenced:
                    raise
                except Exception as exc:  # the next checkpoint write reports and retries
                    log.debug("checkpoint %s: heartbeat failed: %r", self.description, exc)
                    self._last_commit = time.monotonic()

    # ---- append and rebase -------------------------------------------------------------------

    async def append(self, segment: bytes) -> None:
        key = self._segment_key(self._current, self._segments)
        await self._transaction([(key, segment)], Doubt("segment", key, segment))
        self._segments += 1

    async def rebase(self, base: bytes) -> None:
        await self._writable()  # settles a write in doubt first
        old = self._current
        parts = split(base, CHUNK)
        new = Manifest.after(old, base, len(parts))
        replaced = self._garbage | self._replaced(old)
        records: list[tuple[str, bytes | None]] = [
            (self._chunk_key(new, index), part) for index, part in enumerate(parts)]
        records.append((self.id, new.dumps()))
        records.extend((key, None) for key in sorted(replaced))  # tombstones
        await self._transaction(records, Doubt("manifest", self.id, new.dumps(), new))
        self._current, self._segments = new, 0
        self._garbage.clear()

    def _replaced(self, old: Manifest | None) -> set[str]:
        """The keys of the current base's chunks and segments."""
        keys = {self._segment_key(old, i) for i in range(self._segments)}
        if old is not None:
            keys.update(self._chunk_key(old, i) for i in range(old.chunks))
        return keys

    def _chunk_key(self, manifest: Manifest, index: int) -> str:
        return f"{self.id}/{manifest.prefix}/{index}"

    def _segment_key(self, manifest: Manifest | None, index: int) -> str:
        return f"{self.id}/{manifest.prefix if manifest else 'none'}/j{index}"

    async def close(self) -> None:
        await self._drop_producer()


def _take_transaction_error(producer: AIOKafkaProducer) -> None:
    """aiokafka keeps a failed transaction's error in a future that only a commit would
    read; a producer dropped instead leaves it to asyncio's "exception was never retrieved"
    traceback in the log. Read it here (the caller has the error already)."""
    manager = getattr(producer, "_txn_manager", None)
    waiter = manager.wait_for_transaction_end() if manager is not None else None
    if isinstance(waiter, asyncio.Future) and waiter.done() and not waiter.cancelled():
        waiter.exception()


def _sender_failure(producer: AIOKafkaProducer) -> BaseException | None:
    """Why the producer's background sender ended (aiokafka fails what is queued then, but
    a send queued later would wait forever), or None while it runs."""
    task = producer._sender.sender_task  # aiokafka has no public accessor
    if task is None or not task.done() or task.cancelled():
        return None
    failure: BaseException | None = task.exception()
    return failure


async def _unless_sender_ends(producer: AIOKafkaProducer, wait: Awaitable[Any]) -> None:
    """Await ``wait``, or raise why the producer's sender ended first."""
    waiting = asyncio.ensure_future(wait)
    sender = producer._sender.sender_task
    if sender is None:
        await waiting
        return
    await asyncio.wait({waiting, sender}, return_when=asyncio.FIRST_COMPLETED)
    if not waiting.done():
        waiting.cancel()
        failure = _sender_failure(producer)
        raise failure or KafkaError("the producer's sender stopped")
    waiting.result()
