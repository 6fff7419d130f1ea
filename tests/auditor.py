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
    in_gap: bool = False  # writes now happen while the bridge cannot see history
    gap_ids: set[str] = field(default_factory=set)

    def wrote(self, uid: str, resource_version: str) -> None:
        self.states.setdefault(uid, []).append(resource_version)
        if self.in_gap:
            self.gap_ids.add(f"{uid}/{resource_version}")

    def delete(self, uid: str) -> None:
        self.deleted.add(uid)
        if self.in_gap:
            self.gap_ids.add(f"{uid}/deleted")

    def optional(self, uid: str) -> set[str]:
        """Ids a re-list diff may legitimately skip: states written during a gap that were
        superseded, and the whole life of an object that began and ended inside gaps."""
        ids = self.expected_ids(uid)
        gap = [i for i in ids if i in self.gap_ids]
        if gap and len(gap) == len(ids):
            return set(ids) if uid in self.deleted else set(ids[:-1])
        return {i for i in gap if i != ids[-1]}

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
        owed = [i for i in expected if i not in truth.optional(uid)]
        if final_state_only:
            owed = owed[-1:]
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
