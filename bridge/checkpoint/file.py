"""``file``: the default store; atomic replace plus fsync of the file and its directory."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path


class FileStore:
    def __init__(self, directory: str, name: str = "checkpoint.bin") -> None:
        self.path = Path(directory) / name
        self.description = f"file {self.path}"

    async def load(self) -> bytes:
        return await asyncio.to_thread(self._read)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""

    async def save(self, blob: bytes) -> None:
        await asyncio.to_thread(self._write, blob)

    def _write(self, blob: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(blob)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    async def close(self) -> None:
        return None
