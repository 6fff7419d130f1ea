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

Cost: an append is one transaction of one record (the segment, about 100 bytes per change,
plus the transaction markers); a rebase writes ``ceil(base / 512 KiB) + 1`` records and one
tombstone per replaced chunk and segment. A load reads the whole (compacted) topic once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, ProducerFenced

from bridge.checkpoint.chunks import Doubt, Manifest, fenced, join, split
from bridge.checkpoint.codec import CheckpointError
from bridge.checkpoint.store import Stored
from sinks.kafka_security import SaslSettings, diagnose, not_authorized, security_options
from sinks.tls import TlsSettings

log = logging.getLogger(__name__)

CHUNK = 512 * 1024
MAX_RECORD = 2 * 1024 * 1024  # the topic's max.message.bytes and the producer's request limit
READ_TIMEOUT = 120.0  # seconds a load waits for the topic's open transactions to finish
_TOPIC_EXISTS = 36


class KafkaStore:
    segment_limit = 512 * 1024
    max_segments = 100_000  # a load reads the whole topic once anyway
    default_min_write_interval = 0.0

    def __init__(self, bootstrap_servers: str, topic: str, checkpoint_id: str, *,
                 tls: TlsSettings | None = None, sasl: SaslSettings | None = None,
                 replication_factor: int = 1, min_insync_replicas: int = 1,
                 client_id: str = "kube-event-bridge") -> None:
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
        self._security = (tls, sasl)
        self._topic_checked = False
        self._producer: AIOKafkaProducer | None = None
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
        producer = AIOKafkaProducer(**self._options, transactional_id=self.transactional_id,
                                    enable_idempotence=True, max_request_size=MAX_RECORD)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        return producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
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
        if self._producer is not None and not self._verify:
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
        elif raw != mine:
            self._fenced = True
            raise fenced(self.description, "the manifest was changed by another writer")
        segments = self._segments_of(latest, self._current)
        if (doubt is not None and doubt.kind == "segment" and
                len(segments) == self._segments + 1 and segments[-1] == doubt.value):
            self._segments += 1  # the append landed
        elif len(segments) != self._segments:
            self._fenced = True
            raise fenced(self.description, "segments were written by another writer")
        self._verify = False
        return producer

    async def _transaction(self, records: list[tuple[str, bytes | None]],
                           doubt: Doubt) -> None:
        producer = await self._writable()
        try:
            await producer.begin_transaction()
            sent = [await producer.send(self.topic, value, key=key.encode())
                    for key, value in records]
            # every record's outcome is taken (a refusal fails them all: none is left
            # unretrieved), then the first failure is raised
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failed is not None:
                raise failed
            await producer.commit_transaction()
        except ProducerFenced as exc:
            self._fenced = True
            await self._drop_producer()
            raise fenced(self.description, "a newer producer uses transactional id "
                         f"{self.transactional_id}") from exc
        except BaseException as exc:
            self._doubt, self._verify = doubt, True
            _take_transaction_error(producer)
            await self._drop_producer()
            denied = not_authorized(exc)
            if denied is not None:
                raise CheckpointError(denied) from exc
            raise

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
