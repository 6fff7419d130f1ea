from __future__ import annotations

from bridge.watch.inventory import Entry
from bridge.watch.tracker import StreamCheckpoint, StreamTracker


def _tracker() -> StreamTracker:
    return StreamTracker(StreamCheckpoint(resource_version="10", sequence=4))


def test_commits_only_the_contiguous_acked_prefix() -> None:
    t = _tracker()
    s1 = t.record("a", Entry("11", "", "a"), "11")
    s2 = t.record("b", Entry("12", "", "b"), "12")
    s3 = t.record("a", None, "13")
    assert (s1, s2, s3) == (5, 6, 7)
    t.ack(s2)
    assert t.committed.resource_version == "10" and t.committed.sequence == 4
    assert t.committed.inventory.get("b") is None
    t.ack(s1)
    assert t.committed.resource_version == "12" and t.committed.sequence == 6
    assert t.committed.inventory.get("a") == Entry("11", "", "a")
    t.ack(s3)
    assert t.committed.resource_version == "13"
    assert t.committed.inventory.get("a") is None
    assert t.in_flight == 0


def test_view_sees_pending_changes_before_they_commit() -> None:
    t = _tracker()
    t.record("a", Entry("11", "", "a"), "11")
    assert t.get("a") == Entry("11", "", "a")
    assert t.committed.inventory.get("a") is None
    t.record("a", None, "12")
    assert t.get("a") is None
    assert dict(t.items()) == {}


def test_bookmark_applies_at_once_when_idle_and_after_pending_otherwise() -> None:
    t = _tracker()
    t.mark("20")
    assert t.committed.resource_version == "20"
    seq = t.record("a", Entry("21", "", "a"), None)  # a re-list change: no resume point
    t.mark("25")
    assert t.committed.resource_version == "20"
    t.ack(seq)
    assert t.committed.resource_version == "25"


def test_unknown_and_repeated_acks_are_harmless() -> None:
    t = _tracker()
    t.ack(99)
    seq = t.record("a", Entry("11", "", "a"), "11")
    t.ack(seq)
    t.ack(seq)
    assert t.committed.sequence == seq
