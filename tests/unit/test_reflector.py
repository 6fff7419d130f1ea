from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.kube.resources import Resource
from bridge.metrics import REGISTRY
from bridge.watch.backoff import Pacing
from bridge.watch.delta import Delta, DeltaType
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.reflector import (
    MalformedLine,
    Reflector,
    Source,
    StreamGone,
    StreamSpec,
    WatchOptions,
)
from bridge.watch.supervisor import keep_running
from bridge.watch.tracker import StreamCheckpoint, StreamTracker
from tests.unit.fakeapi import FakeApi

THINGS = Resource("x.example.com", "v1", "things", "Thing", True)
PATH = THINGS.collection_path()


class Collect:
    """An outlet that acks everything at once and keeps the deltas."""

    def __init__(self, tracker: StreamTracker) -> None:
        self.tracker = tracker
        self.deltas: list[Delta] = []
        self.arrived = asyncio.Event()

    async def reserve(self, count: int) -> None:
        return None

    def push(self, deltas: list[Delta], unused: int) -> None:
        self.deltas.extend(deltas)
        for delta in deltas:
            self.tracker.ack(delta.sequence)
        if deltas:
            self.arrived.set()

    def summary(self) -> list[tuple[str, str, bool]]:
        return [(d.type.value, d.name, d.synthetic) for d in self.deltas]


FAST = Pacing(initial=0.01, maximum=0.05)  # retries within the tests' timeouts


def reflector_for(api: FakeApi, tracker: StreamTracker, out: Collect,
                  pacing: Pacing = FAST, **opts: object) -> Reflector:
    options = WatchOptions(page_size=2, **opts)  # type: ignore[arg-type]
    return Reflector(StreamSpec("things", THINGS), tracker, out,
                     Source(api, options, asyncio.Semaphore(1), pacing))


def restarts(reason: str, kind: str = "Thing") -> float:
    return REGISTRY.get_sample_value("kube_event_bridge_stream_restarts_total", {
        "group": "x.example.com" if kind == "Thing" else "", "kind": kind,
        "reason": reason}) or 0.0


@asynccontextmanager
async def running(api: FakeApi, checkpoint: StreamCheckpoint | None = None,
                  pacing: Pacing = FAST, **opts: object,
                  ) -> AsyncIterator[tuple[Reflector, Collect]]:
    """The reflector under its supervisor's restart loop (as the engine runs it)."""
    tracker = StreamTracker(checkpoint or StreamCheckpoint())
    out = Collect(tracker)
    reflector = reflector_for(api, tracker, out, pacing, **opts)
    task = asyncio.create_task(keep_running(reflector))
    try:
        yield reflector, out
    finally:
        task.cancel()
        with pytest.raises((asyncio.CancelledError, StreamGone)):
            await task


async def settle(out: Collect, count: int) -> None:
    async with asyncio.timeout(5):
        while len(out.deltas) < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


@pytest.mark.parametrize("watch_list", [True, False])
async def test_first_start_snapshot_then_live_changes(watch_list: bool) -> None:
    api = FakeApi(watch_list=watch_list)
    api.objects[PATH] = {}
    a = await api.create(PATH, "a", "ns")
    for name in "bcd":
        await api.create(PATH, name, "ns")
    async with running(api) as (reflector, out):
        await settle(out, 4)
        assert sorted(out.summary()) == [("added", n, True) for n in "abcd"]
        await api.update(PATH, a["metadata"]["uid"], size=2)
        await api.delete(PATH, a["metadata"]["uid"])
        await settle(out, 6)
        assert out.summary()[4:] == [("updated", "a", False), ("deleted", "a", False)]
        assert reflector.synced
    seqs = [d.sequence for d in out.deltas]
    assert seqs == sorted(seqs) == list(range(1, 7))


async def test_initial_skip_records_inventory_without_emitting() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    await api.create(PATH, "a")
    async with running(api, initial="skip") as (reflector, out):
        await asyncio.sleep(0.2)
        assert out.deltas == []
        assert len(reflector.tracker.committed.inventory) == 1


async def test_resume_from_checkpoint_emits_only_later_changes() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    a = await api.create(PATH, "a")
    b = await api.create(PATH, "b")
    inv = Inventory()
    for o in (a, b):
        m = o["metadata"]
        inv.put(m["uid"], Entry(m["resourceVersion"], "", m["name"]))
    checkpoint = StreamCheckpoint(resource_version=str(api.rv), sequence=7, inventory=inv)
    await api.update(PATH, a["metadata"]["uid"], x=1)
    await api.create(PATH, "c")
    async with running(api, checkpoint) as (_, out):
        await settle(out, 2)
        assert out.summary() == [("updated", "a", False), ("added", "c", False)]
        assert [d.sequence for d in out.deltas] == [8, 9]


@pytest.mark.parametrize("watch_list", [True, False])
async def test_gone_resume_diffs_against_inventory(watch_list: bool) -> None:
    api = FakeApi(watch_list=watch_list)
    api.objects[PATH] = {}
    objs = [await api.create(PATH, n) for n in "abcd"]
    inv = Inventory()
    delivered_rv = {}
    for o in objs:
        m = o["metadata"]
        inv.put(m["uid"], Entry(m["resourceVersion"], "", m["name"]))
        delivered_rv[m["name"]] = m["resourceVersion"]
    checkpoint = StreamCheckpoint(resource_version=str(api.rv), sequence=4, inventory=inv)
    await api.update(PATH, objs[0]["metadata"]["uid"], x=1)
    await api.delete(PATH, objs[1]["metadata"]["uid"])
    await api.update(PATH, objs[2]["metadata"]["uid"], x=2)
    await api.delete(PATH, objs[2]["metadata"]["uid"])
    await api.create(PATH, "e")
    api.compact()
    async with running(api, checkpoint) as (_, out):
        await settle(out, 3)
        assert sorted(out.summary()) == [
            ("added", "e", True), ("deleted", "b", True), ("deleted", "c", True),
            ("updated", "a", True)]
        deleted = {d.name: d for d in out.deltas if d.type is DeltaType.DELETED}
        # last known state: the resourceVersion the bridge delivered before the gap
        assert deleted["c"].resource_version == delivered_rv["c"]


async def test_transient_errors_back_off_and_resume_without_loss() -> None:
    api = FakeApi(watch_list=False)
    api.objects[PATH] = {}
    async with running(api) as (_, out):
        await asyncio.sleep(0.1)
        api.fail_next_watches = 2
        await api.drop_watches()
        obj = await api.create(PATH, "a")
        await api.update(PATH, obj["metadata"]["uid"], x=1)
        await settle(out, 2)
        assert out.summary() == [("added", "a", False), ("updated", "a", False)]


async def test_forbidden_stream_stops_with_stream_gone() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    api.forbidden.add(PATH)
    tracker = StreamTracker(StreamCheckpoint())
    reflector = reflector_for(api, tracker, Collect(tracker))
    with pytest.raises(StreamGone) as gone:
        await keep_running(reflector)
    assert gone.value.error.forbidden


@pytest.mark.parametrize("watch_list", [True, False])
async def test_initial_skip_holds_when_the_first_watch_list_ends_before_its_bookmark(
        watch_list: bool) -> None:
    """Finding 3: the retry of a first sync that the server cut short is still the first
    sync: with ``initial: skip`` it records the objects it had not seen yet, it does not
    deliver them."""
    api = FakeApi(watch_list=watch_list)
    api.objects[PATH] = {}
    for name in "abcd":
        await api.create(PATH, name)
    api.cut_initial_events[PATH] = 2  # the first watch-list ends after a and b
    async with running(api, initial="skip") as (reflector, out):
        async with asyncio.timeout(5):
            while not reflector.synced:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert out.deltas == []
        assert len(reflector.tracker.committed.inventory) == 4
        await api.create(PATH, "e")
        await settle(out, 1)
        assert out.summary() == [("added", "e", False)]


async def test_a_malformed_line_restarts_the_stream_with_a_relist(
        caplog: pytest.LogCaptureFixture) -> None:
    """Finding 1: a line that is not JSON does not stop the stream: it is restarted (re-list
    and diff), counted, and the warning names the kind; nothing is lost or repeated."""
    api = FakeApi()
    api.objects[PATH] = {}
    await api.create(PATH, "a")
    before = restarts("malformed")
    with caplog.at_level(logging.WARNING):
        async with running(api) as (reflector, out):
            await settle(out, 1)
            await api.send_malformed(PATH)
            await api.create(PATH, "b")
            await settle(out, 2)
            assert [(kind, name) for kind, name, _ in out.summary()] == [
                ("added", "a"), ("added", "b")]
            assert reflector.health.up
    assert restarts("malformed") == before + 1
    assert "things (Thing): malformed watch line (JSONDecodeError" in caplog.text
    assert "re-listing and diffing" in caplog.text


async def test_a_malformed_line_raises_malformed_line_naming_the_stream() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    checkpoint = StreamCheckpoint(resource_version=str(api.rv))
    tracker = StreamTracker(checkpoint)
    reflector = reflector_for(api, tracker, Collect(tracker))
    attempt = asyncio.create_task(reflector.list_and_watch())
    await asyncio.sleep(0.05)
    await api.send_malformed(PATH)
    with pytest.raises(MalformedLine) as bad:
        async with asyncio.timeout(5):
            await attempt
    assert str(bad.value).startswith("malformed watch line (JSONDecodeError")
    assert bad.value.key == "things"
    assert bad.value.data.startswith(b'{"type": "MODIFIED"')


uids = st.sampled_from([f"00000000-0000-0000-0000-{i:012d}" for i in range(12)])
states = st.dictionaries(uids, st.integers(min_value=1, max_value=3), max_size=12)


@settings(max_examples=60, deadline=None)
@given(before=states, after=states)
def test_relist_diff_is_exactly_the_difference(before: dict[str, int],
                                               after: dict[str, int]) -> None:
    """Property: the diff turns the inventory into the server's state, with one delta per
    changed object and none for unchanged ones."""

    async def scenario() -> list[Delta]:
        api = FakeApi(watch_list=False)
        api.objects[PATH] = {
            uid: {"metadata": {"uid": uid, "name": uid[-4:], "resourceVersion": str(rv)}}
            for uid, rv in after.items()}
        inv = Inventory()
        for uid, rv in before.items():
            inv.put(uid, Entry(str(rv), "", uid[-4:]))
        api.rv, api.compacted = 50, 50
        checkpoint = StreamCheckpoint(resource_version="1", inventory=inv)
        async with running(api, checkpoint) as (reflector, out):
            async with asyncio.timeout(5):
                while not reflector.synced:
                    await asyncio.sleep(0.005)
            await asyncio.sleep(0.01)
            assert {u: int(e.resource_version) for u, e in
                    reflector.tracker.committed.inventory.items()} == after
            return out.deltas

    deltas = asyncio.run(scenario())
    expected = {uid: "added" for uid in after.keys() - before.keys()}
    expected |= {uid: "deleted" for uid in before.keys() - after.keys()}
    expected |= {uid: "updated" for uid in before.keys() & after.keys()
                 if before[uid] != after[uid]}
    assert {d.uid: d.type.value for d in deltas} == expected
    assert len(deltas) == len(expected)
    assert all(d.synthetic for d in deltas)


async def test_a_journaled_first_list_records_its_position_only_when_nothing_is_known() -> None:
    """The initial list's resourceVersion is journaled (so a crash re-lists exactly there,
    without a deletion pass) only while nothing is known from before it: an object left
    uncertain by an earlier, interrupted start must still get its deletion."""
    api = FakeApi()
    api.objects[PATH] = {}
    await api.create(PATH, "a", "ns")
    fresh = StreamTracker(StreamCheckpoint(), journal=True)
    out = Collect(fresh)
    task = asyncio.create_task(keep_running(reflector_for(api, fresh, out)))
    await settle(out, 1)
    assert fresh.committed.listed == str(api.rv)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    inventory = Inventory()
    inventory.put("gone-uid", Entry("7", "ns", "gone"))
    known = StreamCheckpoint(None, 3, inventory, uncertain={"gone-uid"}, listed=None)
    tracker = StreamTracker(known, journal=True)
    out = Collect(tracker)
    task = asyncio.create_task(keep_running(reflector_for(api, tracker, out)))
    await settle(out, 2)
    assert tracker.committed.listed is None
    assert sorted(out.summary()) == [("added", "a", True), ("deleted", "gone", True)]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_undelivered_changes_stop_piling_up_behind_an_unacknowledged_one() -> None:
    """Filtered changes free their window room at once but commit only behind the delivered
    change before them: with that one unacknowledged (a stalled sink), reading must stop
    at ``max_pending`` instead of holding ever more of them in memory."""
    api = FakeApi()
    api.objects[PATH] = {}
    doomed = await api.create(PATH, "doomed", "ns")
    keep = await api.create(PATH, "keep", "ns")
    tracker = StreamTracker(StreamCheckpoint())

    class Stalled(Collect):
        def push(self, deltas: list[Delta], unused: int) -> None:
            self.deltas.extend(deltas)  # never acknowledged

    out = Stalled(tracker)
    options = WatchOptions(page_size=2, event_types=frozenset({DeltaType.DELETED}))
    reflector = Reflector(StreamSpec("things", THINGS), tracker, out,
                          Source(api, options, asyncio.Semaphore(1), FAST, max_pending=5))
    task = asyncio.create_task(keep_running(reflector))
    async with asyncio.timeout(5):
        while not reflector.synced:
            await asyncio.sleep(0.01)
    await api.delete(PATH, doomed["metadata"]["uid"])  # delivered, never acknowledged
    for _ in range(30):
        await api.update(PATH, keep["metadata"]["uid"])  # filtered out
        await asyncio.sleep(0.02)  # one read each
    await asyncio.sleep(0.3)
    assert [d.type for d in out.deltas] == [DeltaType.DELETED]
    assert tracker.in_flight <= 5 + 1  # stopped at the bound (a read admitted may add one)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
