"""Every checkpoint store against its real server: round trip, chunking, fencing."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.checkpoint.codec import CheckpointError, decode, encode
from bridge.checkpoint.configmap import ConfigMapStore
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.natskv import NatsKvStore
from bridge.checkpoint.store import CheckpointStore
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import StreamCheckpoint
from tests.env.world import Endpoints

pytestmark = pytest.mark.world


def big_checkpoint(objects: int) -> dict[str, StreamCheckpoint]:
    inv = Inventory()
    for n in range(objects):
        inv.put(str(uuid.uuid4()), Entry(str(10_000 + n), "namespace-a", f"object-{n:06d}"))
    return {"things.x.io": StreamCheckpoint("99999", objects, inv, "v1")}


@pytest.fixture(params=["file", "nats-kv", "kafka", "configmap"])
async def make_store(request: pytest.FixtureRequest, endpoints: Endpoints,
                     tmp_path: Path) -> AsyncIterator[object]:
    cid = f"t{uuid.uuid4().hex[:8]}"
    transports: list[HttpTransport] = []
    stores: list[CheckpointStore] = []

    def make() -> CheckpointStore:
        store: CheckpointStore
        if request.param == "file":
            store = FileStore(str(tmp_path), cid)
        elif request.param == "nats-kv":
            store = NatsKvStore(endpoints.nats_url, "keb_test", cid)
        elif request.param == "kafka":
            store = KafkaStore(endpoints.kafka_bootstrap_servers, "keb-test-checkpoints", cid)
        else:
            transport = HttpTransport(auth.load(str(endpoints.kubeconfig)))
            transports.append(transport)
            store = ConfigMapStore(transport, "default", cid)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()
    for transport in transports:
        await transport.close()


async def test_round_trip_with_chunking(make_store: object) -> None:
    store = make_store()  # type: ignore[operator]
    assert await store.load() == b""
    small = encode(big_checkpoint(3))
    await store.save(small)
    blob = encode(big_checkpoint(20_000))  # ~1.1 MB: several chunks where values are limited
    assert len(blob) > 1_000_000
    await store.save(blob)
    again = make_store()  # type: ignore[operator]
    loaded = await again.load()
    assert loaded == blob
    assert len(decode(loaded)["things.x.io"].inventory) == 20_000
    await again.save(small)  # a new generation replaces the old chunks
    assert await make_store().load() == small  # type: ignore[operator]


@pytest.mark.parametrize("make_store", ["nats-kv", "configmap"], indirect=True)
async def test_second_writer_is_fenced(make_store: object) -> None:
    """Compare-and-swap stores refuse a second writer (file and kafka rely on the Lease)."""
    first = make_store()  # type: ignore[operator]
    second = make_store()  # type: ignore[operator]
    await first.load()
    await second.load()
    await first.save(b"KEBCP1\n{}\n")
    with pytest.raises(CheckpointError, match="fenced"):
        await second.save(b"KEBCP1\n{}\n")


def test_store_ids_are_namespaced_by_config(tmp_path: Path) -> None:
    assert FileStore(str(tmp_path), "a").path != FileStore(str(tmp_path), "b").path
    assert os.path.basename(FileStore(str(tmp_path), "x.checkpoint").path) == "x.checkpoint"
