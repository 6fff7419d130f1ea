"""Splitting a checkpoint blob for stores with a per-value size limit.

A save writes generation ``g``'s chunks first (named with ``g`` and a random writer token, so
two writers never overwrite each other's chunks), then a small manifest naming them, the
chunk count and a SHA-256; a load reads the manifest, then exactly those chunks, and verifies the
digest. A crash between the two leaves the previous manifest (and its chunks) intact.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import orjson

from bridge.checkpoint.codec import CheckpointError


@dataclass(frozen=True)
class Manifest:
    generation: int
    chunks: int
    sha256: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def prefix(self) -> str:
        """What this generation's chunk names start with."""
        return f"{self.generation}-{self.token}"

    def dumps(self) -> bytes:
        return orjson.dumps({"generation": self.generation, "chunks": self.chunks,
                             "sha256": self.sha256, "token": self.token})

    @classmethod
    def loads(cls, data: bytes) -> Manifest:
        doc = orjson.loads(data)
        return cls(int(doc["generation"]), int(doc["chunks"]), str(doc["sha256"]),
                   str(doc["token"]))


def split(blob: bytes, size: int) -> list[bytes]:
    return [blob[i:i + size] for i in range(0, len(blob), size)] or [b""]


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def join(manifest: Manifest, chunks: list[bytes]) -> bytes:
    blob = b"".join(chunks)
    if digest(blob) != manifest.sha256:
        raise CheckpointError(f"checkpoint generation {manifest.generation} fails its "
                              "SHA-256 check (incomplete or corrupted chunks)")
    return blob
