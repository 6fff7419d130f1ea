"""``nats-kv``: a JetStream key-value bucket. The manifest is written with compare-and-swap
on its revision, which also fences a second writer: if another bridge instance saved in
between, this one's save fails loudly instead of overwriting."""

from __future__ import annotations

from typing import Any

import nats
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

from bridge.checkpoint.chunks import Manifest, digest, join, split
from bridge.checkpoint.codec import CheckpointError

CHUNK = 512 * 1024  # well under the default 1 MiB max payload


class NatsKvStore:
    def __init__(self, url: str, bucket: str, checkpoint_id: str) -> None:
        self.url = url
        self.bucket = bucket
        self.id = checkpoint_id
        self.description = f"nats-kv {url} bucket {bucket} key {checkpoint_id}"
        self._nc: Any = None
        self._kv: Any = None
        self._revision: int | None = None
        self._current: Manifest | None = None

    async def _open(self) -> Any:
        if self._kv is None:
            self._nc = await nats.connect(self.url, max_reconnect_attempts=-1,
                                          connect_timeout=5)
            js = self._nc.jetstream()
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(bucket=self.bucket, history=1)
        return self._kv

    def _key(self, suffix: str) -> str:
        return f"{self.id}.{suffix}"

    async def load(self) -> bytes:
        kv = await self._open()
        try:
            entry = await kv.get(self._key("manifest"))
        except KeyNotFoundError:
            self._revision = 0
            return b""
        self._revision = entry.revision
        manifest = self._current = Manifest.loads(entry.value)
        chunks = [(await kv.get(self._key(f"{manifest.prefix}.{i}"))).value or b""
                  for i in range(manifest.chunks)]
        return join(manifest, chunks)

    async def save(self, blob: bytes) -> None:
        kv = await self._open()
        if self._revision is None:
            await self.load()
        parts = split(blob, CHUNK)
        manifest = Manifest((self._current.generation if self._current else 0) + 1,
                            len(parts), digest(blob))
        for index, part in enumerate(parts):
            await kv.put(self._key(f"{manifest.prefix}.{index}"), part)
        try:
            if self._revision:
                self._revision = await kv.update(self._key("manifest"), manifest.dumps(),
                                                 last=self._revision)
            else:
                self._revision = await kv.create(self._key("manifest"), manifest.dumps())
        except KeyWrongLastSequenceError as exc:
            raise CheckpointError(
                f"another writer changed checkpoint {self.id!r} in {self.bucket}: this "
                "instance is fenced off (is a second bridge running with the same id?)"
            ) from exc
        old, self._current = self._current, manifest
        if old is not None:
            for index in range(old.chunks):
                await kv.purge(self._key(f"{old.prefix}.{index}"))

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
        self._nc = self._kv = None
