"""``kafka``: an idempotent aiokafka producer (acks=all), CloudEvents Kafka binding.

Binary content mode by default (``ce_*`` headers, ``content-type``, value = data), structured
as an option; record key = the event's ``partitionkey``; topic from a template; optional
tombstone after each deletion for compacted topics.

Send path (aiokafka's batch API, no per-record ``producer.send()``): each event's partition is
chosen as Kafka's default partitioner does (murmur2 of the key, positive, modulo the topic's
partition count over the partitions sorted by id: the choice of aiokafka's ``send()`` and of
the Java client, so every producer puts a key on the same partition); the record is appended
to that topic-partition's open batch (``producer.create_batch()``), and a full batch
(``max_batch_bytes``) is followed by a new one. The closed batches are then handed to the
producer (``send_batch``) in creation order, so one partition's batches queue in send order;
once a batch of a partition could not be handed over, its later batches are not either. The
producer assigns idempotence sequence numbers when it drains a batch, as for ``send()``. Each
batch has one acknowledgement, which settles all its events, awaited under ``ack_timeout``. A
record too large for a request (checked as ``send()`` does) fails alone, permanently.
A fatal producer error (e.g. OutOfOrderSequenceNumber) rebuilds the producer; the failed
events are reported transient and re-sent by delivery, in order.

``delivery: exactly-once``: the sink owns no producer. It sends through the transactional
producer of the checkpoint's Kafka store (``Transactions``), inside the transaction that
delivery opens and the checkpoint commits (``bridge.delivery.transactional``): events and
the checkpoint become visible to ``read_committed`` consumers together, or not at all.
Errors are reported as usual; delivery then aborts the whole transaction and re-sends it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeAlias, cast

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.partitioner import murmur2
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.events.event import Event
from sinks.acks import settle
from sinks.base import HeaderNames, SinkError, SinkSettings
from sinks.kafka_security import SaslSettings, diagnose, not_authorized, security_options
from sinks.kafka_topics import TopicAdmin, TopicGuard
from sinks.kafka_topics import provision as provision_topics
from sinks.provisioning import Outcome, Scope
from sinks.template import Template
from sinks.template import check as check_template
from sinks.tls import TlsSettings

log = logging.getLogger(__name__)

_PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
              InvalidTopicError)  # a missing ACL is retried: the operator adds it
_FATAL = (OutOfOrderSequenceNumber, ProducerFenced)

Headers: TypeAlias = list[tuple[str, bytes]]
# an event's batches (of its record, of its tombstone), or why it has none
Placement: TypeAlias = tuple[int, ...] | BaseException

_STRUCTURED_HEADERS: Headers = [("content-type", b"application/cloudevents+json")]
_NO_HEADERS: Headers = []


class TransactionSettings(BaseModel):
    """Sizing of the transactions of an exactly-once Kafka sink: a transaction is committed
    after `max_events` events or `max_wait` seconds, whichever comes first. Larger
    transactions amortize the commit (two broker round trips and a marker per partition)
    over more events, for throughput; `read_committed` consumers see events only at
    commit, so `max_wait` adds to their latency."""

    model_config = ConfigDict(extra="forbid")
    max_events: int = Field(5000, ge=1, le=1_000_000, description="events in one "
                            "transaction at most")
    max_wait: float = Field(0.1, ge=0, le=10, description="seconds a transaction stays "
                            "open collecting events before it is committed")
    timeout: float = Field(60.0, ge=1, le=900, description="the producer's "
                           "`transaction.timeout.ms` (in seconds): the broker aborts a "
                           "transaction open longer; must not exceed the broker's "
                           "`transaction.max.timeout.ms`")


class Transactions(Protocol):
    """Where an exactly-once sink gets its producer: the one of the open transaction."""

    @property
    def producer(self) -> AIOKafkaProducer: ...


class KafkaSettings(SinkSettings):
    """Apache Kafka via an idempotent producer (acks=all); CloudEvents Kafka binding, binary mode
    by default; key = partitionkey."""

    type: Literal["kafka"] = "kafka"
    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    topic: str = Field("k8s.{group}.{plural}", description="topic template")
    content_mode: Literal["binary", "structured"] = Field(
        "binary", description="binary: `ce_*` headers and the object as the value; "
        "structured: one CloudEvents JSON document per record")
    tombstones: bool = Field(False, description="after a deletion, also send a null value "
                             "with the same key (for compacted topics)")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "none", description="producer batch compression")
    linger_ms: int = Field(5, ge=0, le=10_000, description="milliseconds the producer waits "
                           "to fill a batch")
    max_batch_bytes: int = Field(1_048_576, ge=16_384, description="bytes of one "
                                 "partition's batch at most")
    ack_timeout: float = Field(30.0, gt=0, description="seconds to wait for a batch's acks")
    tls: TlsSettings | None = None
    sasl: SaslSettings | None = None
    dead_letter_topic: str = Field("kube-event-bridge.dlq", description="permanent failures "
                                   "go here (structured JSON with the reason)")
    create_topics: bool = Field(False, description="create a missing topic at run time "
                                "(with the settings below; needs the CREATE permission). "
                                "Otherwise a missing topic stops delivery to it, with an error "
                                "naming it, until `kube-event-bridge provision` (or the "
                                "broker's auto-creation) creates it")
    partitions: int = Field(3, ge=1, le=100_000, description="partitions of each topic the "
                            "bridge creates; an existing topic with another count is reported "
                            "by `provision`, never altered")
    replication_factor: int = Field(1, ge=1, le=32, description="replicas of each topic the "
                                    "bridge creates; 1 suits a single-broker test cluster, "
                                    "use 3 in production")
    min_insync_replicas: int | None = Field(None, ge=1, le=32, description="`min.insync."
                                            "replicas` of the topics; none: the broker's "
                                            "default (not checked)")
    retention_ms: int | None = Field(None, ge=-1, description="`retention.ms` of the topics "
                                     "(-1: forever); none: the broker's default (not checked). "
                                     "With tombstones the policy becomes `compact,delete`")
    client_id: str = Field("kube-event-bridge", description="the producer's client id "
                           "(broker logs and quotas)")
    delivery: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once", description="`exactly-once`: events and the checkpoint are written "
        "in one Kafka transaction (needs `checkpoint.store: kafka` on the same cluster; at "
        "most one such sink); `read_committed` consumers see each change once")
    transaction: TransactionSettings = Field(default_factory=TransactionSettings,
                                             description="exactly-once only")

    @field_validator("topic")
    @classmethod
    def _template(cls, value: str) -> str:
        check_template(value)
        return value

    @model_validator(mode="after")
    def _replicas(self) -> KafkaSettings:
        if (self.min_insync_replicas or 0) > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) exceeds "
                             f"replication_factor ({self.replication_factor})")
        return self


_HEADER_NAMES = HeaderNames("ce_")


def binary_headers(event: Event) -> Headers:
    """CloudEvents Kafka binding, binary mode: every attribute but datacontenttype as
    ``ce_<name>``; datacontenttype as ``content-type``."""
    attributes = event.attributes
    names = _HEADER_NAMES
    headers = [("content-type", attributes["datacontenttype"].encode())]
    headers += [(names[k], v.encode()) for k, v in attributes.items() if k != "datacontenttype"]
    return headers


@functools.lru_cache(maxsize=16_384)
def _key_hash(key: bytes) -> int:
    """Kafka's default partitioner hash (murmur2, made positive); cached, as a key comes back
    with every change of its object and the pure-Python hash costs more than a record."""
    return int(murmur2(key)) & 0x7FFFFFFF


class _Batches:
    """One send's records as producer batches, per topic-partition in send order."""

    def __init__(self, producer: AIOKafkaProducer, max_request_size: int) -> None:
        self.producer = producer
        self.max_request_size = max_request_size
        self.batches: list[tuple[Any, str, int]] = []  # (BatchBuilder, topic, partition)
        self._open: dict[tuple[str, int], int] = {}  # topic-partition -> its last batch

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None,
            headers: Headers) -> int:
        """The index of the batch the record went into. A record that does not fit the
        partition's last batch starts a new one, unless it is too large for a request
        (the check of ``producer.send()``): MessageSizeTooLargeError."""
        index = self._open.get((topic, partition))
        if index is not None and self.batches[index][0].append(
                timestamp=None, key=key, value=value, headers=headers) is not None:
            return index
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_request_size:
            raise MessageSizeTooLargeError(
                f"The message is {size} bytes when serialized which is larger than the "
                f"maximum request size of {self.max_request_size} bytes")
        batch = self.producer.create_batch()
        batch.append(timestamp=None, key=key, value=value, headers=headers)  # a first fits
        index = self._open[(topic, partition)] = len(self.batches)
        self.batches.append((batch, topic, partition))
        return index

    async def submit(self) -> list[Awaitable[Any] | BaseException]:
        """Hand the batches to the producer in order (a partition's next batch waits there
        until the previous one is drained); one acknowledgement (or error) per batch. After
        a partition's batch could not be handed over, its later ones are not (they would
        overtake it)."""
        pending: list[Awaitable[Any] | BaseException] = []
        failed: dict[tuple[str, int], BaseException] = {}
        for batch, topic, partition in self.batches:
            batch.close()  # complete: no lingering, no records of other senders
            error = failed.get((topic, partition))
            if error is None:
                try:
                    pending.append(await self.producer.send_batch(batch, topic,
                                                                  partition=partition))
                    continue
                except KafkaError as exc:
                    error = failed[(topic, partition)] = exc
            pending.append(error)
        return pending


def producer_options(settings: KafkaSettings, max_event_bytes: int) -> dict[str, Any]:
    """The producer's options (idempotent, acks=all) for a sink's settings; an exactly-once
    sink's are given to the checkpoint store, whose producer it shares."""
    s = settings
    options: dict[str, Any] = {
        "bootstrap_servers": s.bootstrap_servers,
        "client_id": s.client_id,
        "enable_idempotence": True,  # implies acks=all
        "linger_ms": s.linger_ms,
        "max_batch_size": s.max_batch_bytes,
        "max_request_size": max(s.max_batch_bytes, max_event_bytes + 65_536),
        "compression_type": None if s.compression == "none" else s.compression,
        "request_timeout_ms": int(s.ack_timeout * 1000),
    }
    if s.delivery == "exactly-once":
        options["transaction_timeout_ms"] = int(s.transaction.timeout * 1000)
    options.update(security_options(s.tls, s.sasl))
    return options


class KafkaSink:
    def __init__(self, settings: KafkaSettings, cluster: str = "local",
                 max_event_bytes: int = 1_000_000, *,
                 transactions: Transactions | None = None) -> None:
        """``transactions``: an exactly-once sink's producer source (required for one)."""
        if (settings.delivery == "exactly-once") != (transactions is not None):
            raise ValueError(f"kafka sink {settings.name}: an exactly-once sink needs the "
                             "checkpoint's transactions, and only it may use them")
        self.settings = settings
        self.max_event_bytes = max_event_bytes
        self._options = producer_options(settings, max_event_bytes)
        self.max_request_size: int = self._options["max_request_size"]
        self.topic = Template(settings.topic, cluster)
        self.topics = TopicGuard(settings, TopicAdmin(
            {"bootstrap_servers": settings.bootstrap_servers, "client_id": settings.client_id,
             **security_options(settings.tls, settings.sasl)}, settings.ack_timeout))
        self._transactions = transactions
        self._producer: AIOKafkaProducer | None = None
        self._ok = False

    async def connect(self) -> None:
        if self._transactions is not None:
            self._ok = True  # the checkpoint store connects the shared producer
            return
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            s = self.settings
            problem = await diagnose(s.bootstrap_servers, s.tls, s.sasl)
            raise SinkError(f"kafka sink {s.name}: {s.bootstrap_servers}: {problem.reason}",
                            transient=not problem.permanent) from exc
        self._producer = producer
        self._ok = True

    async def _rebuild(self, reason: BaseException) -> None:
        log.warning("kafka sink %s: fatal producer error %r; rebuilding the producer",
                    self.settings.name, reason)
        old, self._producer = self._producer, None
        if old is not None:
            await old.stop()
        await self.connect()

    def _record(self, event: Event) -> tuple[bytes | None, Headers]:
        if self.settings.content_mode == "structured":
            return event.structured(), _STRUCTURED_HEADERS
        return event.data, binary_headers(event)

    async def _current(self) -> AIOKafkaProducer:
        if self._transactions is not None:
            return self._transactions.producer
        if self._producer is None:
            await self.connect()
        assert self._producer is not None
        return self._producer

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        producer = await self._current()
        topics = [self.topic.render(event) for event in events]
        unique = set(topics)
        unusable = {} if unique <= self.topics.usable else await self.topics.check(unique)
        partitions = await _partitions(producer, unique - unusable.keys() if unusable
                                       else unique)
        partitions.update(unusable)
        batches = _Batches(producer, self.max_request_size)
        placements = [self._place(batches, event, topic, partitions[topic])
                      for event, topic in zip(events, topics, strict=True)]
        outcomes = await settle(await batches.submit(), self.settings.ack_timeout)
        results: list[SinkError | None] = []
        fatal: BaseException | None = None
        for placement in placements:
            outcome = _outcome(placement, outcomes)
            if outcome is None:
                results.append(None)
                continue
            if isinstance(outcome, SinkError):  # the topic's (TopicGuard)
                results.append(outcome)
                continue
            if isinstance(outcome, _FATAL):
                fatal = outcome
            denied = not_authorized(outcome)
            if denied is not None:
                results.append(SinkError(f"kafka sink {self.settings.name}: "
                                         f"{self.settings.bootstrap_servers}: {denied}"))
                continue
            permanent = isinstance(outcome, _PERMANENT)
            results.append(SinkError(f"kafka: {outcome!r}", transient=not permanent))
        self._ok = all(r is None or not r.transient for r in results)
        if fatal is not None and self._transactions is None:  # else: delivery aborts
            await self._rebuild(fatal)
        return results

    def _place(self, batches: _Batches, event: Event, topic: str,
               partitions: list[int] | BaseException) -> Placement:
        """Add the event's record (and its tombstone) to the batches of its partition."""
        if isinstance(partitions, BaseException):
            return partitions
        key = event.key
        partition = partitions[_key_hash(key) % len(partitions)]
        value, headers = self._record(event)
        try:
            first = batches.add(topic, partition, key, value, headers)
        except MessageSizeTooLargeError as exc:
            return cast(BaseException, exc)  # aiokafka is untyped
        if self.settings.tombstones and event.delta.type.value == "deleted":
            return first, batches.add(topic, partition, key, None, _NO_HEADERS)
        return (first,)

    async def dead_letter(self, event: Event, reason: str) -> None:
        producer = self._producer if self._transactions is None else await self._current()
        if producer is None:
            raise SinkError(f"kafka sink {self.settings.name} is not connected")
        topic = self.settings.dead_letter_topic
        unusable = await self.topics.check({topic}, dead_letter=True)
        if unusable:
            raise unusable[topic]
        doc = {"reason": reason, "attributes": event.attributes,
               "data_bytes": event.size()}
        await producer.send_and_wait(self.settings.dead_letter_topic, orjson.dumps(doc),
                                     key=event.key,
                                     headers=[("content-type", b"application/json")])

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        self._producer = None
        self._ok = False
        await self.topics.admin.close()

    async def provision(self, scope: Scope, *, dry_run: bool) -> list[Outcome]:
        """Check (and unless ``dry_run`` create) every topic of ``scope`` and the dead-letter
        topic (``sinks.kafka_topics``)."""
        return await provision_topics(self.settings, self.topic.cluster, self.topics.admin,
                                      scope, dry_run=dry_run)

    @property
    def healthy(self) -> bool:
        return self._ok


async def _partitions(producer: AIOKafkaProducer,
                      topics: Iterable[str]) -> dict[str, list[int] | BaseException]:
    """Each topic's partitions sorted by id (as the default partitioner indexes them), or
    why they are unknown. Metadata for a new topic is fetched, which lets the broker
    auto-create it."""
    found: dict[str, list[int] | BaseException] = {}
    for topic in topics:
        try:
            found[topic] = sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            found[topic] = exc
    return found


def _outcome(placement: Placement,
             outcomes: list[BaseException | None]) -> BaseException | None:
    """An event's outcome: its own error, else the first failure among its batches."""
    if isinstance(placement, BaseException):
        return placement
    for index in placement:
        if outcomes[index] is not None:
            return outcomes[index]
    return None
