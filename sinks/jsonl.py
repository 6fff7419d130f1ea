"""``jsonl``: one structured CloudEvent JSON per line, to stdout or a file (the default sink).

A batch is acknowledged after it is written and flushed (and fsynced, for files with
``fsync: true``). Dead letters go to ``dead_letter_path`` (default: stderr).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import IO, Literal

import orjson
from pydantic import Field

from bridge.events.event import Event
from sinks.base import SinkError, SinkSettings


class JsonlSettings(SinkSettings):
    """One structured CloudEvent JSON per line, to standard output or a file (the embedded default
    sink)."""

    type: Literal["jsonl"] = "jsonl"
    path: str = Field("-", description='file to append to; "-" is standard output')
    fsync: bool = Field(False, description="fsync the file after every batch")
    dead_letter_path: str = Field("", description="file for dead letters; empty = stderr")


class JsonlSink:
    def __init__(self, settings: JsonlSettings) -> None:
        self.settings = settings
        self._out: IO[bytes] | None = None
        self._ok = False

    async def connect(self) -> None:
        if self.settings.path == "-":
            self._out = sys.stdout.buffer
        else:
            try:
                self._out = await asyncio.to_thread(open, self.settings.path, "ab")
            except OSError as exc:
                raise SinkError(f"jsonl sink {self.settings.name}: cannot open "
                                f"{self.settings.path}: {exc}", transient=False) from exc
        self._ok = True

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        out = self._out
        if out is None:
            raise SinkError(f"jsonl sink {self.settings.name} is not connected")
        payload = b"".join(event.structured() + b"\n" for event in events)
        try:
            await asyncio.to_thread(self._write, out, payload)
        except OSError as exc:
            self._ok = False
            error = SinkError(f"jsonl sink {self.settings.name}: write failed: {exc}")
            return [error] * len(events)
        self._ok = True
        return [None] * len(events)

    def _write(self, out: IO[bytes], payload: bytes) -> None:
        out.write(payload)
        out.flush()
        if self.settings.fsync and out is not sys.stdout.buffer:
            os.fsync(out.fileno())

    async def dead_letter(self, event: Event, reason: str) -> None:
        line = orjson.dumps({"reason": reason, "id": event.id, "type": event.type,
                             "subject": event.attributes.get("subject"),
                             "source": event.attributes.get("source")}) + b"\n"
        await asyncio.to_thread(self._write_dead_letter, line)

    def _write_dead_letter(self, line: bytes) -> None:
        if self.settings.dead_letter_path:
            with open(self.settings.dead_letter_path, "ab") as dlq:
                dlq.write(line)
        else:
            sys.stderr.buffer.write(line)
            sys.stderr.flush()

    async def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout.buffer:
            self._out.close()
        self._out = None
        self._ok = False

    @property
    def healthy(self) -> bool:
        return self._ok
