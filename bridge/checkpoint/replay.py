"""Loading: a base, then its journal segments in order, back into checkpoints.

Replaying reproduces the trackers as they were: intents wait as pending; a header commits
every pending intent up to its sequence. What is still pending at the end *may* have reached
a sink: those objects are loaded as uncertain (``StreamCheckpoint.uncertain``), so nothing
that left the process is unknown to the next start, whether it resumes its watch or re-lists
after a ``410``.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.checkpoint.codec import Intent, StreamState, decode_base, decode_segment
from bridge.watch.inventory import Entry
from bridge.watch.tracker import Header, StreamCheckpoint


class Replay:
    def __init__(self, base: dict[str, StreamState]) -> None:
        self._states = base
        self._pending: dict[str, dict[int, tuple[str, Entry | None]]] = {}
        for key, state in base.items():
            self._intents(key, state.pending)

    def _state(self, key: str) -> StreamCheckpoint:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = StreamState(StreamCheckpoint())
        return state.checkpoint

    def _intents(self, key: str, intents: Iterable[Intent]) -> None:
        pending = self._pending.setdefault(key, {})
        for seq, uid, entry in intents:
            pending[seq] = (uid, entry)

    def apply(self, segment: bytes) -> None:
        for key, header, intents in decode_segment(segment):
            self._state(key)
            self._intents(key, intents)
            if header is not None:
                self._commit(key, header)

    def _commit(self, key: str, header: Header) -> None:
        cp = self._state(key)
        rv, seq, cp.version, cp.kind, cp.crd, cp.listed = header
        pending = self._pending.get(key) or {}
        for committed in sorted(s for s in pending if s <= seq):
            uid, entry = pending.pop(committed)
            if entry is None:
                cp.inventory.remove(uid)
            else:
                cp.inventory.put(uid, entry)
            cp.uncertain.discard(uid)
        cp.resource_version, cp.sequence = rv, seq

    def result(self) -> dict[str, StreamCheckpoint]:
        """Every stream's committed state with what was still pending made uncertain: a
        put's entry is kept (so its deletion is never missed), a deletion keeps the last
        known entry; either way the object is delivered again, or deleted, on the next
        sync."""
        out: dict[str, StreamCheckpoint] = {}
        for key in self._states:
            cp = self._state(key)
            pending = self._pending.get(key) or {}
            for seq in sorted(pending):
                uid, entry = pending[seq]
                if entry is not None:
                    cp.inventory.put(uid, entry)
                    cp.uncertain.add(uid)
                elif cp.inventory.get(uid) is not None:
                    cp.uncertain.add(uid)
                cp.sequence = max(cp.sequence, seq)
            out[key] = cp
        self._pending.clear()
        return out


def restore(base: bytes, segments: Iterable[bytes]) -> dict[str, StreamCheckpoint]:
    replay = Replay(decode_base(base))
    for segment in segments:
        replay.apply(segment)
    return replay.result()


def decode(data: bytes) -> dict[str, StreamCheckpoint]:
    """A base alone (pending changes become uncertain objects)."""
    return restore(data, ())
