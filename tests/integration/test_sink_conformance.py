"""One conformance suite, run against every sink with its real server (Vector-style)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.delivery.worker import SinkWorker
from bridge.events.builder import EventBuilder, EventOptions
from bridge.events.event import Event
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from sinks.base import Sink
from sinks.jsonl import JsonlSettings, JsonlSink
from sinks.kafka import KafkaSettings, KafkaSink
from sinks.nats import NatsSettings, NatsSink
from tests.env.world import Endpoints, World
from tests.readback import Received, jsonl_all, kafka_all, kafka_topics, nats_all
from tests.secured import (
    KAFKA_VARIANTS,
    NATS_VARIANTS,
    create_topics,
    kafka_client,
    nats_auth,
    nats_client,
)

pytestmark = pytest.mark.world

THINGS = Resource("conformance.keb.example.com", "v1", "things", "Thing", True)
CLUSTER = "east 1%"  # exercises percent-encoding of attribute values in NATS headers


@dataclass
class Subject:
    name: str
    sink: Sink
    read: Callable[[], Awaitable[list[Received]]]
    service: str | None  # the world service behind it, for outage tests


def deltas(count: int, objects: int = 10, tag: str = "") -> list[Delta]:
    """``count`` changes over ``objects`` objects: added first, then updates, then deletes."""
    uids = [str(uuid.uuid4()) for _ in range(objects)]
    out: list[Delta] = []
    version: dict[str, int] = {}
    for n in range(count):
        uid = uids[n % objects]
        version[uid] = version.get(uid, 0) + 1
        if version[uid] == 1:
            kind = DeltaType.ADDED
        elif n >= count - objects:
            kind = DeltaType.DELETED
        else:
            kind = DeltaType.UPDATED
        name = f"obj{tag}-{n % objects}"
        obj = {"apiVersion": "conformance.keb.example.com/v1", "kind": "Thing",
               "metadata": {"name": name, "namespace": "ns-a", "uid": uid,
                            "resourceVersion": str(1000 + n),
                            "managedFields": [{"manager": "x"}]},
               "spec": {"n": n, "blob": "x" * 700}}
        out.append(Delta(kind, THINGS, obj, uid, str(1000 + n), False, "things", n + 1,
                         1_700_000_000.0 + n, "ns-a", name))
    return out


def events(count: int, objects: int = 10, tag: str = "") -> list[Event]:
    builder = EventBuilder(EventOptions(cluster=CLUSTER))
    return [builder.build(d) for d in deltas(count, objects, tag)]


SECURED = [f"kafka-{v}" for v in KAFKA_VARIANTS] + [f"nats-{v}" for v in NATS_VARIANTS]


async def secured_kafka(endpoints: Endpoints, variant: str, run_id: str) -> Subject:
    """Through the secured broker (TLS, SASL or client certificate; ACLs; no
    auto-creation, so the topic is made first); read back as its admin."""
    prefix = f"conf{run_id}"
    await create_topics(endpoints, [f"{prefix}.{THINGS.group}.{THINGS.plural}"])
    sink = KafkaSink(KafkaSettings(name="k", topic=prefix + ".{group}.{plural}",
                                   **kafka_client(endpoints, variant)), CLUSTER)
    admin = endpoints.kafka_noauto_bootstrap_servers

    async def read() -> list[Received]:
        return await kafka_all(admin, await kafka_topics(admin, prefix))
    return Subject("kafka", sink, read, "kafka-secure")


async def secured_nats(endpoints: Endpoints, variant: str, run_id: str) -> Subject:
    """Through a secured NATS server (TLS and an nkey or creds user); read back as the
    same user."""
    stream = f"CONF{run_id.upper()}"
    client = nats_client(endpoints, variant)
    sink = NatsSink(NatsSettings(name="n", stream=stream,
                                 subject=f"conf{run_id}" + ".{group}.{namespace}.{name}",
                                 create_stream=True, **client), CLUSTER)

    async def read() -> list[Received]:
        return await nats_all(client["url"], stream, **nats_auth(client).options())
    return Subject("nats", sink, read, f"nats-{'operator' if variant == 'creds' else 'secure'}")


@pytest.fixture(params=["jsonl", "kafka", "nats", *SECURED])
async def subject(request: pytest.FixtureRequest, endpoints: Endpoints,
                  tmp_path: Path) -> AsyncIterator[Subject]:
    run_id = uuid.uuid4().hex[:8]
    family, _, variant = request.param.partition("-")
    if variant:
        made = await (secured_kafka(endpoints, variant, run_id) if family == "kafka"
                      else secured_nats(endpoints, variant, run_id))
    elif request.param == "jsonl":
        path = tmp_path / "events.jsonl"
        sink: Sink = JsonlSink(JsonlSettings(name="j", path=str(path), fsync=True))

        async def read() -> list[Received]:
            return jsonl_all(path)
        made = Subject("jsonl", sink, read, None)
    elif request.param == "kafka":
        prefix = f"conf{run_id}"
        sink = KafkaSink(KafkaSettings(name="k", bootstrap_servers=endpoints
                                       .kafka_bootstrap_servers,
                                       topic=prefix + ".{group}.{plural}"), CLUSTER)

        async def read() -> list[Received]:
            topics = await kafka_topics(endpoints.kafka_bootstrap_servers, prefix)
            return await kafka_all(endpoints.kafka_bootstrap_servers, topics)
        made = Subject("kafka", sink, read, "kafka")
    else:
        stream = f"CONF{run_id.upper()}"
        sink = NatsSink(NatsSettings(name="n", url=endpoints.nats_url, stream=stream,
                                     subject=f"conf{run_id}" + ".{group}.{namespace}.{name}",
                                     create_stream=True), CLUSTER)

        async def read() -> list[Received]:
            return await nats_all(endpoints.nats_url, stream)
        made = Subject("nats", sink, read, "nats")
    await made.sink.connect()
    yield made
    await made.sink.close()


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _per_key_ids(received: list[Received]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in received:
        if r.attributes.get("tombstone"):
            continue
        out.setdefault(r.attributes["partitionkey"], []).append(r.id)
    return out


async def test_every_event_is_acked_and_readable(subject: Subject) -> None:
    sent = events(600, objects=12)
    for start in range(0, len(sent), 150):
        results = await subject.sink.send(sent[start:start + 150])
        assert results == [None] * len(results)
    received = await subject.read()
    assert sorted(r.id for r in received) == sorted(e.id for e in sent)
    expected = _per_key_ids([Received(e.attributes, None, "", 0) for e in sent])
    assert _per_key_ids(received) == expected  # order per object (per key) kept


async def test_attributes_and_data_follow_the_binding(subject: Subject) -> None:
    sent = events(3, objects=3)
    assert await subject.sink.send(sent) == [None] * 3
    received = {r.id: r for r in await subject.read()}
    for event in sent:
        got = received[event.id]
        for key, value in event.attributes.items():
            if key == "time":  # the SDK parses it; compare instants, not spellings
                assert _instant(got.attributes[key]) == _instant(value)
            else:
                assert got.attributes[key] == value, key
        assert got.data["metadata"]["uid"] == event.delta.uid
        assert "managedFields" not in got.data["metadata"]
    if subject.name == "nats":
        assert all(r.attributes["_msgid"] == r.id for r in received.values())


async def test_duplicate_sends_carry_the_same_ids(subject: Subject) -> None:
    sent = events(20, objects=4)
    await subject.sink.send(sent)
    await subject.sink.send(sent[5:10])  # a retry after a lost ack
    received = await subject.read()
    assert {r.id for r in received} == {e.id for e in sent}
    if subject.name == "nats":  # JetStream de-duplicates by Nats-Msg-Id
        assert len(received) == len(sent)


@pytest.mark.parametrize("subject", ["kafka", "nats"], indirect=True)
async def test_broker_outage_mid_stream_loses_nothing(subject: Subject, world: World) -> None:
    assert subject.service is not None
    acked: list[Event] = []
    worker = SinkWorker(subject.sink, acked.extend, retry_initial=0.2, retry_max=2.0)
    task = asyncio.create_task(worker.run())
    sent = events(900, objects=30)
    try:
        for index, event in enumerate(sent):
            worker.submit([(event, None)])
            if index % 50 == 0:
                await asyncio.sleep(0.02)
            if index == 300:
                await asyncio.to_thread(world.stop, subject.service)
            if index == 500:
                await asyncio.sleep(3)
                await asyncio.to_thread(world.start, subject.service)
        async with asyncio.timeout(120):
            while len(acked) < len(sent):
                await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    received = await subject.read()
    assert {r.id for r in received} == {e.id for e in sent}, "lost events"
    # order per key: the first delivery of each id follows the send order
    first_seen: dict[str, list[str]] = {}
    seen: set[str] = set()
    for r in received:
        if r.id not in seen and not r.attributes.get("tombstone"):
            seen.add(r.id)
            first_seen.setdefault(r.attributes["partitionkey"], []).append(r.id)
    expected = _per_key_ids([Received(e.attributes, None, "", 0) for e in sent])
    assert first_seen == expected
