"""bridge.watch.engine: what the engine hands to the checkpoint saver."""

from __future__ import annotations

import asyncio
import logging

import pytest

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
