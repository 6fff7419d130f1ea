"""The consumer library (kube_event_consumer): events per second it applies to its view,
reading the bridge's events from Kafka and from NATS JetStream, and memory per object held
in the view.

The events are what the bridge sends (its EventBuilder and its sinks' binary-mode
encoders), written to a fresh Kafka topic (3 partitions, key = uid) and a fresh JetStream
stream (subject per object) first; then an Informer with a handler on every transition
reads them from the beginning until all are applied. ``decode + view alone`` is the same
work without a broker (the floor the broker clients add to). Memory: tracemalloc around a
view holding N objects (each a ~1 kB custom resource), per object, next to the object's JSON
size.
"""

from __future__ import annotations

import asyncio
import random
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from typing import Any

import nats as nats_client
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bridge.events.builder import EventBuilder
from bridge.events.event import Event as BridgeEvent
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from kube_event_consumer import Change, Informer, Source, View, decode_kafka
from kube_event_consumer.kafka import KafkaSource
from kube_event_consumer.nats import NatsSource
from sinks.kafka import binary_headers as kafka_headers
from sinks.nats import binary_headers as nats_headers

DB = Resource("bench.example.com", "v1", "databases", "Database", True)


def resource(name: str, uid: str, rv: int) -> dict[str, Any]:
    """A custom resource of about 1 kB, as a controller would keep it."""
    return {
        "apiVersion": DB.api_version, "kind": DB.kind,
        "metadata": {"name": name, "namespace": f"team-{hash(name) % 20}", "uid": uid,
                     "resourceVersion": str(rv), "generation": rv % 7 + 1,
                     "creationTimestamp": "2026-12-01T10:00:00Z",
                     "labels": {"app.kubernetes.io/name": name, "team": "payments",
                                "tier": "backend"},
                     "annotations": {"example.com/owner": "payments@example.com"}},
        "spec": {"engine": "postgres", "version": "16.4", "sizeGi": rv % 500,
                 "replicas": 3, "backup": {"schedule": "0 3 * * *", "retentionDays": 14},
                 "parameters": {f"p{i}": f"value-{i}-{rv % 11}" for i in range(8)}},
        "status": {"phase": "Ready", "observedGeneration": rv % 7 + 1,
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-12-01T10:05:00Z",
                                   "reason": "Provisioned", "message": "all replicas up"}]},
    }


def events(count: int, objects: int) -> list[BridgeEvent]:
    """``objects`` adds, then updates of random live objects, every 20th a deletion
    (followed by a new object's add, so the view keeps its size)."""
    rng = random.Random(5)
    builder = EventBuilder()
    live: list[tuple[str, str]] = []  # (uid, name)
    made: list[BridgeEvent] = []
    for seq in range(1, count + 1):
        rv = 1000 + seq
        if len(live) < objects:
            uid, name = str(uuid.uuid4()), f"db-{seq:07d}"
            live.append((uid, name))
            change = DeltaType.ADDED
        else:
            n = rng.randrange(len(live))
            uid, name = live[n]
            change = DeltaType.DELETED if seq % 20 == 0 else DeltaType.UPDATED
            if change is DeltaType.DELETED:
                live[n] = live[-1]
                live.pop()
        obj = resource(name, uid, rv)
        made.append(builder.build(Delta(change, DB, obj, uid, str(rv), False, "bench", seq,
                                        time.time(), obj["metadata"]["namespace"], name)))
    return made


@dataclass
class Rate:
    name: str
    events: int
    seconds: float
    objects: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def _apply_all(source: Source, count: int) -> tuple[float, int]:
    informer = Informer(source)
    handled = [0]

    def handle(change: Change) -> None:
        handled[0] += 1

    for register in (informer.on_added, informer.on_updated, informer.on_deleted):
        register(handle)
    started = time.perf_counter()
    async with informer:
        while informer.stats.received < count:
            await asyncio.sleep(0.01)
        seconds = time.perf_counter() - started
    return seconds, len(informer.view)


async def kafka(bootstrap: str, made: list[BridgeEvent]) -> Rate:
    topic = f"benchconsumer{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 3, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=1_048_576)
    await producer.start()
    futures = [await producer.send(topic, e.data, key=e.key, headers=kafka_headers(e))
               for e in made]
    await asyncio.gather(*futures)
    await producer.stop()
    seconds, objects = await _apply_all(KafkaSource(bootstrap_servers=bootstrap,
                                                    topics=topic), len(made))
    return Rate("kafka -> view", len(made), seconds, objects)


async def nats(url: str, made: list[BridgeEvent]) -> Rate:
    stream = f"BENCHCONSUMER{uuid.uuid4().hex[:8].upper()}"
    nc = await nats_client.connect(url)
    js = nc.jetstream(publish_async_max_pending=8000)
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    futures = [await js.publish_async(f"{stream}.{e.attributes['namespace']}."
                                      f"{e.attributes['name']}", e.data or b"",
                                      headers=nats_headers(e)) for e in made]
    await asyncio.wait_for(asyncio.gather(*futures), 300)
    try:
        seconds, objects = await _apply_all(NatsSource(url=url, stream=stream), len(made))
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return Rate("nats -> view", len(made), seconds, objects)


def decode_and_view(made: list[BridgeEvent]) -> Rate:
    """The same decoding and applying, from bytes in memory: no broker."""
    records = [(e.key, e.data, kafka_headers(e)) for e in made]
    view = View()
    started = time.perf_counter()
    for key, value, headers in records:
        event = decode_kafka("t", key, value, headers)
        assert not isinstance(event, tuple)
        view.apply(event, topic="t")
    return Rate("decode + view alone", len(made), time.perf_counter() - started, len(view))


def bytes_per_object(objects: int) -> dict[str, float]:
    made = events(objects, objects)  # one add per object
    records = [(e.key, e.data, kafka_headers(e)) for e in made]
    json_bytes = sum(len(e.data or b"") for e in made) / objects
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    view = View()
    for key, value, headers in records:
        event = decode_kafka("t", key, value, headers)
        assert not isinstance(event, tuple)
        view.apply(event, topic="t")
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(view) == objects
    return {"objects": objects, "view_bytes_per_object": (after - before) / objects,
            "object_json_bytes": json_bytes}


def run(count: int, bootstrap: str, nats_url: str) -> dict[str, Any]:
    made = events(count, count // 5)
    rates = [decode_and_view(made), asyncio.run(kafka(bootstrap, made)),
             asyncio.run(nats(nats_url, made))]
    for r in rates:
        print(f"  {r.name}: {r.rate:,.0f} events/s ({r.events:,} events, {r.objects:,} "
              f"objects at the end)", flush=True)
    memory = bytes_per_object(count // 5)
    print(f"  view: {memory['view_bytes_per_object']:,.0f} B/object (objects of "
          f"{memory['object_json_bytes']:,.0f} B JSON), {memory['objects']:,} objects",
          flush=True)
    return {"rates": [{**r.__dict__, "rate": r.rate} for r in rates], "memory": memory}
