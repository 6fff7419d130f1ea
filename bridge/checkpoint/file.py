"""``file``: the default store. A base file replaced atomically, and a journal file appended.

- ``NAME``: the base (written to ``NAME.tmp``, fsynced, renamed, directory fsynced); 0.1.0
  wrote its whole checkpoint here, so an old file loads as a base without a journal.
- ``NAME.journal``: a header naming the SHA-256 of the base it extends, then frames
  ``length (4 bytes) | crc32 (4 bytes) | segment``, each fsynced before ``append`` returns.
  A torn last frame (a crash during a write) fails its length or checksum and is cut off;
  a journal whose header names another base (a crash between writing a new base and its
  empty journal) is ignored: everything in it is in that newer base.
- ``NAME.lock``: held (``flock``) while the store is open, so a second bridge on the same
  directory fails at start instead of interleaving writes.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import struct
import zlib
from pathlib import Path

from bridge.checkpoint.codec import CheckpointError
from bridge.checkpoint.store import Stored

_JOURNAL_MAGIC = b"KEBJ1\n"
_HEADER_SIZE = len(_JOURNAL_MAGIC) + 32
_FRAME = struct.Struct(">II")


class FileStore:
    segment_limit = 4 * 1024 * 1024
    max_segments = 1_000_000  # one read for the whole journal: no per-segment cost
    default_min_write_interval = 0.0

    def __init__(self, directory: str, name: str = "checkpoint.bin") -> None:
        self.path = Path(directory) / name
        self.journal_path = self.path.with_name(name + ".journal")
        self.description = f"file {self.path}"
        self._lock_fd: int | None = None
        self._journal_end = 0  # where the next frame goes (after the last whole frame)

    async def load(self) -> Stored:
        return await asyncio.to_thread(self._load)

    async def append(self, segment: bytes) -> None:
        await asyncio.to_thread(self._append, segment)

    async def rebase(self, base: bytes) -> None:
        await asyncio.to_thread(self._rebase, base)

    async def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._lock_fd = None

    # ---- in a worker thread --------------------------------------------------------------

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT,
                     0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise CheckpointError(f"{self.description} is in use by another bridge process "
                                  "(its lock file is held): one checkpoint, one writer") from exc
        self._lock_fd = fd

    def _load(self) -> Stored:
        self._lock()
        try:
            base = self.path.read_bytes()
        except FileNotFoundError:
            base = b""
        segments: list[bytes] = []
        self._journal_end = 0
        try:
            journal = self.journal_path.read_bytes()
        except FileNotFoundError:
            journal = b""
        if journal[:_HEADER_SIZE] == _journal_header(base):
            pos = _HEADER_SIZE
            while pos + _FRAME.size <= len(journal):
                size, crc = _FRAME.unpack_from(journal, pos)
                segment = journal[pos + _FRAME.size:pos + _FRAME.size + size]
                if len(segment) != size or zlib.crc32(segment) != crc:
                    break  # a torn write: the frames before it are whole
                segments.append(segment)
                pos += _FRAME.size + size
            self._journal_end = pos
            if pos < len(journal):  # cut the torn tail off before appending after it
                os.truncate(self.journal_path, pos)
        if not self._journal_end:  # no journal for this base yet
            self._write_atomic(self.journal_path, _journal_header(base))
            self._journal_end = _HEADER_SIZE
        return Stored(base, segments)

    def _append(self, segment: bytes) -> None:
        frame = _FRAME.pack(len(segment), zlib.crc32(segment)) + segment
        fd = os.open(self.journal_path, os.O_WRONLY)  # by path: a moved directory is an error
        try:
            _write_all(fd, frame, self._journal_end)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._journal_end += len(frame)

    def _rebase(self, base: bytes) -> None:
        self._lock()
        self._write_atomic(self.path, base)
        self._write_atomic(self.journal_path, _journal_header(base))
        self._journal_end = _HEADER_SIZE

    def _write_atomic(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _journal_header(base: bytes) -> bytes:
    return _JOURNAL_MAGIC + hashlib.sha256(base).digest()


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
