"""The auditor: compares what a sink holds with the truth (the API server's answers to the
workload's writes) and counts lost, duplicated, out-of-order and unexpected events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tests.readback import Received


@dataclass
class Truth:
    """Per object uid: the resourceVersions the API server returned for each write, in
    order, and whether the object was deleted."""

    states: dict[str, list[str]] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)

    def wrote(self, uid: str, resource_version: str) -> None:
        self.states.setdefault(uid, []).append(resource_version)

    def delete(self, uid: str) -> None:
        self.deleted.add(uid)

    def expected_ids(self, uid: str) -> list[str]:
        ids = [f"{uid}/{rv}" for rv in self.states.get(uid, [])]
        if uid in self.deleted:
            ids.append(f"{uid}/deleted")
        return ids

    @property
    def changes(self) -> int:
        return sum(len(v) for v in self.states.values()) + len(self.deleted)


@dataclass
class Report:
    changes: int
    delivered: int
    lost: list[str]
    duplicates: int
    duplicate_ids_match: bool
    out_of_order: list[str]
    unexpected: list[str]

    @property
    def ok(self) -> bool:
        return not self.lost and not self.out_of_order and not self.unexpected

    def line(self) -> str:
        return (f"changes={self.changes} delivered={self.delivered} lost={len(self.lost)} "
                f"duplicates={self.duplicates} (same ids: {self.duplicate_ids_match}) "
                f"out_of_order={len(self.out_of_order)} unexpected={len(self.unexpected)}")


def audit(truth: Truth, received: list[Received], final_state_only: bool = False) -> Report:
    """``final_state_only``: after a gap only each object's last state (and its deletion)
    is owed; intermediate states may legitimately be skipped by the re-list diff."""
    mine = [r for r in received if not r.attributes.get("tombstone")
            and r.attributes.get("uid") in truth.states]
    counts = Counter(r.id for r in mine)
    lost: list[str] = []
    out_of_order: list[str] = []
    unexpected: list[str] = []
    for uid in truth.states:
        expected = truth.expected_ids(uid)
        owed = expected[-1:] if final_state_only and uid not in truth.deleted else expected
        if final_state_only and uid in truth.deleted:
            owed = [f"{uid}/deleted"]
        lost.extend(i for i in owed if counts[i] == 0)
        order = {i: n for n, i in enumerate(expected)}
        first_seen: list[str] = []
        for r in mine:
            if r.attributes["uid"] != uid or r.id in first_seen:
                continue
            if r.id not in order:
                unexpected.append(r.id)
                continue
            first_seen.append(r.id)
        positions = [order[i] for i in first_seen]
        if positions != sorted(positions):
            out_of_order.append(uid)
    duplicates = sum(c - 1 for c in counts.values() if c > 1)
    ids_per_state: dict[tuple[str, str, str], set[str]] = {}
    for r in mine:
        state = (r.attributes["uid"], r.attributes.get("resourceversion", ""),
                 r.attributes.get("type", ""))
        ids_per_state.setdefault(state, set()).add(r.id)
    same_ids = all(len(ids) == 1 for ids in ids_per_state.values())
    return Report(truth.changes, len(mine), lost, duplicates, same_ids, out_of_order,
                  unexpected)
