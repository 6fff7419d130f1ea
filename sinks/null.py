"""``null``: accepts and discards everything (benchmarks, dry runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from bridge.events.event import Event
from sinks.base import SinkError, SinkSettings


class NullSettings(SinkSettings):
    """Discards everything (benchmarks, dry runs)."""

    type: Literal["null"] = "null"


class NullSink:
    def __init__(self, settings: NullSettings) -> None:
        self.settings = settings
        self.count = 0

    async def connect(self) -> None:
        return None

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        self.count += len(events)
        return [None] * len(events)

    async def dead_letter(self, event: Event, reason: str) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        return True
