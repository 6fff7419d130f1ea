"""bridge.watch.engine: what the engine hands to the checkpoint saver."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.watch.delta import Delta
from bridge.watch.engine import CRD_RESOURCE, WatchEngine
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint
from tests.unit.fakeapi import FakeApi


async def test_streams_not_watched_stay_in_the_checkpoint(
        caplog: pytest.LogCaptureFixture) -> None:
    """A start that has not (or cannot) discover a checkpointed kind must not save a
    checkpoint without it: a restart would then snapshot it afresh and miss its deletions."""
    api = FakeApi()
    api.objects[CRD_RESOURCE.collection_path()] = {}  # no CRDs are served now
    inventory = Inventory()
    inventory.put("uid-1", Entry("41", "ns", "a"))
    saved = StreamCheckpoint("42", 7, inventory, "v1")
    engine = WatchEngine(api, Selection(), checkpoints={"things.x.example.com": saved})
    assert engine.checkpoints() == {"things.x.example.com": saved}
    with caplog.at_level(logging.WARNING):
        async with engine:
            async with asyncio.timeout(5):
                await engine.wait_synced()
            assert engine.checkpoints() == {"things.x.example.com": saved}
    assert "things.x.example.com is in the checkpoint but not watched now" in caplog.text
    assert "(1 objects)" in caplog.text


async def test_a_crd_deleted_while_stopped_has_its_objects_deletions_emitted() -> None:
    api = FakeApi()
    api.objects[CRD_RESOURCE.collection_path()] = {}  # the CRD is gone
    inventory = Inventory()
    inventory.put("uid-1", Entry("41", "ns", "a"))
    inventory.put("uid-2", Entry("42", "", "b"))
    saved = StreamCheckpoint("42", 7, inventory, "v1", "Thing", crd=True)
    engine = WatchEngine(api, Selection(), checkpoints={"things.x.example.com": saved})
    async with engine:
        async with asyncio.timeout(5):
            batch = await anext(aiter(engine))
        engine.ack(batch)
        assert sorted((d.type.value, d.name, d.namespace, d.synthetic, d.sequence)
                      for d in batch) == [("deleted", "a", "ns", True, 8),
                                          ("deleted", "b", "", True, 9)]
        assert {d.resource.kind for d in batch} == {"Thing"}
        committed = engine.checkpoints()["things.x.example.com"]
        assert len(committed.inventory) == 0 and committed.sequence == 9


async def test_a_stream_that_missed_its_crds_object_deletions_emits_them() -> None:
    """The API server deletes a CRD's objects before the CRD; a stream whose watch was cut
    meanwhile (here: it never sees them) emits their deletions when the CRD goes."""
    api = FakeApi()
    crds = CRD_RESOURCE.collection_path()
    api.objects[crds] = {}
    crd = await api.create(crds, "things.x.example.com", group="x.example.com",
                           names={"plural": "things", "kind": "Thing"}, scope="Namespaced",
                           versions=[{"name": "v1", "served": True}])
    crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    things = "/apis/x.example.com/v1/things"
    api.objects[things] = {}
    for name in ("a", "b"):
        await api.create(things, name, "ns")
    engine = WatchEngine(api, Selection())
    seen: list[Delta] = []
    async with engine:
        batches = aiter(engine)
        async with asyncio.timeout(5):
            while len(seen) < 2:
                seen.extend(batch := await anext(batches))
                engine.ack(batch)
            assert engine.stream_keys() == ["things.x.example.com"]
            crd["metadata"]["deletionTimestamp"] = "2026-11-29T00:00:00Z"  # as the API
            await api.update(crds, crd["metadata"]["uid"])  # server does: marked, then gone
            await api.delete(crds, crd["metadata"]["uid"])
            while len(seen) < 4:
                seen.extend(batch := await anext(batches))
                engine.ack(batch)
            while engine.stream_keys():
                await asyncio.sleep(0.01)
    assert sorted((d.type.value, d.name, d.synthetic) for d in seen[2:]) == [
        ("deleted", "a", True), ("deleted", "b", True)]
    assert len(engine.checkpoints()["things.x.example.com"].inventory) == 0
