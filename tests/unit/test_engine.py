"""bridge.watch.engine: what the engine hands to the checkpoint writer, and its supervision."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.errors import ApiError, TransportError
from bridge.metrics import REGISTRY
from bridge.watch.backoff import Pacing
from bridge.watch.delta import Delta
from bridge.watch.engine import CRD_RESOURCE, EngineOptions, WatchEngine
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint
from tests.unit.fakeapi import FakeApi, VirtualTime


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


# ---- supervision (issue 12) ---------------------------------------------------------------

FAST = EngineOptions(pacing=Pacing(initial=0.01, maximum=0.05))
CRDS = CRD_RESOURCE.collection_path()


async def add_crd(api: FakeApi, plural: str, kind: str) -> str:
    """An Established CRD ``plural.x.example.com`` (served at v1); returns its objects'
    collection path."""
    api.objects.setdefault(CRDS, {})
    crd = await api.create(CRDS, f"{plural}.x.example.com", group="x.example.com",
                           names={"plural": plural, "kind": kind}, scope="Namespaced",
                           versions=[{"name": "v1", "served": True}])
    crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    path = f"/apis/x.example.com/v1/{plural}"
    api.objects.setdefault(path, {})
    await api.update(CRDS, crd["metadata"]["uid"])  # the watch sees it Established
    return path


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(f"kube_event_bridge_{name}", labels)


class Consumer:
    """Iterates the engine in the background, acking everything."""

    def __init__(self, engine: WatchEngine) -> None:
        self.engine = engine
        self.deltas: list[Delta] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.engine:
            self.deltas.extend(batch)
            self.engine.ack(batch)

    def names(self, kind: str) -> list[str]:
        return [d.name for d in self.deltas if d.resource.kind == kind]

    async def wait(self, kind: str, *names: str) -> None:
        async with asyncio.timeout(5):
            while not set(names) <= set(self.names(kind)):
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_malformed_line_restarts_that_kind_while_another_keeps_flowing() -> None:
    api = FakeApi()
    things = await add_crd(api, "things", "Thing")
    widgets = await add_crd(api, "widgets", "Widget")
    await api.create(things, "a", "ns")
    await api.create(widgets, "w", "ns")
    labels = {"group": "x.example.com", "kind": "Thing"}
    before = sample("stream_restarts_total", **labels, reason="malformed") or 0
    widget_before = sample("stream_restarts_total", group="x.example.com", kind="Widget",
                           reason="malformed") or 0
    async with WatchEngine(api, Selection(), FAST) as engine:
        consumer = Consumer(engine)
        await consumer.wait("Thing", "a")
        await consumer.wait("Widget", "w")
        widget_watches = sum(1 for _, verb, p in api.stamps if p == widgets)
        await api.send_malformed(things)
        await api.create(widgets, "x", "ns")
        await api.create(things, "b", "ns")
        await consumer.wait("Thing", "b")
        await consumer.wait("Widget", "x")
        assert consumer.names("Thing") == ["a", "b"] and consumer.names("Widget") == ["w", "x"]
        assert sum(1 for _, verb, p in api.stamps if p == widgets) == widget_watches
        assert engine.not_flowing() == []
        assert sample("stream_up", **labels) == 1
        await consumer.close()
    assert sample("stream_restarts_total", **labels, reason="malformed") == before + 1
    assert (sample("stream_restarts_total", group="x.example.com", kind="Widget",
                   reason="malformed") or 0) == widget_before


async def test_crd_discovery_is_restarted_after_a_failure() -> None:
    api = FakeApi()
    things = await add_crd(api, "things", "Thing")
    await api.create(things, "a", "ns")
    labels = {"group": "apiextensions.k8s.io", "kind": "CustomResourceDefinition"}
    before = sample("stream_restarts_total", **labels, reason="malformed") or 0
    async with WatchEngine(api, Selection(), FAST) as engine:
        consumer = Consumer(engine)
        await consumer.wait("Thing", "a")
        await api.send_malformed(CRDS)
        widgets = await add_crd(api, "widgets", "Widget")  # discovered after the restart
        await api.create(widgets, "w", "ns")
        await consumer.wait("Widget", "w")
        assert engine.stream_keys() == ["things.x.example.com", "widgets.x.example.com"]
        await consumer.close()
    assert sample("stream_restarts_total", **labels, reason="malformed") == before + 1


async def test_builtin_kinds_are_resolved_with_retries() -> None:
    """A built-in kind whose discovery document fails transiently is retried, not skipped
    (and the API server being down at start does not make ``start`` raise)."""
    api = FakeApi()
    base = "/apis/x.example.com/v1"
    api.documents[base] = {"resources": [{"name": "things", "kind": "Thing",
                                          "namespaced": True}]}
    api.errors[base] = [TransportError("refused"), ApiError(503, "ServiceUnavailable", "", base)]
    api.objects["/apis/x.example.com/v1/things"] = {}
    await api.create("/apis/x.example.com/v1/things", "a", "ns")
    selection = Selection(crds=False, builtins=("x.example.com/v1/things",))
    async with WatchEngine(api, selection, FAST) as engine:
        consumer = Consumer(engine)
        async with asyncio.timeout(5):
            await engine.wait_synced()
        await consumer.wait("Thing", "a")
        assert engine.stream_keys() == ["things.x.example.com"]
        await consumer.close()


async def test_readiness_knows_when_the_source_is_unreachable() -> None:
    """Every stream failing for longer than ``unreachable_after``: the source is unreachable
    (``source_up`` 0, each kind's ``stream_up`` 0, ``not_flowing`` names them); it recovers
    by itself and nothing written meanwhile is lost."""
    vt = VirtualTime()
    api = FakeApi()
    api.clock = vt.clock
    things = await add_crd(api, "things", "Thing")
    labels = {"group": "x.example.com", "kind": "Thing"}
    options = EngineOptions(pacing=Pacing(clock=vt.clock, sleep=vt.sleep),
                            unreachable_after=10.0)
    async with WatchEngine(api, Selection(), options) as engine:
        consumer = Consumer(engine)
        async with asyncio.timeout(5):
            await engine.wait_synced()
            while sample("stream_up", **labels) != 1:
                await asyncio.sleep(0.01)
        assert sample("source_up") == 1 and not engine.source_unreachable
        api.fail_next_watches = 10**9  # connection refused, from now on
        await api.drop_watches()
        async with asyncio.timeout(5):
            while not engine.source_unreachable:
                await asyncio.sleep(0.001)
        assert engine.not_flowing() == ["crds", "things.x.example.com"]
        assert engine.failures()["things.x.example.com"].startswith("connection: ")
        assert sample("source_up") == 0 and sample("stream_up", **labels) == 0
        await api.create(things, "during", "ns")
        api.fail_next_watches = 0
        await consumer.wait("Thing", "during")
        async with asyncio.timeout(5):
            while engine.not_flowing():
                await asyncio.sleep(0.001)
        assert not engine.source_unreachable and sample("source_up") == 1
        await consumer.close()


async def test_each_iteration_yields_everything_ready_as_one_list() -> None:
    api = FakeApi()
    things = await add_crd(api, "things", "Thing")
    widgets = await add_crd(api, "widgets", "Widget")
    async with WatchEngine(api, Selection(), FAST) as engine:
        async with asyncio.timeout(5):
            await engine.wait_synced()
        batches = aiter(engine)
        a = await api.create(things, "a", "ns")
        while engine.queued < 1:
            await asyncio.sleep(0.01)
        await api.create(widgets, "w", "ns")
        await api.update(things, a["metadata"]["uid"], size=2)
        async with asyncio.timeout(5):
            while engine.queued < 3:
                await asyncio.sleep(0.01)
            batch = await anext(batches)
        engine.ack(batch)
        assert [(d.name, d.type.value) for d in batch if d.resource.kind == "Thing"] == [
            ("a", "added"), ("a", "updated")]
        assert len(batch) == 3 and engine.queued == 0


async def test_a_401_is_retried_not_skipped_as_forbidden() -> None:
    """A 401 is about the credentials (the transport refreshes them), not about one kind:
    the stream backs off and retries; it is not skipped like a 403."""
    api = FakeApi()
    things = await add_crd(api, "things", "Thing")
    await api.create(things, "a", "ns")
    api.errors[things] = [ApiError(401, "Unauthorized", "token expired", things)] * 2
    async with WatchEngine(api, Selection(), FAST) as engine:
        consumer = Consumer(engine)
        await consumer.wait("Thing", "a")
        assert engine.stream_keys() == ["things.x.example.com"]
        assert all(k.watched for k in engine.kinds)
        await consumer.close()
    assert (sample("stream_restarts_total", group="x.example.com", kind="Thing",
                   reason="http_401") or 0) >= 1


async def test_a_crd_deletion_found_by_a_re_list_drains_its_stream() -> None:
    """The CRD watch was down when the CRD went (and its history is compacted): the re-list
    diff's synthetic deletion carries only metadata, and must still drain the stream."""
    api = FakeApi()
    things = await add_crd(api, "things", "Thing")
    await api.create(things, "a", "ns")
    async with WatchEngine(api, Selection(), FAST) as engine:
        consumer = Consumer(engine)
        await consumer.wait("Thing", "a")
        api.errors[CRDS] = [TransportError("refused (fake)")] * 10
        await api.drop_watches()
        crd = next(iter(api.objects[CRDS].values()))
        await api.delete(CRDS, crd["metadata"]["uid"])
        api.compact()
        async with asyncio.timeout(5):
            while engine.stream_keys():
                await asyncio.sleep(0.01)
        await consumer.wait("Thing", "a")
        assert [(d.type.value, d.name, d.synthetic) for d in consumer.deltas
                if d.resource.kind == "Thing"][-1] == ("deleted", "a", True)
        await consumer.close()
