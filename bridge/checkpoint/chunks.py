"""What the networked stores (configmap, kafka, nats-kv) share: a base split into chunks under a
manifest, journal segments after it, and the markers that fence a stale writer.

A base is written as generation ``g``'s chunks (named with ``g`` and a random token, so two
writers never overwrite each other's chunks), then a small manifest naming them, the chunk
count and a SHA-256; a load reads the manifest, then exactly those chunks, and verifies the
digest. A crash between the two leaves the previous manifest (and its chunks) intact.

Manifest versions: ``1`` is what 0.1.0 wrote (a whole checkpoint, no journal); ``2`` (this
release) adds ``first``, the index of the first journal segment that extends the base
(configmap and nats-kv number segments across generations; kafka keys them per generation
and leaves ``first`` at 0). 0.1.0 read only the four fields it knew, so a downgrade still
loads the base (and ignores the journal).

Segment indices never repeat within a checkpoint, and every segment is written *create-only*
(an object or key that must not exist yet): two writers that both think they own the
checkpoint collide on the same index, and the second one is refused. A rebase first writes a
*seal* at the next index of the journal it replaces, so a writer still appending to the old
base (one that has lost its lease, say) collides with the seal; loading skips seals.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import orjson

from bridge.checkpoint.codec import CheckpointError, CheckpointFenced

MANIFEST_VERSION = 2
SEAL = b"KEBSEAL\n"  # a seal's value starts with this (a segment is JSON: never does)


@dataclass(frozen=True)
class Manifest:
    generation: int
    chunks: int
    sha256: str
    token: str = field(default_factory=lambda: secrets.token_hex(4))
    version: int = MANIFEST_VERSION
    first: int = 0  # the index of the base's first journal segment

    @property
    def prefix(self) -> str:
        """What this generation's chunk names start with."""
        return f"{self.generation}-{self.token}"

    def dumps(self) -> bytes:
        doc: dict[str, object] = {"generation": self.generation, "chunks": self.chunks,
                                  "sha256": self.sha256, "token": self.token}
        if self.version >= 2:
            doc.update(v=self.version, first=self.first)
        return orjson.dumps(doc)

    @classmethod
    def loads(cls, data: bytes) -> Manifest:
        try:
            doc = orjson.loads(data)
            return cls(int(doc["generation"]), int(doc["chunks"]), str(doc["sha256"]),
                       str(doc["token"]), int(doc.get("v", 1)), int(doc.get("first", 0)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"checkpoint manifest unreadable: {exc!r}") from exc

    @classmethod
    def after(cls, previous: Manifest | None, blob: bytes, chunks: int,
              first: int = 0) -> Manifest:
        """The manifest of the generation that follows ``previous`` with ``blob`` as base."""
        return cls((previous.generation if previous else 0) + 1, chunks, digest(blob),
                   first=first)


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


def seal(manifest: Manifest) -> bytes:
    """The value of the seal written by the rebase that makes ``manifest`` current."""
    return SEAL + manifest.token.encode()


def is_seal(value: bytes) -> bool:
    return value.startswith(SEAL)


def fenced(description: str, what: str) -> CheckpointFenced:
    return CheckpointFenced(
        f"checkpoint {description}: {what}: this instance is fenced off (another writer "
        "owns the checkpoint now; is a second bridge running with the same checkpoint id, "
        "or did this one lose its leader Lease?)")


@dataclass
class Doubt:
    """A write whose outcome is unknown (a timeout, a lost connection): before the next
    write, the store reads ``key`` back; ``value`` there means it landed, nothing means it
    did not, anything else means another writer wrote there."""

    kind: str  # "segment", "seal" or "manifest"
    key: str
    value: bytes
    manifest: Manifest | None = None  # for "manifest": the one it would have made current
