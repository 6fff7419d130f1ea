"""Replayed watch stream -> CloudEvents -> sink: our pipeline and a naive bridge, same bytes.

Both read the same pre-generated watch traffic over HTTP from ``bench.replay`` (a separate
process). Ours: the real engine (raw-bytes transport, reflector, tracker), delivery and sink.
Naive, the way tutorials write it: the official client's ``watch.Watch().stream``, the
CloudEvents SDK with its defaults (random id, current time), one awaited send per event.
``ours/null+journal``: ours into the null sink as the daemon runs it, with the write-ahead
journal (engine ``journal=True``, a ``CheckpointWriter`` on a file store in a temp dir, and
delivery awaiting ``writer.durable()`` before each dispatch): the cost of journaling.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stream import GROUP, KINDS
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.writer import CheckpointWriter
from bridge.delivery.pipeline import Delivery
from bridge.events.builder import EventBuilder
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.engine import EngineOptions, WatchEngine
from bridge.watch.inventory import Inventory
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint
from sinks.base import Sink
from sinks.kafka import KafkaSettings, KafkaSink
from sinks.nats import NatsSettings, NatsSink
from sinks.null import NullSettings, NullSink
from tests.env.procs import free_port


@dataclass
class Result:
    name: str
    events: int
    seconds: float
    cpu_seconds: float
    journal: dict[str, int] | None = None  # ours/null+journal: what the writer wrote

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_seconds / self.events * 1000


class ReplayServer:
    def __init__(self, events: int, objects: int = 0) -> None:
        self.events = events
        self.objects = objects
        self.port = free_port(set())
        self.proc: subprocess.Popen[bytes] | None = None
        self.kubeconfig = Path(tempfile.mkdtemp()) / "kubeconfig"

    def __enter__(self) -> ReplayServer:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.replay", str(self.port),
                                      str(self.events), str(self.objects)])
        deadline = time.monotonic() + 120
        import urllib.request

        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/apis/{GROUP}/v1",
                                       timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "r",
            "clusters": [{"name": "r", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "u", "user": {}}],
            "contexts": [{"name": "r", "context": {"cluster": "r", "user": "u"}}]}))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def make_sink(kind: str, kafka: str, nats_url: str) -> Sink:
    run = uuid.uuid4().hex[:8]
    if kind == "kafka":
        return KafkaSink(KafkaSettings(name="bus", bootstrap_servers=kafka,
                                       topic=f"bench{run}" + ".{plural}", batch_size=5000,
                                       linger_ms=5))
    if kind == "nats":
        return NatsSink(NatsSettings(name="js", url=nats_url, stream=f"BENCH{run.upper()}",
                                     subject=f"bench{run}" + ".{plural}.{namespace}",
                                     create_stream=True, batch_size=5000, max_pending=8000))
    return NullSink(NullSettings(name="null", batch_size=5000))


def replay_engine(server: ReplayServer, *, journal: bool) -> tuple[HttpTransport, WatchEngine]:
    """The real watch engine on the replay server's kinds, resuming every stream at "1"."""
    transport = HttpTransport(auth.load(str(server.kubeconfig)))
    selection = Selection(crds=False, builtins=tuple(f"{GROUP}/v1/{p}" for p, _ in KINDS))
    checkpoints = {f"{p}.{GROUP}": StreamCheckpoint("1", 0, Inventory(), "v1")
                   for p, _ in KINDS}
    return transport, WatchEngine(transport, selection,
                                  EngineOptions(max_in_flight=20_000, journal=journal),
                                  checkpoints)


async def ours(server: ReplayServer, kind: str, kafka: str, nats_url: str,
               journal: bool = False) -> Result:
    """``journal``: as the daemon runs, with the write-ahead journal on a file store in a
    temp dir (every batch waits for ``writer.durable()`` before it is dispatched)."""
    transport, engine = replay_engine(server, journal=journal)
    sink = make_sink(kind, kafka, nats_url)
    await sink.connect()
    directory = tempfile.mkdtemp(prefix="keb-bench-journal-")
    store = FileStore(directory, "default.checkpoint")
    writer = CheckpointWriter(store, engine.trackers)  # the file store's defaults
    writing: asyncio.Task[None] | None = None
    written = {"segments": 0, "segment_bytes": 0, "bases": 0, "base_bytes": 0}
    append, rebase = store.append, store.rebase

    async def counted_append(segment: bytes) -> None:
        written["segments"] += 1
        written["segment_bytes"] += len(segment)
        await append(segment)

    async def counted_rebase(base: bytes) -> None:
        written["bases"] += 1
        written["base_bytes"] += len(base)
        await rebase(base)

    setattr(store, "append", counted_append)  # noqa: B010 (an instance attribute)
    setattr(store, "rebase", counted_rebase)  # noqa: B010
    if journal:
        await store.load()
        await writer.flush()  # as the daemon: a base before anything is read
    delivery = Delivery(engine, EventBuilder(), [sink],
                        durable=writer.durable if journal else None)
    wall, cpu = time.perf_counter(), time.process_time()
    if journal:
        writing = asyncio.create_task(writer.run())
    await delivery.start()
    await engine.start()
    while sum(cp.sequence for cp in engine.checkpoints().values()) < server.events:
        await asyncio.sleep(0.005)
    result = Result(f"ours/{kind}" + ("+journal" if journal else ""), server.events,
                    time.perf_counter() - wall, time.process_time() - cpu,
                    written if journal else None)
    await engine.stop()
    await delivery.stop()
    if writing is not None:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
    await store.close()
    shutil.rmtree(directory, ignore_errors=True)
    await transport.close()
    return result


def naive(server: ReplayServer, kind: str, kafka: str, nats_url: str, limit: int) -> Result:
    """A tutorial-style bridge; stops after ``limit`` events (it is slow)."""
    from cloudevents.v1.http import CloudEvent, to_structured
    from cloudevents.v1.kafka import to_binary
    from kubernetes import client, config, watch

    api = client.CustomObjectsApi(config.new_client_from_config(str(server.kubeconfig)))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    send: Callable[[Any], Awaitable[Any]] | None = None
    closers: list[Callable[[], Awaitable[Any]]] = []
    if kind == "kafka":
        from aiokafka import AIOKafkaProducer

        async def make_producer() -> AIOKafkaProducer:
            producer = AIOKafkaProducer(bootstrap_servers=kafka, enable_idempotence=True)
            await producer.start()
            return producer

        producer = loop.run_until_complete(make_producer())
        topic = f"naive{uuid.uuid4().hex[:8]}"

        async def send_kafka(event: Any) -> Any:
            message = to_binary(event, data_marshaller=lambda d: json.dumps(d).encode())
            return await producer.send_and_wait(topic, message.value, key=message.key,
                                                headers=list(message.headers.items()))
        send = send_kafka
        closers.append(producer.stop)
    elif kind == "nats":
        import nats

        nc = loop.run_until_complete(nats.connect(nats_url))
        js = nc.jetstream()
        stream = f"NAIVE{uuid.uuid4().hex[:8].upper()}"
        loop.run_until_complete(js.add_stream(name=stream, subjects=[f"{stream}.>"]))

        async def send_nats(event: Any) -> Any:
            headers, body = to_structured(event)
            return await js.publish(f"{stream}.e", body, headers=dict(headers))
        send = send_nats
        closers.append(nc.close)
    per_path = limit // len(KINDS)
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for plural, _ in KINDS:
        seen = 0
        w = watch.Watch()
        for item in w.stream(api.list_cluster_custom_object, GROUP, "v1", plural,
                             resource_version="1", timeout_seconds=600):
            event = CloudEvent({"type": f"k8s.{item['type'].lower()}",
                                "source": f"/apis/{GROUP}/v1/{plural}",
                                "datacontenttype": "application/json"}, item["object"])
            if send is None:
                to_structured(event)
            else:
                loop.run_until_complete(send(event))
            seen += 1
            if seen >= per_path:
                w.stop()
                break
        count += seen
    result = Result(f"naive/{kind}", count, time.perf_counter() - wall,
                    time.process_time() - cpu)
    for close in closers:
        loop.run_until_complete(close())
    loop.close()
    return result


def run(events: int, naive_events: int, kafka: str, nats_url: str,
        sinks: tuple[str, ...] = ("null", "kafka", "nats")) -> list[Result]:
    results = []
    with ReplayServer(events) as server:
        for kind in sinks:
            results.append(asyncio.run(ours(server, kind, kafka, nats_url)))
            print(f"  {results[-1].name}: {results[-1].rate:,.0f} events/s", flush=True)
            if kind == "null":  # the cost of journaling before dispatch, same stream
                results.append(asyncio.run(ours(server, kind, kafka, nats_url, journal=True)))
                print(f"  {results[-1].name}: {results[-1].rate:,.0f} events/s "
                      f"({results[-1].rate / results[-2].rate:.2f}x ours/null; written: "
                      f"{results[-1].journal})", flush=True)
            results.append(naive(server, kind, kafka, nats_url, naive_events))
            print(f"  {results[-1].name}: {results[-1].rate:,.0f} events/s", flush=True)
    return results

