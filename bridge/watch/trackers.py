"""Every stream's tracker: the one place trackers are made, and what a checkpoint holds.

Every stream loaded from the checkpoint gets its tracker at once, watched or not (yet): a
start that cannot discover its kinds (API server down) must not write a checkpoint that
forgot them. A stream started for a key takes over its tracker (position, sequence,
inventory). ``journal``: trackers keep their recorded changes for the checkpoint writer's
journal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bridge.kube.resources import Resource
from bridge.watch.delta import Delta
from bridge.watch.tracker import StreamCheckpoint, StreamTracker


class Trackers:
    def __init__(self, checkpoints: dict[str, StreamCheckpoint] | None = None, *,
                 journal: bool = False) -> None:
        self.journal = journal
        self._trackers = {key: StreamTracker(checkpoint, journal=journal)
                          for key, checkpoint in (checkpoints or {}).items()}

    def tracker(self, key: str, resource: Resource, builtin: bool) -> StreamTracker:
        """The tracker of stream ``key`` (a new one unless loaded), recording the version and
        kind it is watched at."""
        tracker = self._trackers.get(key)
        if tracker is None:
            tracker = self._trackers[key] = StreamTracker(StreamCheckpoint(),
                                                          journal=self.journal)
        committed = tracker.committed
        committed.version, committed.kind = resource.version, resource.kind
        committed.crd = not builtin
        tracker.dirty = True  # the header names the version and kind
        return tracker

    def all(self) -> dict[str, StreamTracker]:
        """Every tracker (the live mapping: what the checkpoint writer persists)."""
        return self._trackers

    def items(self) -> Iterator[tuple[str, StreamTracker]]:
        return iter(sorted(self._trackers.items()))

    def ack(self, deltas: Sequence[Delta]) -> None:
        trackers = self._trackers
        for delta in deltas:
            tracker = trackers.get(delta.stream)
            if tracker is not None:
                tracker.ack(delta.sequence)

    def checkpoints(self) -> dict[str, StreamCheckpoint]:
        """The committed state of every stream (only acked changes count)."""
        return {key: tracker.committed for key, tracker in self._trackers.items()}
