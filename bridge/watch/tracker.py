"""Per-stream checkpoint tracking: commit only the contiguous prefix of acknowledged changes.

Every observed change gets the next sequence number and is *recorded* before it is handed
on; its inventory effect waits in a pending overlay. ``ack(seq)`` (from delivery, once every
sink it was routed to has durably accepted it) may arrive out of order; the committed state
(resourceVersion, sequence, inventory) advances only over the contiguous acked prefix, so
a checkpoint never claims a change that a sink does not hold. Resume points (a watch event's
resourceVersion, a bookmark, the end of a re-list) are attached to the sequence after which
they become valid. resourceVersions are opaque: never compared, only carried.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from bridge.watch.inventory import Entry, Inventory


@dataclass
class StreamCheckpoint:
    """The durable state of one stream."""

    resource_version: str | None = None
    sequence: int = 0
    inventory: Inventory = field(default_factory=Inventory)
    version: str = ""  # the API version the stream was watched at
    kind: str = ""  # with ``crd``: what emitting its objects' deletions needs if the CRD
    crd: bool = False  # is deleted while the bridge is stopped


@dataclass(slots=True)
class _Pending:
    seq: int
    uid: str | None
    entry: Entry | None
    resume_rv: str | None
    acked: bool = False


class StreamTracker:
    def __init__(self, checkpoint: StreamCheckpoint) -> None:
        self.committed = checkpoint
        self._next_seq = checkpoint.sequence + 1
        self._pending: deque[_Pending] = deque()
        self._overlay: dict[str, tuple[int, Entry | None]] = {}

    # ---- the watcher's side --------------------------------------------------------------

    def record(self, uid: str, entry: Entry | None, resume_rv: str | None) -> int:
        """A change observed for ``uid`` (``entry`` None = deleted); returns its sequence."""
        seq = self._next_seq
        self._next_seq += 1
        self._pending.append(_Pending(seq, uid, entry, resume_rv))
        self._overlay[uid] = (seq, entry)
        return seq

    def mark(self, resume_rv: str) -> None:
        """A resume point that needs no delivery (bookmark, end of a re-list)."""
        if self._pending:
            self._pending[-1].resume_rv = resume_rv
        else:
            self.committed.resource_version = resume_rv

    def get(self, uid: str) -> Entry | None:
        """What has been handed on for ``uid`` (pending changes first, then committed)."""
        pending = self._overlay.get(uid)
        if pending is not None:
            return pending[1]
        return self.committed.inventory.get(uid)

    def items(self) -> Iterator[tuple[str, Entry]]:
        """Every object that currently exists as far as the handed-on changes go."""
        for uid, entry in self.committed.inventory.items():
            if uid not in self._overlay:
                yield uid, entry
        for uid, (_, pending_entry) in list(self._overlay.items()):
            if pending_entry is not None:
                yield uid, pending_entry

    # ---- the delivery side ----------------------------------------------------------------

    def ack(self, seq: int) -> None:
        if not self._pending:
            return
        index = seq - self._pending[0].seq
        if 0 <= index < len(self._pending):
            self._pending[index].acked = True
        while self._pending and self._pending[0].acked:
            self._commit(self._pending.popleft())

    def _commit(self, item: _Pending) -> None:
        committed = self.committed
        committed.sequence = item.seq
        if item.uid is not None:
            if item.entry is None:
                committed.inventory.remove(item.uid)
            else:
                committed.inventory.put(item.uid, item.entry)
            current = self._overlay.get(item.uid)
            if current is not None and current[0] == item.seq:
                del self._overlay[item.uid]
        if item.resume_rv is not None:
            committed.resource_version = item.resume_rv

    @property
    def in_flight(self) -> int:
        return len(self._pending)
