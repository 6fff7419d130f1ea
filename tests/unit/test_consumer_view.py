"""Order, dedupe and the materialized view (kube_event_consumer.order / .view)."""

from __future__ import annotations

import pytest

from kube_event_consumer import ChangeType, Event, Tombstone, View
from kube_event_consumer.order import Verdict, comparable, compare_resource_versions

KIND = "Database.demo.example.com"


def ev(change: str, rv: str, seq: int, *, uid: str = "u1", name: str = "orders",
       partitionkey: str = "") -> Event:
    kind = ChangeType(change)
    return Event(id=f"{uid}/deleted" if kind is ChangeType.DELETED else f"{uid}/{rv}",
                 type=kind, uid=uid, kind=KIND, apiversion="demo.example.com/v1",
                 namespace="demo", name=name, resource_version=rv, sequence=seq,
                 synthetic=False, source="k8s://c/apis/demo.example.com/v1", subject="demo/x",
                 time="", partitionkey=partitionkey or uid,
                 object={"metadata": {"name": name, "uid": uid, "resourceVersion": rv}})


@pytest.mark.parametrize("a,b,expected", [("9", "10", -1), ("10", "9", 1), ("42", "42", 0),
                                          ("100", "099", 1), ("123", "124", -1)])
def test_resource_versions_compare_as_kep_5504_says(a: str, b: str, expected: int) -> None:
    assert compare_resource_versions(a, b) == expected


@pytest.mark.parametrize("rv,ok", [("1", True), ("0", True), ("007", False), ("", False),
                                   ("a1", False), ("١٢", False), ("12345678901234567890", True)])
def test_comparable_form(rv: str, ok: bool) -> None:
    assert comparable(rv) is ok


def test_a_change_applies_and_its_duplicate_does_not() -> None:
    view = View()
    assert view.apply(ev("added", "5", 1)).change is ChangeType.ADDED
    assert view.apply(ev("added", "5", 1)).verdict is Verdict.DUPLICATE
    out = view.apply(ev("updated", "6", 2))
    assert out.change is ChangeType.UPDATED and out.previous is not None
    assert view.get(KIND, "demo", "orders") == {"metadata": {"name": "orders", "uid": "u1",
                                                             "resourceVersion": "6"}}
    assert len(view) == 1 and view.kinds() == {KIND}


def test_a_re_send_of_an_older_state_after_a_crash_is_a_duplicate() -> None:
    """The bridge re-sends in-flight changes with their ids but new sequence numbers."""
    view = View()
    view.apply(ev("added", "5", 10))
    view.apply(ev("updated", "6", 11))
    assert view.apply(ev("added", "5", 12)).verdict is Verdict.DUPLICATE  # re-sent X/5
    assert view.apply(ev("updated", "6", 13)).verdict is Verdict.DUPLICATE
    assert view.event(KIND, "demo", "orders").resource_version == "6"  # type: ignore[union-attr]


def test_an_older_state_sent_before_is_out_of_order_and_not_applied() -> None:
    view = View()
    view.apply(ev("updated", "7", 12))
    assert view.apply(ev("updated", "6", 11)).verdict is Verdict.OUT_OF_ORDER
    assert view.event(KIND, "demo", "orders").resource_version == "7"  # type: ignore[union-attr]


def test_sequences_restarting_do_not_block_newer_states() -> None:
    """A stream whose checkpoint was reset numbers from 1 again: resourceVersions decide."""
    view = View()
    view.apply(ev("updated", "7", 900))
    assert view.apply(ev("added", "9", 1)).change is ChangeType.UPDATED


def test_the_sequence_decides_where_resource_versions_are_not_integers() -> None:
    view = View()
    view.apply(ev("added", "abc", 3))
    assert view.apply(ev("updated", "abd", 2)).verdict is Verdict.OUT_OF_ORDER
    assert view.apply(ev("updated", "abb", 4)).change is ChangeType.UPDATED


def test_a_deletion_is_final_and_remembered() -> None:
    view = View()
    view.apply(ev("added", "5", 1))
    out = view.apply(ev("deleted", "5", 2))  # a re-list diff's deletion: last known rv
    assert out.change is ChangeType.DELETED and out.previous is not None
    assert view.get(KIND, "demo", "orders") is None and len(view) == 0
    assert view.apply(ev("updated", "6", 3)).verdict is Verdict.DUPLICATE  # a re-send
    assert view.apply(ev("updated", "6", 1)).verdict is Verdict.OUT_OF_ORDER
    assert view.apply(ev("deleted", "5", 4)).verdict is Verdict.DUPLICATE


def test_remembered_deletions_are_bounded() -> None:
    view = View(remember_deleted=2)
    for n in range(3):
        view.apply(ev("deleted", "5", 5, uid=f"u{n}"))
    assert view.apply(ev("updated", "6", 1, uid="u0")).change is ChangeType.ADDED  # forgotten
    assert view.apply(ev("updated", "6", 1, uid="u2")).verdict is Verdict.OUT_OF_ORDER


def test_gaps_only_once_the_backlog_is_read() -> None:
    view = View()
    out = view.apply(ev("updated", "5", 1, uid="a"))
    assert out.change is ChangeType.ADDED and not out.gap  # compacted history: normal
    out = view.apply(ev("updated", "5", 1, uid="b", name="b"), expect_known=True)
    assert out.change is ChangeType.ADDED and out.gap
    out = view.apply(ev("deleted", "5", 1, uid="c", name="c"), expect_known=True)
    assert out.change is None and not out.gap  # the bridge's deletions err on the safe side
    assert not view.apply(ev("added", "5", 1, uid="d", name="d"), expect_known=True).gap


def test_a_name_re_used_by_a_new_uid_across_partitions() -> None:
    """uid1 deleted, uid2 created under the same name; uid2's events are read first."""
    view = View()
    view.apply(ev("added", "5", 1, uid="uid1"))
    assert view.apply(ev("added", "9", 3, uid="uid2")).change is ChangeType.ADDED
    assert view.event(KIND, "demo", "orders").uid == "uid2"  # type: ignore[union-attr]
    out = view.apply(ev("updated", "6", 2, uid="uid1"))  # late, older object: shadowed
    assert out.verdict is Verdict.NEWER and out.change is None
    assert view.event(KIND, "demo", "orders").uid == "uid2"  # type: ignore[union-attr]
    assert view.apply(ev("deleted", "7", 4, uid="uid1")).change is None  # not a transition
    assert view.apply(ev("added", "3", 1, uid="uid0")).change is None  # older still
    assert view.event(KIND, "demo", "orders").uid == "uid2"  # type: ignore[union-attr]
    assert [e.uid for e in view.list(KIND, "demo")] == ["uid2"]


def test_tombstones_remove_the_object_with_that_key_in_that_topic() -> None:
    view = View()
    view.apply(ev("added", "5", 1), topic="t1")
    assert view.tombstone(Tombstone("t2", "u1")) is None
    gone = view.tombstone(Tombstone("t1", "u1"))
    assert gone is not None and gone.uid == "u1" and len(view) == 0
    assert view.tombstone(Tombstone("t1", "u1")) is None
    assert view.apply(ev("updated", "5", 1), topic="t1").verdict is Verdict.DUPLICATE


def test_list_filters_by_kind_and_namespace() -> None:
    view = View()
    view.apply(ev("added", "5", 1, uid="a", name="a"))
    view.apply(ev("added", "6", 2, uid="b", name="b"))
    assert {e.name for e in view.list(KIND)} == {"a", "b"}
    assert view.list("Other") == [] and view.list(namespace="other") == []
    assert sorted(view) == [(KIND, "demo", "a"), (KIND, "demo", "b")]
