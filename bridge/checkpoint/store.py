"""The store protocol: a base plus the journal segments appended after it.

A store keeps one *base* (``rebase``: written whole, replacing the previous base and every
segment) and an ordered list of *segments* appended after it (``append``: durable when it
returns, never visible half-written). ``load`` returns the base and its segments in order;
segments from an older base or a torn write are never returned. The checkpoint writer
(``bridge.checkpoint.writer``) is the only caller and never calls two methods at once.
A store that finds another writer has taken the checkpoint over raises ``CheckpointFenced``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Stored:
    base: bytes = b""
    segments: list[bytes] = field(default_factory=list)


class CheckpointStore(Protocol):
    description: str
    segment_limit: int  # bytes one ``append`` should not exceed
    max_segments: int  # segments after which the writer compacts (each costs a read on load)
    default_min_write_interval: float  # seconds between writes unless configured

    async def load(self) -> Stored: ...

    async def append(self, segment: bytes) -> None: ...

    async def rebase(self, base: bytes) -> None: ...

    async def close(self) -> None: ...
