"""``kafka``: an idempotent aiokafka producer (acks=all), CloudEvents Kafka binding.

Binary content mode by default (``ce_*`` headers, ``content-type``, value = data), structured
as an option; record key = the event's ``partitionkey``; topic from a template; optional
tombstone after each deletion for compacted topics. Messages of a batch are handed to the
producer without awaiting each one (it batches per partition), then all acks are awaited.
A fatal producer error (e.g. OutOfOrderSequenceNumber) rebuilds the producer; the failed
events are reported transient and re-sent by delivery, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal

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
    TopicAuthorizationFailedError,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from bridge.events.event import Event
from sinks.acks import settle
from sinks.base import SinkError, SinkSettings
from sinks.template import Template
from sinks.template import check as check_template
from sinks.tls import TlsSettings

log = logging.getLogger(__name__)

_PERMANENT = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError,
              InvalidTopicError, TopicAuthorizationFailedError)
_FATAL = (OutOfOrderSequenceNumber, ProducerFenced)


class SaslSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username: str
    password: SecretStr


class KafkaSettings(SinkSettings):
    """Apache Kafka via an idempotent producer (acks=all); CloudEvents Kafka binding, binary mode
    by default; key = partitionkey."""

    type: Literal["kafka"] = "kafka"
    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    topic: str = Field("k8s.{group}.{plural}", description="topic template")
    content_mode: Literal["binary", "structured"] = "binary"
    tombstones: bool = Field(False, description="after a deletion, also send a null value "
                             "with the same key (for compacted topics)")
    compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "none"
    linger_ms: int = Field(5, ge=0, le=10_000)
    max_batch_bytes: int = Field(1_048_576, ge=16_384)
    ack_timeout: float = Field(30.0, gt=0, description="seconds to wait for a batch's acks")
    tls: TlsSettings | None = None
    sasl: SaslSettings | None = None
    dead_letter_topic: str = Field("kube-event-bridge.dlq", description="permanent failures "
                                   "go here (structured JSON with the reason)")
    client_id: str = "kube-event-bridge"

    @field_validator("topic")
    @classmethod
    def _template(cls, value: str) -> str:
        check_template(value)
        return value


def binary_headers(event: Event) -> list[tuple[str, bytes]]:
    """CloudEvents Kafka binding, binary mode: every attribute but datacontenttype as
    ``ce_<name>``; datacontenttype as ``content-type``."""
    headers = [("content-type", event.attributes["datacontenttype"].encode())]
    headers.extend((f"ce_{k}", v.encode()) for k, v in event.attributes.items()
                   if k != "datacontenttype")
    return headers


class KafkaSink:
    def __init__(self, settings: KafkaSettings, cluster: str = "local",
                 max_event_bytes: int = 1_000_000) -> None:
        self.settings = settings
        self.max_event_bytes = max_event_bytes
        self.topic = Template(settings.topic, cluster)
        self._producer: AIOKafkaProducer | None = None
        self._ok = False

    def _build(self) -> AIOKafkaProducer:
        s = self.settings
        options: dict[str, Any] = {
            "bootstrap_servers": s.bootstrap_servers,
            "client_id": s.client_id,
            "enable_idempotence": True,  # implies acks=all
            "linger_ms": s.linger_ms,
            "max_batch_size": s.max_batch_bytes,
            "max_request_size": max(s.max_batch_bytes, self.max_event_bytes + 65_536),
            "compression_type": None if s.compression == "none" else s.compression,
            "request_timeout_ms": int(s.ack_timeout * 1000),
        }
        if s.tls is not None:
            options["ssl_context"] = s.tls.context()
        if s.sasl is not None:
            options["sasl_mechanism"] = s.sasl.mechanism
            options["sasl_plain_username"] = s.sasl.username
            options["sasl_plain_password"] = s.sasl.password.get_secret_value()
        options["security_protocol"] = (
            ("SASL_SSL" if s.tls else "SASL_PLAINTEXT") if s.sasl else
            ("SSL" if s.tls else "PLAINTEXT"))
        return AIOKafkaProducer(**options)

    async def connect(self) -> None:
        producer = self._build()
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise SinkError(f"kafka sink {self.settings.name}: cannot reach "
                            f"{self.settings.bootstrap_servers}: {exc!r}") from exc
        self._producer = producer
        self._ok = True

    async def _rebuild(self, reason: BaseException) -> None:
        log.warning("kafka sink %s: fatal producer error %r; rebuilding the producer",
                    self.settings.name, reason)
        old, self._producer = self._producer, None
        if old is not None:
            await old.stop()
        await self.connect()

    def _record(self, event: Event) -> tuple[bytes | None, list[tuple[str, bytes]]]:
        if self.settings.content_mode == "structured":
            return event.structured(), [("content-type", b"application/cloudevents+json")]
        return event.data, binary_headers(event)

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        producer = self._producer
        if producer is None:
            await self.connect()
            producer = self._producer
            assert producer is not None
        futures: list[Any] = []
        for event in events:
            value, headers = self._record(event)
            try:
                futures.append(await producer.send(self.topic.render(event), value,
                                                   key=event.key, headers=headers))
                if self.settings.tombstones and event.delta.type.value == "deleted":
                    futures[-1] = _both(futures[-1], await producer.send(
                        self.topic.render(event), None, key=event.key))
            except KafkaError as exc:
                futures.append(exc)
        results: list[SinkError | None] = []
        fatal: BaseException | None = None
        for outcome in await settle(futures, self.settings.ack_timeout):
            if outcome is None:
                results.append(None)
                continue
            if isinstance(outcome, _FATAL):
                fatal = outcome
            permanent = isinstance(outcome, _PERMANENT)
            results.append(SinkError(f"kafka: {outcome!r}", transient=not permanent))
        self._ok = all(r is None or not r.transient for r in results)
        if fatal is not None:
            await self._rebuild(fatal)
        return results

    async def dead_letter(self, event: Event, reason: str) -> None:
        producer = self._producer
        if producer is None:
            raise SinkError(f"kafka sink {self.settings.name} is not connected")
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

    @property
    def healthy(self) -> bool:
        return self._ok


async def _both(first: asyncio.Future[Any], second: asyncio.Future[Any]) -> Any:
    await first
    return await second
