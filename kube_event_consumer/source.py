"""What an informer reads from: a broker source hands out batches of decoded messages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from kube_event_consumer.errors import DecodeError
from kube_event_consumer.event import Event, Tombstone

Commit = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class Message:
    """One decoded message. ``replayed``: before the committed position, i.e. handled by an
    earlier run (read again only to rebuild the view); ``topic`` names a Kafka topic (for
    tombstones), empty for NATS."""

    payload: Event | Tombstone | DecodeError
    replayed: bool = False
    topic: str = ""


@dataclass(slots=True)
class Batch:
    """Messages in per-object order; ``commit`` records them as processed (called after
    every handler returned); ``caught_up``: with this batch, everything the source held
    when the informer started has been read."""

    messages: list[Message] = field(default_factory=list)
    caught_up: bool = False
    commit: Commit | None = None


class Source(Protocol):
    async def start(self) -> None: ...

    async def next_batch(self) -> Batch:
        """The next messages (an empty batch after a short wait when there are none)."""
        ...

    async def close(self) -> None: ...
