"""Read back everything a sink holds, as CloudEvents (consumer side, for tests and audits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat


@dataclass
class Received:
    """One delivered CloudEvent as a consumer sees it."""

    attributes: dict[str, str]
    data: Any
    where: str  # topic/partition or subject
    position: int  # offset or stream sequence

    @property
    def id(self) -> str:
        return self.attributes["id"]


async def kafka_topics(bootstrap: str, prefix: str) -> list[str]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return sorted(t for t in await consumer.topics() if t.startswith(prefix))
    finally:
        await consumer.stop()


async def kafka_all(bootstrap: str, topics: list[str], *,
                    isolation: str = "read_uncommitted") -> list[Received]:
    """Every record of ``topics`` from the beginning to the current end, parsed with the
    CloudEvents SDK's Kafka binding (binary or structured content mode). ``isolation``:
    ``read_committed`` skips records of aborted transactions and stops at the first
    transaction still open."""
    if not topics:
        return []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level=isolation)
    await consumer.start()
    out: list[Received] = []
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in sorted(consumer.partitions_for_topic(t) or
                                      await _partitions(consumer, t))]
        if not partitions:
            return out
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        fmt = JSONFormat()
        async def behind() -> bool:
            for tp in partitions:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.value is None:
                        out.append(Received({"tombstone": "true", "partitionkey":
                                             (record.key or b"").decode()}, None,
                                            f"{tp.topic}/{tp.partition}", record.offset))
                        continue
                    headers = {k: v for k, v in record.headers}
                    message = KafkaMessage(headers=headers, key=record.key, value=record.value)
                    if headers.get("content-type") == b"application/cloudevents+json":
                        doc = orjson.loads(record.value)
                        data = doc.pop("data", None)
                        attributes = {k: str(v) for k, v in doc.items()}
                    else:
                        event = from_binary(message, fmt)
                        attributes = {k: _text(v) for k, v in event.get_attributes().items()}
                        data = event.get_data()
                        if isinstance(data, bytes | str):
                            data = orjson.loads(data)
                    out.append(Received(attributes, data, f"{tp.topic}/{tp.partition}",
                                        record.offset))
    finally:
        await consumer.stop()
    return out


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


def _text(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat()).replace("+00:00", "Z")
    return str(value)


async def nats_all(url: str, stream: str, **connect: Any) -> list[Received]:
    """Every message of a JetStream stream, ``ce-*`` headers percent-decoded; ``connect``:
    more ``nats.connect`` options (TLS, credentials)."""
    import nats

    nc = await nats.connect(url, **connect)
    out: list[Received] = []
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except Exception:  # a deleted message leaves a gap in the sequence
                continue
            headers = msg.headers or {}
            if headers.get("content-type") == "application/cloudevents+json":
                doc = orjson.loads(msg.data)
                data = doc.pop("data", None)
                attributes = {k: str(v) for k, v in doc.items()}
            else:
                attributes = {k[3:]: unquote(v) for k, v in headers.items()
                              if k.startswith("ce-")}
                attributes["datacontenttype"] = headers.get("content-type", "")
                data = orjson.loads(msg.data) if msg.data else None
            attributes["_msgid"] = headers.get("Nats-Msg-Id", "")
            out.append(Received(attributes, data, msg.subject, seq))
    finally:
        await nc.close()
    return out


def jsonl_all(path: Path) -> list[Received]:
    out = []
    for index, line in enumerate(path.read_bytes().splitlines()):
        doc = orjson.loads(line)
        data = doc.pop("data", None)
        out.append(Received({k: str(v) for k, v in doc.items()}, data, str(path), index))
    return out


