from __future__ import annotations

from tests.auditor import Truth, audit
from tests.readback import Received


def got(*ids: str) -> list[Received]:
    return [Received({"id": i, "uid": i.split("/")[0], "resourceversion": i.split("/")[1]},
                     None, "t", n) for n, i in enumerate(ids)]


def test_lost_duplicates_and_order() -> None:
    truth = Truth()
    truth.wrote("a", "1")
    truth.wrote("a", "2")
    truth.delete("a")
    report = audit(truth, got("a/1", "a/1", "a/deleted"))
    assert report.lost == ["a/2"] and report.duplicates == 1
    assert audit(truth, got("a/2", "a/1", "a/deleted")).out_of_order == ["a"]
    assert audit(truth, got("a/1", "a/2", "a/deleted", "a/9")).unexpected == ["a/9"]


def test_gap_windows_make_superseded_states_optional() -> None:
    truth = Truth()
    truth.wrote("a", "1")
    truth.in_gap = True
    truth.wrote("a", "2")
    truth.wrote("a", "3")
    truth.wrote("b", "4")
    truth.delete("b")
    truth.wrote("c", "5")
    truth.in_gap = False
    report = audit(truth, got("a/1", "a/3", "c/5"))
    assert report.ok, report.line()
    assert audit(truth, got("a/1", "a/2")).lost == ["a/3", "c/5"]
