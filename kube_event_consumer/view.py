"""The materialized view: the current objects by kind / namespace / name.

Objects are held by uid (the order of an object's changes is judged per uid, see
``order``); the name index points at the newest uid of a name. Two uids share a name only
for a moment: an object deleted and re-created under its name, whose two uids' events come
from different Kafka partitions; the older one is dead, and its own deletion follows.
Its changes are kept but are no transition of the view (handlers do not see them).
Deleted uids are remembered (the last ``remember_deleted`` of them) so that a late re-send
of an earlier change cannot bring a deleted object back.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kube_event_consumer.event import ChangeType, Event, ObjectKey, Tombstone
from kube_event_consumer.order import (
    Stamp,
    Verdict,
    comparable,
    compare_resource_versions,
    judge,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What applying one event did: ``change`` is the view's transition (None: nothing
    changed); ``gap``: the event assumed a state the view never had (an update of an
    object it does not know)."""

    verdict: Verdict
    change: ChangeType | None = None
    previous: Event | None = None
    gap: bool = False


_DUPLICATE = Outcome(Verdict.DUPLICATE)
_OUT_OF_ORDER = Outcome(Verdict.OUT_OF_ORDER)


class View:
    def __init__(self, *, remember_deleted: int = 100_000) -> None:
        self._objects: dict[str, Event] = {}  # uid -> its last applied event
        self._names: dict[ObjectKey, str] = {}  # -> the newest uid of that name
        # Kafka tombstones name a partition key: (topic, key) -> uid, and back
        self._by_partition_key: dict[tuple[str, str], str] = {}
        self._partition_keys: dict[str, tuple[str, str]] = {}
        self._deleted: dict[str, Stamp] = {}  # insertion-ordered: oldest first
        self._remember = remember_deleted

    # ---- reading ---------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None. ``kind`` is ``Kind.group`` (``Kind`` for the core group);
        ``namespace`` ``""`` for cluster-scoped objects."""
        event = self.event(kind, namespace, name)
        return None if event is None else event.object

    def event(self, kind: str, namespace: str, name: str) -> Event | None:
        """The last applied event of that object (its attributes and its object)."""
        uid = self._names.get(ObjectKey(kind, namespace, name))
        return None if uid is None else self._objects[uid]

    def list(self, kind: str | None = None, namespace: str | None = None) -> list[Event]:
        """The last applied event of every object, optionally of one kind / namespace."""
        return [self._objects[uid] for key, uid in self._names.items()
                if (kind is None or key.kind == kind)
                and (namespace is None or key.namespace == namespace)]

    def kinds(self) -> set[str]:
        return {key.kind for key in self._names}

    def __len__(self) -> int:
        return len(self._names)

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(list(self._names))

    # ---- applying --------------------------------------------------------------------------

    def apply(self, event: Event, *, topic: str = "", expect_known: bool = False) -> Outcome:
        """Apply ``event`` if it is newer than what the view holds of its object.
        ``expect_known``: the backlog has been read, so an update of an unknown object is a
        gap (it is still applied: it carries the whole state)."""
        uid = event.uid
        held = self._objects.get(uid)
        stamp = Stamp.of(held) if held is not None else self._deleted.get(uid)
        if stamp is not None:
            verdict = judge(event, stamp)
            if verdict is Verdict.DUPLICATE:
                return _DUPLICATE
            if verdict is Verdict.OUT_OF_ORDER:
                return _OUT_OF_ORDER
        # an update of an object never seen: its add was missed. (A deletion of one is not:
        # after a crash the bridge sends the deletion of every object whose add may have
        # left it, so that none is missed; such an add may never have reached the bus.)
        gap = expect_known and held is None and event.type is ChangeType.UPDATED
        visible = held is not None and self._names.get(held.key) == uid
        if event.type is ChangeType.DELETED:
            self._forget(uid, Stamp.of(event))
            if not visible:  # unknown, or an older object of a re-used name: no transition
                return Outcome(Verdict.NEWER, None, None, gap)
            return Outcome(Verdict.NEWER, ChangeType.DELETED, held, gap)
        self._objects[uid] = event
        if topic:
            where = self._partition_keys[uid] = (topic, event.partitionkey)
            self._by_partition_key[where] = uid
        key = event.key
        if held is not None and held.key != key:  # never for Kubernetes objects; be safe
            self._unname(held.key, uid)
            visible = False
        current = self._names.get(key)
        if current is None or current == uid or _newer(event, self._objects[current]):
            self._names[key] = uid
        elif current != uid:  # an older object of a re-used name: no visible transition
            return Outcome(Verdict.NEWER, None, None, gap)
        if not visible:
            return Outcome(Verdict.NEWER, ChangeType.ADDED, None, gap)
        return Outcome(Verdict.NEWER, ChangeType.UPDATED, held, gap)

    def tombstone(self, tombstone: Tombstone) -> Event | None:
        """A Kafka tombstone: the object with that partition key in that topic is gone;
        returns its last event if the view showed it."""
        uid = self._by_partition_key.get((tombstone.topic, tombstone.key))
        held = None if uid is None else self._objects.get(uid)
        if uid is None or held is None:
            return None
        visible = self._names.get(held.key) == uid
        self._forget(uid, Stamp(f"{uid}/deleted", held.resource_version, held.sequence, True))
        return held if visible else None

    def _forget(self, uid: str, stamp: Stamp) -> None:
        held = self._objects.pop(uid, None)
        if held is not None:
            self._unname(held.key, uid)
        where = self._partition_keys.pop(uid, None)
        if where is not None and self._by_partition_key.get(where) == uid:
            del self._by_partition_key[where]
        self._deleted[uid] = stamp
        if len(self._deleted) > self._remember:
            del self._deleted[next(iter(self._deleted))]

    def _unname(self, key: ObjectKey, uid: str) -> None:
        if self._names.get(key) == uid:
            del self._names[key]


def _newer(event: Event, other: Event) -> bool:
    """Of two uids with one name, is ``event``'s the newer object?"""
    a, b = event.resource_version, other.resource_version
    if comparable(a) and comparable(b):
        return compare_resource_versions(a, b) > 0
    return event.sequence > other.sequence
