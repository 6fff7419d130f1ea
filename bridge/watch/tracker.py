"""Per-stream checkpoint tracking: commit only the contiguous prefix of acknowledged changes.

Every observed change gets the next sequence number and is *recorded* before it is handed
on; its inventory effect waits in a pending overlay. ``ack(seq)`` (from delivery, once every
sink it was routed to has durably accepted it) may arrive out of order; the committed state
(resourceVersion, sequence, inventory) advances only over the contiguous acked prefix, so
a checkpoint never claims a change that a sink does not hold. Resume points (a watch event's
resourceVersion, a bookmark, the end of a re-list) are attached to the sequence after which
they become valid. resourceVersions are opaque: never compared, only carried.

Write-ahead: every recorded change is also kept in a journal buffer until the checkpoint
writer takes it (``take_journal``) and makes it durable *before* the change is handed to any
sink, so whatever may have left the process is known to the next start. After a crash, the
changes that were recorded but not known to be acknowledged come back as *uncertain*
objects (``StreamCheckpoint.uncertain``): the tracker reports them as unknown, so the resumed
watch or the re-list diff delivers them again (same ids) or, when they are gone, emits their
deletion, exactly like a change that was never delivered.
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
    # objects whose last change may or may not have reached a sink (a crash came between
    # sending and acknowledging): delivered again, or deleted, by the next resume/re-list
    uncertain: set[str] = field(default_factory=set)
    # the resourceVersion of the initial list while its snapshot is not yet committed: a
    # start after a crash re-lists exactly there and replays the watch from it, so changes
    # made since are delivered one by one (a fresh list would give only their final states)
    listed: str | None = None

    def header(self) -> Header:
        return (self.resource_version, self.sequence, self.version, self.kind, self.crd,
                self.listed)


Header = tuple[str | None, int, str, str, bool, str | None]  # what a commit record carries


@dataclass(slots=True)
class Record:
    """One recorded change: ``entry`` None is a deletion; ``resume_rv`` the resume point that
    becomes valid once it commits."""

    seq: int
    uid: str
    entry: Entry | None
    resume_rv: str | None
    acked: bool = False


class StreamTracker:
    def __init__(self, checkpoint: StreamCheckpoint, *, journal: bool = False) -> None:
        """``journal``: keep every recorded change for ``take_journal`` (a checkpoint writer
        must take them, or they accumulate)."""
        self.committed = checkpoint
        self.journaled = journal
        self._next_seq = checkpoint.sequence + 1
        self._pending: deque[Record] = deque()
        self._overlay: dict[str, tuple[int, Entry | None]] = {}
        self._journal: list[Record] = []  # recorded, not yet taken by the journal writer
        self._journaled_header: Header | None = None
        # something journal-worthy happened since the last ``take_journal``: the writer
        # visits only these trackers, so a flush costs what changed, not every stream
        self.dirty = True

    # ---- the journal writer's side --------------------------------------------------------

    def take_journal(self) -> tuple[list[Record], Header | None]:
        """The changes recorded since the last call, and the committed header if it moved
        since then (None otherwise). Synchronous: a consistent cut."""
        taken, self._journal = self._journal, []
        self.dirty = False
        header = self.committed.header()
        if header == self._journaled_header:
            return taken, None
        self._journaled_header = header
        return taken, header

    def pending(self) -> list[tuple[int, str, Entry | None]]:
        """Recorded changes not yet committed (seq, uid, entry or None for a deletion)."""
        return [(p.seq, p.uid, p.entry) for p in self._pending]

    # ---- the watcher's side --------------------------------------------------------------

    def record(self, uid: str, entry: Entry | None, resume_rv: str | None) -> int:
        """A change observed for ``uid`` (``entry`` None = deleted); returns its sequence."""
        seq = self._next_seq
        self._next_seq += 1
        item = Record(seq, uid, entry, resume_rv)
        self._pending.append(item)
        if self.journaled:
            self._journal.append(item)
            self.dirty = True
        self._overlay[uid] = (seq, entry)
        return seq

    def listing(self, rv: str | None) -> None:
        """The initial list is served at ``rv``; recorded before its first change, so it is
        journaled before any of them can leave (see ``StreamCheckpoint.listed``). Only valid
        while everything known came from that list or later (``knows_nothing`` before it);
        None forgets it (the next start then diffs with a deletion pass)."""
        self.committed.listed = rv
        self.dirty = True

    def knows_nothing(self) -> bool:
        """No object is known, committed, pending or uncertain."""
        return not self._overlay and not len(self.committed.inventory)

    def mark(self, resume_rv: str) -> None:
        """A resume point that needs no delivery (bookmark, end of a re-list)."""
        if self._pending:
            self._pending[-1].resume_rv = resume_rv
        else:
            self.committed.resource_version = resume_rv
            self.dirty = True

    def get(self, uid: str) -> Entry | None:
        """What has been handed on for ``uid`` (pending changes first, then committed)."""
        pending = self._overlay.get(uid)
        if pending is not None:
            return pending[1]
        committed = self.committed
        if committed.uncertain and uid in committed.uncertain:
            return None  # delivered again by whoever sees it next (watch or re-list)
        return committed.inventory.get(uid)

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

    def _commit(self, item: Record) -> None:
        committed = self.committed
        self.dirty = True
        committed.sequence = item.seq
        if item.entry is None:
            committed.inventory.remove(item.uid)
        else:
            committed.inventory.put(item.uid, item.entry)
        if committed.uncertain:
            committed.uncertain.discard(item.uid)
        current = self._overlay.get(item.uid)
        if current is not None and current[0] == item.seq:
            del self._overlay[item.uid]
        if item.resume_rv is not None:
            committed.resource_version = item.resume_rv

    @property
    def in_flight(self) -> int:
        return len(self._pending)
