"""Checkpoint cost at 100k objects and 100 changes/s, per store, before (0.1.0) and after.

For each store (file in a temp dir; configmap on the real kube-apiserver; kafka and nats-kv
on the real brokers), in one run:

- **before**: the 0.1.0 design. Every ``interval`` (2 s, then the save: 0.1.0's ``Saver``
  slept, then saved) the whole checkpoint is encoded (``codec.encode``) and written as a new
  base with the store's ``rebase`` (chunks, manifest, deleting the old chunks; today's rebase
  also writes one seal first, which 0.1.0 did not: one small write per save).
- **after**: the real ``CheckpointWriter`` with the daemon's options
  (``bridge.app.writer_options``: interval 1 s, the store's ``default_min_write_interval``,
  compact_ratio 1), started on what *before* left in the store as the daemon starts (load,
  restore, one base before anything is read), then fed by ``StreamTracker(journal=True)``s
  recording the same change mix, with ``writer.durable()`` awaited before each "dispatch" as
  delivery does, and every change acknowledged 5 ms after its dispatch.

Writes are counted where they leave the process: file ``pwrite``/``fsync`` calls (the store
module's ``os`` calls); configmap HTTP requests by verb (``DELETE`` on the collection counted
as ``deletecollection``), plus etcd's revision and the live bytes of the checkpoint's keys
read from etcd itself; kafka records sent and transactions committed, plus the partition's
offsets (records and transaction markers); nats-kv ``put``/``create``/``update`` and stream
purges, plus the stream's sequence. Compaction: at 100 changes/s the journal does not
outgrow a 100k-object base within a short window, so the period is computed from the
measured journal growth (bytes and segments per second against the writer's thresholds) and
each compaction's cost is the measured cost of the writer's first base (same size); the
"amortized" figures add that cost spread over the period.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import aiohttp
import orjson

from bridge.app import writer_options
from bridge.checkpoint import file as file_module
from bridge.checkpoint.codec import encode
from bridge.checkpoint.configmap import OF_LABEL, ConfigMapStore
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.natskv import NatsKvStore
from bridge.checkpoint.replay import restore
from bridge.checkpoint.store import CheckpointStore
from bridge.checkpoint.writer import CheckpointWriter
from bridge.config.model import Config
from bridge.kube import auth
from bridge.kube.transport import HttpTransport, Transport
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import StreamCheckpoint, StreamTracker
from tests.env.world import Endpoints

STORES = ("file", "configmap", "kafka", "nats-kv")
NAMESPACE = "default"
BEFORE_INTERVAL = 2.0  # 0.1.0's checkpoint.interval default
ACK_DELAY = 0.005  # a sink acknowledging 5 ms after dispatch
# streams (group_resource keys) and their share of the objects: a few big kinds, many small
KINDS = [("pods", "", 0.30), ("configmaps", "", 0.15), ("secrets", "", 0.10),
         ("replicasets.apps", "apps", 0.08), ("deployments.apps", "apps", 0.05),
         ("services", "", 0.05), ("serviceaccounts", "", 0.04),
         ("certificates.cert-manager.io", "cert-manager.io", 0.05),
         ("databases.demo.example.com", "demo.example.com", 0.04),
         ("kafkatopics.kafka.strimzi.io", "kafka.strimzi.io", 0.04),
         ("virtualservices.networking.istio.io", "networking.istio.io", 0.05),
         ("applications.argoproj.io", "argoproj.io", 0.05)]
APPS = ["checkout", "payments", "orders", "cart", "search", "catalog", "auth", "gateway",
        "recommendations", "inventory", "shipping", "notifications", "ledger", "reporting"]
TEAMS = ["payments", "storefront", "platform", "data", "identity", "logistics", "growth",
         "risk", "search", "mobile"]
ENVS = ["prod", "staging", "dev", "qa"]
NAMESPACES = [f"{team}-{app}-{env}" for team in TEAMS for app in APPS[:5] for env in ENVS]


# ---- the workload ----------------------------------------------------------------------------

def _suffix(rng: random.Random, size: int) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(size))


class Workload:
    """A cluster's inventory (uids, names, namespaces, resourceVersions as a real one has them)
    and a change stream over it: 90% updates, 5% creates, 5% deletes."""

    def __init__(self, objects: int, seed: int = 11) -> None:
        self.rng = random.Random(seed)
        self.rv = 48_213_377  # an etcd revision as a busy cluster has it
        self.checkpoints: dict[str, StreamCheckpoint] = {}
        for key, _, share in KINDS:
            inv = Inventory()
            for _ in range(round(objects * share)):
                uid, entry = self._new(key)
                inv.put(uid, entry)
            self.checkpoints[key] = StreamCheckpoint(str(self.rv), 0, inv, "v1",
                                                     key.split(".")[0].title(), "." in key)

    def _new(self, key: str) -> tuple[str, Entry]:
        rng = self.rng
        self.rv += rng.randrange(1, 40)
        plural = key.split(".")[0]
        name = f"{rng.choice(APPS)}-{plural.rstrip('s')}-{_suffix(rng, 10)}-{_suffix(rng, 5)}"
        return str(uuid.UUID(int=rng.getrandbits(128), version=4)), Entry(
            str(self.rv), rng.choice(NAMESPACES), name[:63])

    def copy(self) -> dict[str, StreamCheckpoint]:
        return {key: StreamCheckpoint(cp.resource_version, cp.sequence,
                                      Inventory.loads(cp.inventory.dumps()), cp.version,
                                      cp.kind, cp.crd) for key, cp in self.checkpoints.items()}


class Driver:
    """Records ``rate`` changes per second into the trackers; with ``durable`` (the writer's),
    awaits it before each dispatch, as delivery does; acknowledges every change ACK_DELAY
    after its dispatch."""

    def __init__(self, trackers: dict[str, StreamTracker], rate: float, seed: int,
                 durable: Callable[[], Awaitable[None]] | None = None) -> None:
        self.trackers = trackers
        self.rate = rate
        self.durable = durable
        self.rng = random.Random(seed)
        self.keys = list(trackers)
        shares = {key: share for key, _, share in KINDS}
        self.weights = [shares.get(key, 0.01) for key in self.keys]
        self.uids = {key: [uid for uid, _ in t.items()] for key, t in trackers.items()}
        self.rv = 1 + max(int(t.committed.resource_version or 0) for t in trackers.values())
        self.changes = Counter[str]()
        self.entry_bytes = 0  # packed inventory entries of the changed objects
        self.latencies: list[float] = []  # record -> dispatch (after durable())
        self._queue: list[tuple[StreamTracker, int, float]] = []
        self._ready = asyncio.Event()

    def _change(self) -> None:
        rng = self.rng
        key = rng.choices(self.keys, self.weights)[0]
        tracker, uids = self.trackers[key], self.uids[key]
        self.rv += rng.randrange(1, 40)
        roll = rng.random()
        if roll < 0.05 or not uids:  # create
            name = f"{rng.choice(APPS)}-{key.split('.')[0].rstrip('s')}-" \
                   f"{_suffix(rng, 10)}-{_suffix(rng, 5)}"
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            entry: Entry | None = Entry(str(self.rv), rng.choice(NAMESPACES), name[:63])
            uids.append(uid)
            self.changes["create"] += 1
        else:
            index = rng.randrange(len(uids))
            uid = uids[index]
            old = tracker.get(uid)
            assert old is not None
            if roll < 0.10:  # delete (swap-remove)
                uids[index] = uids[-1]
                uids.pop()
                entry = None
                self.entry_bytes += _packed(uid, old)
                self.changes["delete"] += 1
            else:
                entry = Entry(str(self.rv), old.namespace, old.name)
                self.changes["update"] += 1
        if entry is not None:
            self.entry_bytes += _packed(uid, entry)
        seq = tracker.record(uid, entry, str(self.rv))
        self._queue.append((tracker, seq, time.monotonic()))
        self._ready.set()

    async def produce(self, seconds: float) -> None:
        start = time.monotonic()
        made = 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * self.rate)
            while made < due:
                self._change()
                made += 1
            await asyncio.sleep(0.01)

    async def dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self.durable is not None:
                await self.durable()
            batch, self._queue = self._queue, []
            now = time.monotonic()
            self.latencies.extend(now - t for _, _, t in batch)
            loop.call_later(ACK_DELAY, _ack, batch)

    @property
    def total(self) -> int:
        return sum(self.changes.values())


def _ack(batch: list[tuple[StreamTracker, int, float]]) -> None:
    for tracker, seq, _ in batch:
        tracker.ack(seq)


def _packed(uid: str, entry: Entry) -> int:
    """The size of the object's entry as the inventory packs it (``Inventory.dumps``)."""
    return 3 + len(uid.encode()) + len(f"{entry.resource_version}\0{entry.namespace}\0"
                                       f"{entry.name}".encode())


# ---- counting what leaves the process --------------------------------------------------------

@dataclass
class Counts:
    ops: Counter[str] = field(default_factory=Counter)  # store/API/broker operations
    bytes: int = 0  # bytes written to the store (its wire/disk format)
    payload: Counter[str] = field(default_factory=Counter)  # bytes handed to append/rebase
    calls: Counter[str] = field(default_factory=Counter)  # append/rebase calls
    rebase_ops: Counter[str] = field(default_factory=Counter)  # the part of ops in rebases
    rebase_bytes: int = 0  # the part of bytes in rebases

    def snapshot(self) -> Counts:
        return Counts(Counter(self.ops), self.bytes, Counter(self.payload),
                      Counter(self.calls), Counter(self.rebase_ops), self.rebase_bytes)

    def minus(self, other: Counts) -> Counts:
        return Counts(self.ops - other.ops, self.bytes - other.bytes,
                      self.payload - other.payload, self.calls - other.calls,
                      self.rebase_ops - other.rebase_ops,
                      self.rebase_bytes - other.rebase_bytes)


WRITE_OPS = {  # per store: which operations are writes (the rest are reads)
    "file": ("pwrite", "fsync", "rename"),
    "configmap": ("POST", "PUT", "DELETE", "deletecollection"),
    "kafka": ("records", "transactions"),
    "nats-kv": ("put", "create", "update", "purge"),
}
PRIMARY = {"file": ("pwrite",), "configmap": ("POST", "PUT", "DELETE", "deletecollection"),
           "kafka": ("records",), "nats-kv": ("put", "create", "update", "purge")}


class CountingOs:
    """Stands in for the file store module's ``os``: counts writes and fsyncs."""

    def __init__(self, counts: Counts) -> None:
        self._counts = counts

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def pwrite(self, fd: int, data: Any, offset: int) -> int:
        written = os.pwrite(fd, data, offset)
        self._counts.ops["pwrite"] += 1
        self._counts.bytes += written
        return written

    def fsync(self, fd: int) -> None:
        self._counts.ops["fsync"] += 1
        os.fsync(fd)

    def replace(self, src: Any, dst: Any) -> None:
        self._counts.ops["rename"] += 1
        os.replace(src, dst)


class CountingTransport:
    """The API server transport, counting requests by verb and request body bytes."""

    def __init__(self, inner: Transport, counts: Counts) -> None:
        self.inner = inner
        self.counts = counts

    async def request(self, method: str, path: str, params: Any = None,
                      body: bytes | None = None,
                      content_type: str = "application/json") -> bytes:
        verb = method
        if method == "DELETE" and path.endswith("/configmaps"):
            verb = "deletecollection"
        self.counts.ops[verb] += 1
        self.counts.bytes += len(body or b"")
        return await self.inner.request(method, path, params=params, body=body,
                                        content_type=content_type)

    def stream(self, path: str, params: Any, read_timeout: float) -> Any:
        return self.inner.stream(path, params, read_timeout)

    async def close(self) -> None:
        await self.inner.close()


class CountingKafkaStore(KafkaStore):
    counts: Counts

    async def _start_producer(self) -> Any:
        producer = await super()._start_producer()
        counts, send, commit = self.counts, producer.send, producer.commit_transaction

        async def counted_send(topic: str, value: bytes | None = None,
                               key: bytes | None = None, **kw: Any) -> Any:
            counts.ops["records"] += 1
            counts.bytes += len(value or b"") + len(key or b"")
            return await send(topic, value, key=key, **kw)

        async def counted_commit() -> None:
            counts.ops["transactions"] += 1
            await commit()

        producer.send = counted_send
        producer.commit_transaction = counted_commit
        return producer


class CountingNatsKvStore(NatsKvStore):
    counts: Counts

    async def _open(self) -> Any:
        fresh = self._kv is None
        kv = await super()._open()
        if fresh:
            counts = self.counts
            for name in ("put", "create", "update"):
                setattr(kv, name, _counted_kv(getattr(kv, name), name, counts))
            get, purge = kv.get, self._js.purge_stream

            async def counted_get(key: str, *args: Any, **kw: Any) -> Any:
                counts.ops["get"] += 1
                return await get(key, *args, **kw)

            async def counted_purge(*args: Any, **kw: Any) -> Any:
                counts.ops["purge"] += 1
                return await purge(*args, **kw)

            kv.get = counted_get
            self._js.purge_stream = counted_purge
        return kv


def _counted_kv(method: Any, name: str, counts: Counts) -> Any:
    async def counted(key: str, value: bytes, *args: Any, **kw: Any) -> Any:
        counts.ops[name] += 1
        counts.bytes += len(value) + len(key)
        return await method(key, value, *args, **kw)
    return counted


def _count_store_calls(store: CheckpointStore, counts: Counts) -> None:
    """What the writer (or the 0.1.0 loop) hands the store: payload bytes per kind."""
    append, rebase = store.append, store.rebase

    async def counted_append(segment: bytes) -> None:
        counts.calls["append"] += 1
        counts.payload["append"] += len(segment)
        await append(segment)

    async def counted_rebase(base: bytes) -> None:
        counts.calls["rebase"] += 1
        counts.payload["rebase"] += len(base)
        ops, size = Counter(counts.ops), counts.bytes
        try:
            await rebase(base)
        finally:
            counts.rebase_ops += counts.ops - ops
            counts.rebase_bytes += counts.bytes - size

    setattr(store, "append", counted_append)  # noqa: B010 (an instance attribute)
    setattr(store, "rebase", counted_rebase)  # noqa: B010


# ---- the servers' own counts -----------------------------------------------------------------

class Etcd:
    """etcd's revision (one per key written or deleted) and the checkpoint's live bytes,
    read from etcd's JSON gateway."""

    def __init__(self, endpoint: str) -> None:
        self.url = endpoint.split(",")[0].rstrip("/")

    async def _post(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.url}{path}", json=doc) as resp:
            resp.raise_for_status()
            answer: dict[str, Any] = orjson.loads(await resp.read())
            return answer

    async def revision(self) -> int:
        doc = await self._post("/v3/maintenance/status", {})
        return int(doc["header"]["revision"])

    async def live(self, prefix: str) -> tuple[int, int]:
        """Keys under ``prefix`` and the bytes of their values (what etcd stores)."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        doc = await self._post("/v3/kv/range", {
            "key": base64.b64encode(prefix.encode()).decode(),
            "range_end": base64.b64encode(end.encode()).decode()})
        kvs = doc.get("kvs") or []
        return len(kvs), sum(len(base64.b64decode(kv.get("value", ""))) for kv in kvs)


async def _kafka_offsets(bootstrap: str, topic: str) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, 0)]  # the store creates it with one partition
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


# ---- one store -------------------------------------------------------------------------------

class Bench:
    """Makes store instances of one kind on one checkpoint id (each a "process"), counted."""

    def __init__(self, kind: str, endpoints: Endpoints) -> None:
        self.kind = kind
        self.endpoints = endpoints
        self.run = uuid.uuid4().hex[:8]
        self.cid = f"bench{self.run}"
        self.topic = f"keb-bench-checkpoints-{self.run}"
        self.bucket = f"keb_bench_{self.run}"
        self.directory = tempfile.mkdtemp(prefix="keb-bench-checkpoint-")
        self.counts = Counts()
        self.transport: HttpTransport | None = None
        self.etcd = Etcd(endpoints.etcd_endpoints)
        self._saved_os: ModuleType | None = None
        checkpoint: dict[str, Any] = {"store": kind, "id": self.cid}
        if kind == "file":
            checkpoint["path"] = self.directory
        elif kind == "configmap":
            checkpoint["namespace"] = NAMESPACE
        elif kind == "kafka":
            checkpoint.update(bootstrap_servers=endpoints.kafka_bootstrap_servers,
                              topic=self.topic)
        else:
            checkpoint.update(url=endpoints.nats_url, bucket=self.bucket)
        self.config = Config.model_validate({"sinks": [{"name": "null", "type": "null"}],
                                             "checkpoint": checkpoint})

    def __enter__(self) -> Bench:
        if self.kind == "file":
            self._saved_os = getattr(file_module, "os")  # noqa: B009
            setattr(file_module, "os", CountingOs(self.counts))  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved_os is not None:
            setattr(file_module, "os", self._saved_os)  # noqa: B010
        shutil.rmtree(self.directory, ignore_errors=True)

    def store(self, counted: bool = True) -> CheckpointStore:
        """A new store instance, as the factory builds it (with the counting seams)."""
        c = self.config.checkpoint
        counts = self.counts if counted else Counts()
        made: CheckpointStore
        if self.kind == "file":
            made = FileStore(c.path, f"{c.id}.checkpoint")
        elif self.kind == "configmap":
            if self.transport is None:
                self.transport = HttpTransport(auth.load(str(self.endpoints.kubeconfig)))
            made = ConfigMapStore(CountingTransport(self.transport, counts), c.namespace, c.id)
        elif self.kind == "kafka":
            kafka = CountingKafkaStore(c.bootstrap_servers, c.topic, c.id,
                                       replication_factor=c.replication_factor,
                                       min_insync_replicas=c.min_insync_replicas)
            kafka.counts = counts
            made = kafka
        else:
            nats_kv = CountingNatsKvStore(c.url, c.bucket, c.id)
            nats_kv.counts = counts
            made = nats_kv
        _count_store_calls(made, counts)
        return made

    async def server_marks(self) -> dict[str, int]:
        """What the server itself counts: etcd revision, kafka offsets, nats sequence."""
        if self.kind == "configmap":
            return {"etcd_revisions": await self.etcd.revision()}
        if self.kind == "kafka":
            return {"kafka_offsets": await _kafka_offsets(
                self.endpoints.kafka_bootstrap_servers, self.topic)}
        if self.kind == "nats-kv":
            import nats

            nc = await nats.connect(self.endpoints.nats_url)
            try:
                info = await nc.jetstream().stream_info(f"KV_{self.bucket}")
                return {"nats_messages": int(info.state.last_seq)}
            finally:
                await nc.close()
        return {}

    async def stored(self) -> dict[str, int]:
        """What the checkpoint occupies in its store now."""
        if self.kind == "configmap":
            keys, size = await self.etcd.live(
                f"/registry/configmaps/{NAMESPACE}/kube-event-bridge-{self.cid}")
            return {"objects": keys, "etcd_bytes": size}
        if self.kind == "file":
            return _directory(self.directory)
        return {}

    async def cleanup(self) -> None:
        try:
            if self.kind == "configmap" and self.transport is not None:
                await self.transport.request(
                    "DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps",
                    params={"labelSelector": f"{OF_LABEL}=kube-event-bridge-{self.cid}"})
            elif self.kind == "kafka":
                from aiokafka.admin import AIOKafkaAdminClient

                admin = AIOKafkaAdminClient(
                    bootstrap_servers=self.endpoints.kafka_bootstrap_servers)
                await admin.start()
                try:
                    await admin.delete_topics([self.topic])
                finally:
                    await admin.close()
            elif self.kind == "nats-kv":
                import nats

                nc = await nats.connect(self.endpoints.nats_url)
                try:
                    await nc.jetstream().delete_key_value(self.bucket)
                finally:
                    await nc.close()
        finally:
            if self.transport is not None:
                await self.transport.close()


def _directory(path: str) -> dict[str, int]:
    names = [n for n in os.listdir(path) if not n.endswith(".lock")]
    return {"objects": len(names),
            "bytes": sum(os.path.getsize(os.path.join(path, n)) for n in names)}


def _rates(delta: Counts, seconds: float, kind: str, changes: int,
           entry_bytes: int) -> dict[str, Any]:
    writes = sum(delta.ops[op] for op in PRIMARY[kind])
    return {
        "seconds": seconds, "changes": changes, "changes_per_s": changes / seconds,
        "changed_entry_bytes_per_s": entry_bytes / seconds,
        "store_bytes_per_s": delta.bytes / seconds,
        "payload_bytes_per_s": sum(delta.payload.values()) / seconds,
        "writes_per_s": writes / seconds,
        "ops_per_s": {op: n / seconds for op, n in sorted(delta.ops.items())},
        "appends": delta.calls["append"], "rebases": delta.calls["rebase"],
        "payload": dict(delta.payload),
    }


async def before(bench: Bench, workload: Workload, seconds: float,
                 rate: float) -> dict[str, Any]:
    """0.1.0: sleep ``interval``, encode everything, write it as a new base; repeat."""
    store = bench.store()
    await store.load()
    trackers = {key: StreamTracker(cp) for key, cp in workload.copy().items()}
    driver = Driver(trackers, rate, seed=1)
    saves: list[float] = []
    first: list[float] = []
    idle = asyncio.Event()
    idle.set()

    async def saver() -> None:
        while True:
            await asyncio.sleep(BEFORE_INTERVAL)
            idle.clear()
            started = time.monotonic()
            await store.rebase(encode({k: t.committed for k, t in trackers.items()}))
            saves.append(time.monotonic() - started)
            if not first:
                first.append(time.monotonic() - t0)
            idle.set()

    marks = await bench.server_marks()
    mark = bench.counts.snapshot()
    t0 = time.monotonic()
    tasks = [asyncio.create_task(driver.dispatch()), asyncio.create_task(saver())]
    await driver.produce(seconds)
    await idle.wait()  # a save under way is counted whole
    elapsed = time.monotonic() - t0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    delta = bench.counts.snapshot().minus(mark)
    after_marks = await bench.server_marks()
    result = _rates(delta, elapsed, bench.kind, driver.total, driver.entry_bytes)
    result.update(mode="before", saves=len(saves),
                  save_seconds=statistics.mean(saves) if saves else 0.0,
                  base_bytes=delta.payload["rebase"] // max(1, delta.calls["rebase"]),
                  first_durable_s=first[0] if first else None,
                  server={k: (after_marks[k] - v) / elapsed for k, v in marks.items()})
    await store.close()
    return result


async def after(bench: Bench, seconds: float, rate: float, seed: int = 2) -> dict[str, Any]:
    """The real writer, started as the daemon starts it, then fed at ``rate`` changes/s."""
    mark = bench.counts.snapshot()
    started = time.monotonic()
    store = bench.store()
    stored = await store.load()
    checkpoints = restore(stored.base, stored.segments)
    loaded = time.monotonic()
    trackers = {key: StreamTracker(cp, journal=True) for key, cp in checkpoints.items()}
    writer = CheckpointWriter(store, lambda: trackers,
                              options=writer_options(bench.config, store))
    await writer.flush()  # the daemon's first write: a base before anything is read
    first = time.monotonic()
    base_cost = bench.counts.snapshot().minus(mark)
    load_cost = Counts(ops=Counter({op: n for op, n in base_cost.ops.items()
                                    if op not in WRITE_OPS[bench.kind]}))
    base_cost = base_cost.minus(load_cost)

    driver = Driver(trackers, rate, seed=seed, durable=writer.durable)
    tasks = [asyncio.create_task(writer.run()), asyncio.create_task(driver.dispatch())]
    marks = await bench.server_marks()
    mark = bench.counts.snapshot()
    t0 = time.monotonic()
    await driver.produce(seconds)
    await writer.durable()  # the last changes' segment
    elapsed = time.monotonic() - t0
    delta = bench.counts.snapshot().minus(mark)
    after_marks = await bench.server_marks()
    await asyncio.sleep(writer.options.interval + 0.5)  # the last acknowledgements' header
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    stored_now = await bench.stored()
    await store.close()

    result = _rates(delta, elapsed, bench.kind, driver.total, driver.entry_bytes)
    base_bytes = base_cost.payload["rebase"]
    journal_bytes = (delta.bytes - delta.rebase_bytes) / elapsed
    journal_writes = sum(delta.ops[op] - delta.rebase_ops[op] for op in PRIMARY[bench.kind])
    journal_per_s = delta.payload["append"] / elapsed
    segments_per_s = delta.calls["append"] / elapsed
    threshold = max(writer.options.compact_min_bytes, writer.options.compact_ratio * base_bytes)
    by_bytes = threshold / journal_per_s if journal_per_s else float("inf")
    by_segments = store.max_segments / segments_per_s if segments_per_s else float("inf")
    period = min(by_bytes, by_segments)
    base_writes = sum(base_cost.ops[op] for op in PRIMARY[bench.kind])
    latencies = sorted(driver.latencies)
    result.update(
        mode="after", options=writer.options.__dict__,
        journal_store_bytes_per_s=journal_bytes,
        journal_payload_bytes_per_s=journal_per_s,
        journal_writes_per_s=journal_writes / elapsed,
        segments_per_s=segments_per_s,
        rebases_in_window=delta.calls["rebase"],
        first_durable_s=first - started, first_load_s=loaded - started,
        first_base_s=first - loaded, base_bytes=base_bytes,
        base_store_bytes=base_cost.bytes, base_writes=base_writes,
        base_ops=dict(base_cost.ops), load_ops=dict(load_cost.ops),
        compaction={
            "observed": delta.calls["rebase"], "computed": True,
            "period_s": period, "due_to": "bytes" if by_bytes <= by_segments else "segments",
            "threshold_bytes": threshold, "max_segments": store.max_segments,
            "amortized_store_bytes_per_s": journal_bytes + base_cost.bytes / period,
            "amortized_payload_bytes_per_s": journal_per_s + base_bytes / period,
            "amortized_writes_per_s": journal_writes / elapsed + base_writes / period},
        dispatch_latency_ms={"p50": 1000 * latencies[len(latencies) // 2],
                             "p99": 1000 * latencies[int(len(latencies) * 0.99)]}
        if latencies else {},
        server={k: (after_marks[k] - v) / elapsed for k, v in marks.items()},
        stored=stored_now)

    # the resulting checkpoint, loaded as the next start would
    reader = bench.store(counted=False)
    t = time.monotonic()
    again = await reader.load()
    restored = restore(again.base, again.segments)
    result["load_s"] = time.monotonic() - t
    result["load_segments"] = len(again.segments)
    await reader.close()
    expected = {key: sorted(uid for uid, _ in tr.items()) for key, tr in trackers.items()}
    got = {key: sorted(uid for uid, _ in cp.inventory.items()) for key, cp in restored.items()}
    result["objects"] = sum(len(v) for v in got.values())
    result["reload_matches"] = got == expected
    return result


async def run_store(kind: str, endpoints: Endpoints, workload: Workload, seconds_before: float,
                    seconds_after: float, rate: float,
                    low_rate: float | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with Bench(kind, endpoints) as bench:
        try:
            out.append({"store": kind, **await before(bench, workload, seconds_before, rate)})
            _print(out[-1])
            out.append({"store": kind, **await after(bench, seconds_after, rate)})
            _print(out[-1])
            if low_rate is not None:
                out.append({"store": kind, **await after(bench, seconds_after, low_rate,
                                                         seed=3)})
                _print(out[-1])
        finally:
            await bench.cleanup()
    return out


def _print(r: dict[str, Any]) -> None:
    ops = {op: round(n, 2) for op, n in r["ops_per_s"].items()}
    line = (f"  {r['store']:9s} {r['mode']:6s} {r['changes_per_s']:5.0f} changes/s: "
            f"{r['store_bytes_per_s'] / 1000:9.1f} kB/s, {r['writes_per_s']:6.1f} writes/s "
            f"{ops}")
    if r["mode"] == "after":
        c = r["compaction"]
        line += (f"; journal alone {r['journal_store_bytes_per_s'] / 1000:.1f} kB/s, "
                 f"{r['journal_writes_per_s']:.1f} writes/s, {c['observed']} compactions "
                 f"in the window; first durable {r['first_durable_s']:.2f}s (load "
                 f"{r['first_load_s']:.2f}s + base {r['first_base_s']:.2f}s); compaction "
                 f"every {c['period_s']:.0f}s ({c['due_to']}): amortized "
                 f"{c['amortized_store_bytes_per_s'] / 1000:.1f} kB/s, "
                 f"{c['amortized_writes_per_s']:.1f} writes/s; reload {r['load_s']:.2f}s "
                 f"({r['load_segments']} segments, matches: {r['reload_matches']}); "
                 f"record->dispatch {r['dispatch_latency_ms']}")
    else:
        line += f"; save {r['save_seconds']:.2f}s of {r['base_bytes'] / 1e6:.1f} MB"
    print(line, flush=True)


async def run(endpoints: Endpoints, objects: int = 100_000, rate: float = 100.0,
              seconds_before: float = 12.0, seconds_after: float = 20.0,
              stores: tuple[str, ...] = STORES) -> dict[str, Any]:
    started = time.monotonic()
    workload = Workload(objects)
    sizes = {key: len(cp.inventory) for key, cp in workload.checkpoints.items()}
    results: list[dict[str, Any]] = []
    for kind in stores:
        results.extend(await run_store(kind, endpoints, workload, seconds_before,
                                       seconds_after, rate,
                                       low_rate=rate / 10 if kind == "configmap" else None))
    return {"objects": sum(sizes.values()), "streams": len(sizes), "rate": rate,
            "before_interval": BEFORE_INTERVAL, "seconds": time.monotonic() - started,
            "results": results}
