"""The write-ahead checkpoint: tracker journal -> writer -> store -> replay (file store)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from bridge.checkpoint.codec import CheckpointError, encode_segments
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.replay import restore
from bridge.checkpoint.store import Stored
from bridge.checkpoint.writer import CheckpointWriter, WriterOptions
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import StreamCheckpoint, StreamTracker

KEY = "things.x.io"


class World:
    """One stream's tracker, a writer and a file store, restartable like a process."""

    def __init__(self, directory: Path, options: WriterOptions | None = None) -> None:
        self.directory = directory
        self.options = options or WriterOptions(interval=60)
        self.trackers: dict[str, StreamTracker] = {}
        self.store = FileStore(str(directory), "cp")
        self.writer = CheckpointWriter(self.store, lambda: self.trackers, options=self.options)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> StreamTracker:
        stored = await self.store.load()
        loaded = restore(stored.base, stored.segments)
        self.trackers = {KEY: StreamTracker(loaded.get(KEY) or StreamCheckpoint(),
                                            journal=True)}
        await self.writer.flush()  # the first durable checkpoint, as the daemon does
        self.task = asyncio.create_task(self.writer.run())
        return self.trackers[KEY]

    async def crash(self) -> None:
        """Like SIGKILL: nothing more is written."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.store.close()


def entry(rv: int, name: str) -> Entry:
    return Entry(str(rv), "ns", name)


async def test_a_change_sent_before_a_crash_is_known_to_the_next_start(tmp_path: Path) -> None:
    """Issue 11 reproduction 1: killed before any save, X's added was out; X must be known
    (uncertain: delivered again, or deleted by the next re-list), never forgotten."""
    first = World(tmp_path)
    tracker = await first.start()
    tracker.mark("100")  # the list's resourceVersion
    x = tracker.record("x", entry(101, "x"), "101")
    await first.writer.durable()  # delivery waits for this before sending X
    assert x == 1
    await first.crash()  # never acknowledged, never saved

    second = World(tmp_path)
    again = await second.start()
    assert again.committed.resource_version == "100"
    assert again.committed.uncertain == {"x"}
    assert again.get("x") is None  # re-delivered by whoever sees it next
    assert dict(again.items()) == {"x": entry(101, "x")}  # its deletion is never missed
    seq = again.record("x", None, "102")  # the re-list finds it gone
    assert seq > x
    again.ack(seq)
    assert again.committed.uncertain == set() and len(again.committed.inventory) == 0
    await second.crash()


async def test_acknowledged_changes_are_durable_within_the_interval(tmp_path: Path) -> None:
    first = World(tmp_path, WriterOptions(interval=0.05))
    tracker = await first.start()
    seqs = [tracker.record(f"o{i}", entry(10 + i, f"o{i}"), str(10 + i)) for i in range(5)]
    await first.writer.durable()
    for seq in seqs[:3]:
        tracker.ack(seq)
    await asyncio.sleep(0.3)  # the interval flush carries the committed position
    await first.crash()

    loaded = await World(tmp_path).start()
    assert loaded.committed.resource_version == "12"
    assert loaded.committed.sequence == 5
    assert loaded.committed.uncertain == {"o3", "o4"}
    assert loaded.get("o0") == entry(10, "o0") and loaded.get("o3") is None


async def test_a_pending_deletion_keeps_the_last_known_state(tmp_path: Path) -> None:
    first = World(tmp_path)
    tracker = await first.start()
    add = tracker.record("x", entry(5, "x"), "5")
    await first.writer.durable()
    tracker.ack(add)
    tracker.record("x", None, "6")  # sent, maybe; not acknowledged
    await first.writer.durable()
    await first.crash()
    loaded = await World(tmp_path).start()
    assert loaded.committed.resource_version == "5"
    assert loaded.committed.uncertain == {"x"}
    assert dict(loaded.items()) == {"x": entry(5, "x")}


async def test_compaction_rewrites_the_base_and_reload_is_identical(tmp_path: Path) -> None:
    world = World(tmp_path, WriterOptions(interval=60, compact_ratio=1.0, compact_min_bytes=0))
    tracker = await world.start()
    for round_ in range(20):
        seqs = [tracker.record(f"o{i}", entry(1000 * round_ + i, f"o{i}"), None)
                for i in range(50)]
        await world.writer.durable()
        for seq in seqs:
            tracker.ack(seq)
    tracker.mark("final")
    await world.writer.flush()
    stored = await world.store.load()
    assert len(stored.segments) < 20  # compacted on the way
    await world.crash()
    loaded = await World(tmp_path).start()
    assert loaded.committed.resource_version == "final"
    assert loaded.committed.uncertain == set()
    assert dict(loaded.committed.inventory.items()) == {
        f"o{i}": entry(19_000 + i, f"o{i}") for i in range(50)}


async def test_write_cost_grows_with_changes_not_objects(tmp_path: Path) -> None:
    inventory = Inventory()
    for i in range(20_000):
        inventory.put(f"u{i:05d}", entry(i, f"n{i}"))
    trackers = {KEY: StreamTracker(StreamCheckpoint("1", 0, inventory), journal=True)}
    store = FileStore(str(tmp_path), "cp")
    await store.load()
    writer = CheckpointWriter(store, lambda: trackers)
    await writer.flush()  # the base
    base = store.path.stat().st_size
    tracker = trackers[KEY]
    for i in range(10):
        tracker.ack(tracker.record(f"u{i:05d}", entry(50_000 + i, f"n{i}"), None))
    await writer.flush()
    journal = store.journal_path.stat().st_size
    assert base > 400_000
    assert journal < 2_000  # ten changes, not twenty thousand objects
    await store.close()


async def test_a_torn_journal_frame_is_cut_off(tmp_path: Path) -> None:
    world = World(tmp_path)
    tracker = await world.start()
    tracker.record("a", entry(1, "a"), "1")
    await world.writer.durable()
    tracker.record("b", entry(2, "b"), "2")
    await world.writer.durable()
    await world.crash()
    journal = world.store.journal_path
    journal.write_bytes(journal.read_bytes()[:-5])  # a crash in the middle of a write
    second = World(tmp_path)
    loaded = await second.start()
    assert dict(loaded.items()) == {"a": entry(1, "a")}
    loaded.record("c", entry(3, "c"), "3")  # appends after the cut, not after the garbage
    await second.writer.durable()
    await second.crash()
    assert set(dict((await World(tmp_path).start()).items())) == {"a", "c"}


async def test_a_second_process_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = FileStore(str(tmp_path), "cp")
    await first.load()
    with pytest.raises(CheckpointError, match="in use"):
        await FileStore(str(tmp_path), "cp").load()
    await first.close()
    assert await FileStore(str(tmp_path), "cp").load() == Stored(b"", [])


async def test_a_0_1_0_checkpoint_loads_as_a_base(tmp_path: Path) -> None:
    inv = Inventory()
    inv.put("u1", entry(7, "a"))
    blob = inv.dumps()
    header = orjson.dumps({"streams": [{"key": KEY, "rv": "9", "seq": 2, "version": "v1",
                                        "kind": "Thing", "crd": True, "bytes": len(blob)}],
                           "saved_at": 0})
    (tmp_path / "cp").write_bytes(b"KEBCP2\n" + header + b"\n" + blob)
    world = World(tmp_path)
    tracker = await world.start()
    assert tracker.committed.resource_version == "9" and tracker.committed.crd
    assert tracker.get("u1") == entry(7, "a")
    await world.crash()


class FlakyStore(FileStore):
    def __init__(self, directory: str) -> None:
        super().__init__(directory, "cp")
        self.broken = False

    async def append(self, segment: bytes) -> None:
        if self.broken:
            raise OSError("disk full")
        await super().append(segment)

    async def rebase(self, base: bytes) -> None:
        if self.broken:
            raise OSError("disk full")
        await super().rebase(base)


async def test_a_failing_store_holds_delivery_back_until_it_recovers(tmp_path: Path) -> None:
    store = FlakyStore(str(tmp_path))
    await store.load()
    trackers = {KEY: StreamTracker(StreamCheckpoint(), journal=True)}
    writer = CheckpointWriter(store, lambda: trackers, options=WriterOptions(interval=0.05))
    task = asyncio.create_task(writer.run())
    await writer.durable()
    store.broken = True
    trackers[KEY].record("x", entry(1, "x"), "1")
    waiting = asyncio.create_task(writer.durable())
    await asyncio.sleep(0.3)
    assert not waiting.done() and writer.failing
    store.broken = False
    await asyncio.wait_for(waiting, 5)
    assert not writer.failing
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await store.close()
    stored = await FileStore(str(tmp_path), "cp").load()
    assert restore(stored.base, stored.segments)[KEY].uncertain == {"x"}


def test_segments_are_split_at_the_limit() -> None:
    tracker = StreamTracker(StreamCheckpoint(), journal=True)
    for i in range(1000):
        tracker.record(f"uid-{i:04d}", entry(i, f"name-{i}"), None)
    tracker.mark("rv")
    records, header = tracker.take_journal()
    segments = encode_segments([(KEY, header, records)], limit=10_000)
    assert len(segments) > 3 and all(len(s) < 12_000 for s in segments)
    assert sum(len(orjson.loads(s)["s"][0][2]) for s in segments) == 1000
    assert orjson.loads(segments[-1])["s"][-1][1] is not None  # the header comes last
    assert all(orjson.loads(s)["s"][0][1] is None for s in segments[:-1])


class CountingStore(FlakyStore):
    def __init__(self, directory: str) -> None:
        super().__init__(directory)
        self.rebases = 0

    async def rebase(self, base: bytes) -> None:
        self.rebases += 1
        await super().rebase(base)


async def test_a_failed_write_is_retried_as_a_segment_not_a_whole_base(tmp_path: Path) -> None:
    """A store hiccup must not bring back a full rewrite of every inventory."""
    store = CountingStore(str(tmp_path))
    await store.load()
    trackers = {KEY: StreamTracker(StreamCheckpoint(), journal=True)}
    writer = CheckpointWriter(store, lambda: trackers)
    await writer.flush()
    assert store.rebases == 1
    store.broken = True
    trackers[KEY].record("x", entry(1, "x"), "1")
    with pytest.raises(OSError):
        await writer.flush()
    store.broken = False
    trackers[KEY].record("y", entry(2, "y"), "2")
    await writer.flush()
    assert store.rebases == 1
    stored = await store.load()
    assert restore(stored.base, stored.segments)[KEY].uncertain == {"x", "y"}
    await store.close()


async def test_positions_moved_by_bookmarks_alone_are_written_less_often(
        tmp_path: Path) -> None:
    store = FileStore(str(tmp_path), "cp")
    await store.load()
    trackers = {KEY: StreamTracker(StreamCheckpoint(), journal=True)}
    writer = CheckpointWriter(store, lambda: trackers,
                              options=WriterOptions(bookmark_interval=3600))
    tracker = trackers[KEY]
    tracker.ack(tracker.record("x", entry(1, "x"), "1"))
    await writer.flush()
    before = store.journal_path.stat().st_size
    for rv in range(2, 50):
        tracker.mark(str(rv))  # bookmarks: nothing acknowledged, only the resume point
        await writer.flush()
    assert store.journal_path.stat().st_size == before
    await writer.flush(final=True)  # at shutdown it goes too
    stored = await store.load()
    assert restore(stored.base, stored.segments)[KEY].resource_version == "49"
    await store.close()


async def test_a_flush_visits_only_the_streams_that_changed(tmp_path: Path) -> None:
    """With thousands of kinds, a flush costs what changed, not one call per stream."""
    store = FileStore(str(tmp_path), "cp")
    await store.load()
    trackers = {f"k{i}": StreamTracker(StreamCheckpoint(), journal=True) for i in range(2000)}
    writer = CheckpointWriter(store, lambda: trackers)
    await writer.flush()  # the base
    assert not any(t.dirty for t in trackers.values())
    trackers["k7"].record("x", entry(1, "x"), "1")
    await writer.flush()
    segments = (await store.load()).segments
    assert [[row[0] for row in orjson.loads(s)["s"]] for s in segments] == [["k7"]]
    await store.close()
