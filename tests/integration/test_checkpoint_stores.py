"""Every checkpoint store against its real server: a base and the journal segments appended
after it, rebases that drop what they replace, 0.1.0 checkpoints, crashes in the middle of
a write, and a second writer."""

from __future__ import annotations

import base64
import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bridge.checkpoint import configmap as configmap_module
from bridge.checkpoint.chunks import Manifest, digest, split
from bridge.checkpoint.codec import CheckpointError, CheckpointFenced, decode_base
from bridge.checkpoint.configmap import ConfigMapStore
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.natskv import NatsKvStore
from bridge.checkpoint.store import CheckpointStore, Stored
from bridge.errors import TransportError
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.selection import CHECKPOINT_LABEL
from sinks.nats_security import NatsAuth
from tests.env.world import Endpoints, World
from tests.secured import KAFKA_VARIANTS, NATS_VARIANTS, kafka_client, nats_auth, nats_client

pytestmark = pytest.mark.world

TOPIC = "keb-test-checkpoints"
BUCKET = "keb_test"
NAMESPACE = "default"


class Crash(Exception):
    """Stands for the process dying at this point."""


def kebcp2(objects: int) -> bytes:
    """A checkpoint as 0.1.0 encoded it (``KEBCP2``: header, then the packed inventories)."""
    inv = Inventory()
    for n in range(objects):
        inv.put(str(uuid.uuid4()), Entry(str(10_000 + n), "namespace-a", f"object-{n:06d}"))
    blob = inv.dumps()
    header = orjson.dumps({"streams": [{"key": "x.io/v1/things", "rv": "99999", "seq": objects,
                                        "version": "v1", "kind": "Thing", "crd": True,
                                        "bytes": len(blob)}], "saved_at": time.time()})
    return b"KEBCP2\n" + header + b"\n" + blob


def segment(n: int) -> bytes:
    return orjson.dumps({"j": 1, "s": [["x.io/v1/things", None, [[n, f"uid-{n}"]]]]})


class Backend:
    """One store kind: instances on one checkpoint id, and raw access to what it stored."""

    kind = ""  # the test id
    family = ""  # the store type (one per kind, but for the secured variants of a type)
    old_chunk = 0  # 0.1.0's chunk size

    def __init__(self, endpoints: Endpoints, tmp_path: Path) -> None:
        self.endpoints = endpoints
        self.tmp_path = tmp_path
        self.cid = f"t{uuid.uuid4().hex[:8]}"
        self.stores: list[CheckpointStore] = []

    def new(self) -> CheckpointStore:
        raise NotImplementedError

    def make(self) -> CheckpointStore:
        store = self.new()
        self.stores.append(store)
        return store

    async def restart(self, store: CheckpointStore) -> CheckpointStore:
        """The next process: the old one is gone (its file lock too)."""
        await store.close()
        return self.make()

    async def write_010(self, blob: bytes) -> None:
        """Store ``blob`` as 0.1.0 did: chunks, then a version-1 manifest."""
        raise NotImplementedError

    async def stored(self) -> set[str]:
        """The names of every object or key holding this checkpoint's data."""
        raise NotImplementedError

    async def crash_in_rebase(self, store: CheckpointStore, base: bytes) -> None:
        """Start ``rebase(base)`` and die after the chunks, before the base is current."""
        raise NotImplementedError

    def lose_answer(self, store: CheckpointStore) -> None:
        """The next create-only write lands, but its answer is lost (a timeout)."""
        raise NotImplementedError

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


class FileBackend(Backend):
    kind = family = "file"

    def new(self) -> CheckpointStore:
        return FileStore(str(self.tmp_path), f"{self.cid}.checkpoint")

    @property
    def path(self) -> Path:
        return self.tmp_path / f"{self.cid}.checkpoint"

    async def write_010(self, blob: bytes) -> None:
        self.path.write_bytes(blob)

    async def stored(self) -> set[str]:
        return {p.name for p in self.tmp_path.iterdir() if not p.name.endswith(".lock")}

    async def crash_in_rebase(self, store: CheckpointStore, base: bytes) -> None:
        # what a crash before the rename leaves: a partial new base beside the old one
        self.path.with_name(self.path.name + ".tmp").write_bytes(base[:len(base) // 2])


class ConfigMapBackend(Backend):
    kind = family = "configmap"
    old_chunk = 700 * 1024

    def __init__(self, endpoints: Endpoints, tmp_path: Path) -> None:
        super().__init__(endpoints, tmp_path)
        self.transport = HttpTransport(auth.load(str(endpoints.kubeconfig)))
        self.name = f"kube-event-bridge-{self.cid}"
        self.path = f"/api/v1/namespaces/{NAMESPACE}/configmaps"

    def new(self) -> CheckpointStore:
        return ConfigMapStore(self.transport, NAMESPACE, self.cid)

    async def write_010(self, blob: bytes) -> None:
        parts = split(blob, self.old_chunk)
        manifest = Manifest(1, len(parts), digest(blob), version=1)
        labels = {CHECKPOINT_LABEL: "true", "app.kubernetes.io/managed-by": "kube-event-bridge"}

        def body(name: str, **content: Any) -> bytes:
            return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": name, "labels": labels}, **content})

        for i, part in enumerate(parts):
            await self.transport.request("POST", self.path, body=body(
                f"{self.name}-{manifest.prefix}-{i}",
                binaryData={"chunk": base64.b64encode(part).decode()}))
        await self.transport.request("POST", self.path, body=body(
            self.name, data={"manifest": manifest.dumps().decode()}))

    async def stored(self) -> set[str]:
        found = orjson.loads(await self.transport.request("GET", self.path))
        return {item["metadata"]["name"] for item in found["items"]
                if item["metadata"]["name"].startswith(self.name)}

    async def crash_in_rebase(self, store: CheckpointStore, base: bytes) -> None:
        assert isinstance(store, ConfigMapStore)
        await _crash_at(store, "_put_manifest", store.rebase(base))

    def lose_answer(self, store: CheckpointStore) -> None:
        transport = self.transport

        class Lossy:
            lost = False

            async def request(self, method: str, path: str, **kw: Any) -> bytes:
                answer = await transport.request(method, path, **kw)
                if method == "POST" and not Lossy.lost:
                    Lossy.lost = True
                    raise TransportError(f"{method} {path}: answer lost (test)")
                return answer

        assert isinstance(store, ConfigMapStore)
        store.transport = Lossy()  # type: ignore[assignment]

    async def close(self) -> None:
        await super().close()
        await self.transport.request("DELETE", self.path, params={
            "labelSelector": f"{configmap_module.OF_LABEL}={self.name}"})
        await self.transport.close()


class NatsBackend(Backend):
    kind = family = "nats-kv"
    old_chunk = 512 * 1024

    @property
    def url(self) -> str:
        return self.endpoints.nats_url

    @property
    def auth(self) -> NatsAuth:
        return NatsAuth()

    def new(self) -> CheckpointStore:
        return NatsKvStore(self.url, BUCKET, self.cid, auth=self.auth)

    async def _kv(self) -> tuple[Any, Any]:
        nc = await nats.connect(self.url, **self.auth.options())
        js = nc.jetstream()
        try:
            return nc, await js.key_value(BUCKET)
        except Exception:
            return nc, await js.create_key_value(bucket=BUCKET, history=1)

    async def write_010(self, blob: bytes) -> None:
        nc, kv = await self._kv()
        parts = split(blob, self.old_chunk)
        manifest = Manifest(1, len(parts), digest(blob), version=1)
        for i, part in enumerate(parts):
            await kv.put(f"{self.cid}.{manifest.prefix}.{i}", part)
        await kv.create(f"{self.cid}.manifest", manifest.dumps())
        await nc.close()

    async def stored(self) -> set[str]:
        nc, kv = await self._kv()
        try:
            keys = await kv.keys()
        except Exception:  # NoKeysError
            keys = []
        await nc.close()
        return {k for k in keys if k.startswith(f"{self.cid}.")}

    async def crash_in_rebase(self, store: CheckpointStore, base: bytes) -> None:
        assert isinstance(store, NatsKvStore)
        await _crash_at(store, "_put_manifest", store.rebase(base))

    def lose_answer(self, store: CheckpointStore) -> None:
        assert isinstance(store, NatsKvStore)
        kv = store._kv
        create = kv.create

        async def lossy(key: str, value: bytes) -> int:
            kv.create = create
            await create(key, value)
            raise nats.errors.TimeoutError

        kv.create = lossy


class KafkaBackend(Backend):
    kind = family = "kafka"
    old_chunk = 512 * 1024

    @property
    def raw_servers(self) -> str:
        """Where the test reads and writes the topic itself (as an admin)."""
        return self.endpoints.kafka_bootstrap_servers

    def new(self) -> CheckpointStore:
        return KafkaStore(self.endpoints.kafka_bootstrap_servers, TOPIC, self.cid)

    async def write_010(self, blob: bytes) -> None:
        await self.make().load()  # creates the topic
        producer = AIOKafkaProducer(bootstrap_servers=self.raw_servers,
                                    enable_idempotence=True, max_request_size=2 << 20)
        await producer.start()
        parts = split(blob, self.old_chunk)
        manifest = Manifest(1, len(parts), digest(blob), version=1)
        for i, part in enumerate(parts):
            await producer.send_and_wait(TOPIC, part,
                                         key=f"{self.cid}/{manifest.prefix}/{i}".encode())
        await producer.send_and_wait(TOPIC, manifest.dumps(), key=self.cid.encode())
        await producer.stop()

    async def stored(self) -> set[str]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.raw_servers,
                                    isolation_level="read_committed",
                                    enable_auto_commit=False)
        await consumer.start()
        latest: dict[str, bytes | None] = {}
        try:
            tp = TopicPartition(TOPIC, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            while await consumer.position(tp) < end:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    key = record.key.decode()
                    if key == self.cid or key.startswith(f"{self.cid}/"):
                        latest[key] = record.value
        finally:
            await consumer.stop()
        return {key for key, value in latest.items() if value is not None}

    async def crash_in_rebase(self, store: CheckpointStore, base: bytes) -> None:
        assert isinstance(store, KafkaStore)
        producer = store._producer
        assert producer is not None

        async def crash() -> None:
            raise Crash

        producer.commit_transaction = crash  # the records are sent, never committed
        with pytest.raises(Crash):
            await store.rebase(base)

    def lose_answer(self, store: CheckpointStore) -> None:
        assert isinstance(store, KafkaStore)
        producer = store._producer
        assert producer is not None
        commit = producer.commit_transaction

        async def lossy() -> None:
            await commit()
            raise TimeoutError("commit answer lost (test)")

        producer.commit_transaction = lossy


async def _crash_at(store: object, method: str, call: Awaitable[None]) -> None:
    async def crash(*args: object) -> None:
        raise Crash

    setattr(store, method, crash)
    with pytest.raises(Crash):
        await call


def secured_kafka(variant: str) -> type[KafkaBackend]:
    """The kafka store through the secured broker (TLS and SASL or a client certificate,
    ACLs): ``variant`` of ``tests.secured.KAFKA_VARIANTS``; raw access as its admin."""

    class SecuredKafka(KafkaBackend):
        kind = f"kafka-{variant}"

        @property
        def raw_servers(self) -> str:
            return self.endpoints.kafka_noauto_bootstrap_servers

        def new(self) -> CheckpointStore:
            client = kafka_client(self.endpoints, variant)
            return KafkaStore(client["bootstrap_servers"], TOPIC, self.cid, tls=client["tls"],
                              sasl=client["sasl"])
    return SecuredKafka


def secured_nats(variant: str) -> type[NatsBackend]:
    """The nats-kv store through a secured server (TLS and an nkey or creds user)."""

    class SecuredNats(NatsBackend):
        kind = f"nats-kv-{variant}"

        @property
        def url(self) -> str:
            return str(nats_client(self.endpoints, variant)["url"])

        @property
        def auth(self) -> NatsAuth:
            return nats_auth(nats_client(self.endpoints, variant))
    return SecuredNats


SECURED: dict[str, type[Backend]] = {b.kind: b for b in (
    *(secured_kafka(v) for v in KAFKA_VARIANTS), *(secured_nats(v) for v in NATS_VARIANTS))}
# every store test runs through the most common secured setups; the other variants prove
# their connection with one round trip (each secured Kafka test costs seconds of handshakes)
FULLY_SECURED = ["kafka-scram-sha-512", "nats-kv-creds"]
BACKENDS: dict[str, type[Backend]] = {b.kind: b for b in (
    FileBackend, ConfigMapBackend, NatsBackend, KafkaBackend)} | SECURED
NETWORKED = ["configmap", "nats-kv", "kafka"]


@pytest.fixture(params=[*(k for k in BACKENDS if k not in SECURED), *FULLY_SECURED])
async def backend(request: pytest.FixtureRequest, endpoints: Endpoints,
                  tmp_path: Path) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param](endpoints, tmp_path)
    yield made
    await made.close()
    # Finalizers of the clients' garbage run now, not inside a later ast.parse: CPython
    # 3.11.7 then fails with "AST constructor recursion depth mismatch" (fixed in 3.11.8),
    # e.g. when pytest rewrites hypothesis on import at the end of the session.
    gc.collect()


@pytest.mark.parametrize("backend", list(BACKENDS), indirect=True)
async def test_appends_reload_as_base_and_segments_in_order(backend: Backend) -> None:
    store = backend.make()
    assert await store.load() == Stored(b"", [])
    await store.rebase(b"base-1")
    for n in range(3):
        await store.append(segment(n))
    store = await backend.restart(store)
    assert await store.load() == Stored(b"base-1", [segment(0), segment(1), segment(2)])
    await store.append(segment(3))  # the reloaded store appends after what it found
    store = await backend.restart(store)
    assert (await store.load()).segments == [segment(n) for n in range(4)]


async def test_rebase_drops_older_segments_and_chunks(backend: Backend) -> None:
    store = backend.make()
    await store.load()
    big = kebcp2(16_000)  # > 1 MB: several chunks where a value is limited
    assert len(big) > 1_000_000
    await store.rebase(big)
    await store.append(segment(1))
    await store.append(segment(2))
    after_first = await backend.stored()
    store = await backend.restart(store)
    assert await store.load() == Stored(big, [segment(1), segment(2)])
    await store.rebase(b"base-2")
    await store.append(segment(3))
    store = await backend.restart(store)
    assert await store.load() == Stored(b"base-2", [segment(3)])
    left = await backend.stored()
    if backend.family != "file":  # every object of the first base is gone
        assert not left & {name for name in after_first if name != _manifest_name(backend)}
        # the manifest, one chunk, the rebase's seal (not kafka) and one segment
        assert len(left) == (3 if backend.family == "kafka" else 4), left


def _manifest_name(backend: Backend) -> str:
    return {"configmap": f"kube-event-bridge-{backend.cid}", "nats-kv": f"{backend.cid}.manifest",
            "kafka": backend.cid}.get(backend.family, "")


async def test_a_checkpoint_of_0_1_0_loads_as_a_base(backend: Backend) -> None:
    blob = kebcp2(11_000)  # ~0.8 MB: two chunks for configmap, kafka and nats-kv
    await backend.write_010(blob)
    old = await backend.stored()
    store = backend.make()
    loaded = await store.load()
    assert loaded == Stored(blob, [])
    state = decode_base(loaded.base)["x.io/v1/things"]
    assert len(state.checkpoint.inventory) == 11_000 and state.checkpoint.kind == "Thing"
    await store.rebase(b"base-2")  # replaces 0.1.0's objects
    await store.append(segment(1))
    store = await backend.restart(store)
    assert await store.load() == Stored(b"base-2", [segment(1)])
    if backend.family != "file":
        assert not (await backend.stored()) & (old - {_manifest_name(backend)})


async def test_a_crash_in_the_middle_of_a_rebase_keeps_the_previous_state(
        backend: Backend) -> None:
    store = backend.make()
    await store.load()
    await store.rebase(b"base-1")
    await store.append(segment(1))
    await backend.crash_in_rebase(store, kebcp2(7_000))
    store = await backend.restart(store)
    assert await store.load() == Stored(b"base-1", [segment(1)])
    await store.append(segment(2))  # the next process goes on where the crashed one stood
    await store.rebase(b"base-3")
    await store.append(segment(3))
    store = await backend.restart(store)
    assert await store.load() == Stored(b"base-3", [segment(3)])
    if backend.family != "file":  # the crashed rebase's chunks were cleaned up too
        assert len(await backend.stored()) == (3 if backend.family == "kafka" else 4)


async def test_a_torn_journal_frame_is_cut_off(backend: Backend) -> None:
    if backend.family != "file":
        pytest.skip("a segment is one object or record elsewhere: never half written")
    store = backend.make()
    await store.load()
    await store.rebase(b"base-1")
    await store.append(segment(1))
    await store.append(segment(2))
    await store.close()
    assert isinstance(backend, FileBackend)
    journal = backend.path.with_name(backend.path.name + ".journal")
    whole = journal.stat().st_size
    with journal.open("ab") as f:  # a crash in the middle of the third frame
        f.write(len(segment(3)).to_bytes(4, "big") + b"\0\0\0\0" + segment(3)[:5])
    store = backend.make()
    assert await store.load() == Stored(b"base-1", [segment(1), segment(2)])
    assert journal.stat().st_size == whole
    await store.append(segment(3))
    store = await backend.restart(store)
    assert (await store.load()).segments == [segment(1), segment(2), segment(3)]


async def test_of_two_writers_on_one_state_one_is_fenced(backend: Backend) -> None:
    first = backend.make()
    await first.load()
    await first.rebase(b"base-1")
    second = backend.make()
    if backend.family == "file":  # one process holds the directory's lock
        with pytest.raises(CheckpointError, match="in use"):
            await second.load()
        return
    await second.load()
    outcomes: dict[str, BaseException | None] = {}
    for name, store, n in (("first", first, 1), ("second", second, 2)):
        try:
            await store.append(segment(n))
            outcomes[name] = None
        except CheckpointFenced as exc:
            outcomes[name] = exc
    fenced = [name for name, exc in outcomes.items() if exc is not None]
    # kafka: loading fenced the first; configmap and nats-kv: the second collided
    assert fenced == (["first"] if backend.family == "kafka" else ["second"]), outcomes
    assert "fenced" in str(outcomes[fenced[0]])
    survivor = 2 if fenced == ["first"] else 1
    assert (await backend.make().load()).segments == [segment(survivor)]


@pytest.mark.parametrize("backend", NETWORKED, indirect=True)
async def test_a_writer_still_appending_after_a_takeover_is_fenced_until_it_reloads(
        backend: Backend) -> None:
    """A new owner's rebase fences a writer that loaded before it (issue 12 finding 6: and
    a store that reloads is usable again)."""
    old = backend.make()
    await old.load()
    await old.rebase(b"base-1")
    await old.append(segment(1))
    new = backend.make()
    assert await new.load() == Stored(b"base-1", [segment(1)])
    await new.rebase(b"base-2")  # what a new leader's first write is
    with pytest.raises(CheckpointFenced, match="fenced"):
        await old.append(segment(2))
    with pytest.raises(CheckpointFenced, match="fenced"):
        await old.rebase(b"base-old")
    assert await old.load() == Stored(b"base-2", [])  # reloads: not stuck
    await old.append(segment(3))
    await old.rebase(b"base-3")
    with pytest.raises(CheckpointFenced, match="fenced"):
        await new.append(segment(4))
    assert await backend.make().load() == Stored(b"base-3", [])


@pytest.mark.parametrize("backend", NETWORKED, indirect=True)
async def test_a_write_whose_answer_was_lost_is_not_taken_for_a_second_writer(
        backend: Backend) -> None:
    store = backend.make()
    await store.load()
    await store.rebase(b"base-1")
    backend.lose_answer(store)
    with pytest.raises((TransportError, TimeoutError, nats.errors.TimeoutError)):
        await store.append(segment(1))  # it landed; the writer does not know
    await store.append(segment(2))  # checks first: its own segment, not a fence
    await store.rebase(b"base-2")
    await store.append(segment(3))
    assert await backend.make().load() == Stored(b"base-2", [segment(3)])


async def test_configmap_store_without_deletecollection_deletes_one_by_one(
        endpoints: Endpoints, world: World, tmp_path: Path) -> None:
    """RBAC without ``deletecollection`` (a deploy/base Role of 0.1.0): a rebase still
    deletes every object it replaced, one request each."""
    backend = ConfigMapBackend(endpoints, tmp_path)
    user = f"keb-cm-{backend.cid}"
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    await backend.transport.request("POST", f"{rbac}/roles", body=orjson.dumps({
        "metadata": {"name": user}, "rules": [{
            "apiGroups": [""], "resources": ["configmaps"],
            "verbs": ["get", "list", "create", "update", "delete"]}]}))
    await backend.transport.request("POST", f"{rbac}/rolebindings", body=orjson.dumps({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": user}]}))
    restricted = HttpTransport(auth.load(str(world.user_kubeconfig(user))))
    try:
        store = ConfigMapStore(restricted, NAMESPACE, backend.cid)
        await store.load()
        await store.rebase(kebcp2(11_000))  # two chunks
        await store.append(segment(1))
        await store.rebase(b"base-2")
        await store.append(segment(2))
        assert await backend.make().load() == Stored(b"base-2", [segment(2)])
        assert len(await backend.stored()) == 4  # manifest, chunk, seal, segment
    finally:
        await restricted.close()
        for kind in ("rolebindings", "roles"):
            await backend.transport.request("DELETE", f"{rbac}/{kind}/{user}")
        await backend.close()


async def test_kafka_store_creates_a_compacted_topic_and_refuses_one_that_is_not(
        endpoints: Endpoints) -> None:
    servers = endpoints.kafka_bootstrap_servers
    created, deleting = f"keb-cp-{uuid.uuid4().hex[:8]}", f"keb-cp-{uuid.uuid4().hex[:8]}"
    store = KafkaStore(servers, created, "c1", replication_factor=1, min_insync_replicas=1)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await store.load()
        await store.close()
        answer = await admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, created, {"cleanup.policy": None,
                                               "min.insync.replicas": None})])
        entries = answer[0].to_object()["resources"][0]["config_entries"]
        assert {e["config_names"]: e["config_value"] for e in entries} == {
            "cleanup.policy": "compact", "min.insync.replicas": "1"}
        await admin.create_topics([NewTopic(deleting, 1, 1,
                                            topic_configs={"cleanup.policy": "delete"})])
        refused = KafkaStore(servers, deleting, "c1")
        with pytest.raises(CheckpointError, match=r"cleanup\.policy=compact"):
            await refused.load()
        await refused.close()
    finally:
        await admin.delete_topics([created, deleting])
        await admin.close()


async def test_configmap_store_warns_once_about_a_base_above_8_mib(
        endpoints: Endpoints, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = ConfigMapBackend(endpoints, tmp_path)
    try:
        store = backend.make()
        await store.load()
        big = kebcp2(125_000)
        assert len(big) > 8 * 1024 * 1024
        with caplog.at_level(logging.WARNING, "bridge.checkpoint.configmap"):
            await store.rebase(big)
            await store.rebase(big)
        warnings = [r.getMessage() for r in caplog.records if "ConfigMaps" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "125000 objects in 14 ConfigMaps" in warnings[0]
        assert "use the kafka or nats-kv store" in warnings[0]
    finally:
        await backend.close()


def test_store_ids_are_namespaced_by_config(tmp_path: Path) -> None:
    assert FileStore(str(tmp_path), "a").path != FileStore(str(tmp_path), "b").path
    assert os.path.basename(FileStore(str(tmp_path), "x.checkpoint").path) == "x.checkpoint"
