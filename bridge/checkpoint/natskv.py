"""``nats-kv``: a JetStream key-value bucket (``history=1``).

Keys (``ID`` = the checkpoint id):

- ``ID.manifest``: the manifest (``bridge.checkpoint.chunks``), replaced with compare-and-swap
  on its revision (``update(last=revision)``; ``create`` for the first): a second writer's
  rebase is refused.
- ``ID.{generation}-{token}.{i}``: the base in chunks of 512 KiB (under the default 1 MiB
  max payload).
- ``ID.j{n}``: journal segment ``n``, written with ``create`` (the key must not exist: a
  second writer that took the index is refused), or a rebase's seal (skipped on load).

A load reads every key under ``ID.`` through one pull consumer (the newest value of each). An
append creates its segment, then checks that the manifest's revision is still the one it
knows (a rebase by another writer, after this writer's last write, changes it). A rebase
writes the seal, the chunks, then the manifest, and purges everything of the checkpoint older
than its seal with one stream purge (``filter=$KV.BUCKET.ID.>``, ``seq`` = the seal's
revision: no delete markers are left). With an id containing ``.`` that filter would match
other checkpoints' keys, so such ids are purged key by key (the keys this instance knows of:
chunks left by a crashed rebase stay). 0.1.0 wrote the same manifest and
chunk keys (version 1, no journal): it loads as a base without segments.

Cost: an append is one acknowledged publish of the segment (about 90 bytes per change) and
one read of the manifest; a rebase publishes ``ceil(base / 512 KiB) + 2`` messages and sends
one purge request.
"""

from __future__ import annotations

import logging
from typing import Any

from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

from bridge.checkpoint.chunks import Doubt, Manifest, fenced, is_seal, join, seal, split
from bridge.checkpoint.codec import CheckpointError
from bridge.checkpoint.store import Stored
from sinks import nats_security
from sinks.nats_security import NatsAuth, NatsRefused

log = logging.getLogger(__name__)

CHUNK = 512 * 1024  # well under the default 1 MiB max payload


class NatsKvStore:
    segment_limit = 512 * 1024
    max_segments = 100_000  # a load reads them all through one consumer (~40 µs each)
    default_min_write_interval = 0.0

    def __init__(self, url: str, bucket: str, checkpoint_id: str, *,
                 auth: NatsAuth | None = None) -> None:
        self.url = url
        self.auth = auth or NatsAuth()
        self.bucket = bucket
        self.id = checkpoint_id
        self.description = f"nats-kv {url} bucket {bucket} key {checkpoint_id}"
        self._nc: Any = None
        self._js: Any = None
        self._kv: Any = None
        self._reset()

    def _reset(self) -> None:
        self._revision = 0  # of the manifest; 0: none yet
        self._current: Manifest | None = None
        self._next = 0  # the index of the next segment
        self._doubt: Doubt | None = None
        self._stale: set[str] = set()  # keys to purge one by one (an id with dots)

    async def _open(self) -> Any:
        if self._kv is None:
            if self._nc is None:
                try:
                    self._nc = await nats_security.connect(
                        {"servers": self.url, "max_reconnect_attempts": -1,
                         "connect_timeout": 5}, self.auth)
                except NatsRefused as exc:
                    raise CheckpointError(str(exc)) from exc
            self._js = self._nc.jetstream()
            try:
                self._kv = await self._js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await self._js.create_key_value(bucket=self.bucket, history=1)
        return self._kv

    def _key(self, suffix: str) -> str:
        return f"{self.id}.{suffix}"

    def _chunk_key(self, manifest: Manifest, index: int) -> str:
        return self._key(f"{manifest.prefix}.{index}")

    def _segment_key(self, index: int) -> str:
        return self._key(f"j{index}")

    # ---- load --------------------------------------------------------------------------------

    async def load(self) -> Stored:
        """The current base and its segments; also (re)reads the manifest's revision and the
        next segment index, so a store that was fenced or failed is usable again."""
        for _ in range(3):
            self._reset()
            stored = await self._load()
            if stored is not None:
                return stored
        raise CheckpointError(f"checkpoint {self.description} kept changing while being "
                              "read: is another bridge writing it?")

    async def _load(self) -> Stored | None:
        """None when a rebase replaced what was being read."""
        values = await self._snapshot()
        manifest_key = self._key("manifest")
        base = b""
        if manifest_key in values:
            self._revision, raw = values[manifest_key]
            manifest = self._current = Manifest.loads(raw)
            chunks = []
            for index in range(manifest.chunks):
                found = values.get(self._chunk_key(manifest, index))
                if found is None:
                    if await self._moved():
                        return None
                    raise CheckpointError(f"checkpoint chunk {index} of {self.description} "
                                          "is missing")
                chunks.append(found[1])
            base = join(manifest, chunks)
        segments: list[bytes] = []
        index = self._current.first if self._current else 0
        while (found := values.get(self._segment_key(index))) is not None:
            if not is_seal(found[1]):
                segments.append(found[1])
            index += 1
        self._next = index
        if await self._moved():  # a rebase came while the values were being read
            return None
        return Stored(base, segments)

    async def _snapshot(self) -> dict[str, tuple[int, bytes]]:
        """Every live key under the id with its revision and value, through one pull consumer
        that delivers the newest message of each subject (much faster than a request per
        key; a pull consumer delivers nothing before it is asked, so its pending count is
        exact, unlike ``kv.watch``'s end marker, which can come before the values)."""
        await self._open()
        stream = f"KV_{self.bucket}"
        prefix = f"$KV.{self.bucket}."
        config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                                ack_policy=AckPolicy.NONE, inactive_threshold=60.0)
        sub = await self._js.pull_subscribe(f"{prefix}{self.id}.>", stream=stream,
                                            config=config)
        values: dict[str, tuple[int, bytes]] = {}
        name = ""
        try:
            info = await sub.consumer_info()
            name, remaining = info.name, info.num_pending
            while remaining > 0:
                for msg in await sub.fetch(batch=min(remaining, 64), timeout=10):
                    remaining = msg.metadata.num_pending
                    if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                        continue
                    values[msg.subject[len(prefix):]] = (int(msg.metadata.sequence.stream),
                                                         bytes(msg.data or b""))
        finally:
            await sub.unsubscribe()
            try:
                if name:
                    await self._js.delete_consumer(stream, name)
            except NatsError:
                pass  # it goes after its inactive threshold
        return values

    async def _moved(self) -> bool:
        kv = await self._open()
        try:
            entry = await kv.get(self._key("manifest"))
        except KeyNotFoundError:
            return self._revision != 0
        return bool(entry.revision != self._revision)

    # ---- append ------------------------------------------------------------------------------

    async def append(self, segment: bytes) -> None:
        await self._settle()
        await self._create(Doubt("segment", self._segment_key(self._next), segment))
        self._next += 1
        if await self._moved():  # a rebase by another writer (see ``chunks``)
            raise fenced(self.description, "the manifest was changed by another writer")

    # ---- rebase ------------------------------------------------------------------------------

    async def rebase(self, base: bytes) -> None:
        await self._settle()
        kv = await self._open()
        old = self._current
        parts = split(base, CHUNK)
        new = Manifest.after(old, base, len(parts), first=self._next + 1)
        # 1. seal the journal being replaced: a writer still appending to it is refused
        sealed = await self._create(Doubt("seal", self._segment_key(self._next), seal(new)))
        self._next += 1
        # 2. the chunks (new keys: a crash from here on leaves the previous state intact)
        for index, part in enumerate(parts):
            await kv.put(self._chunk_key(new, index), part)
        # 3. the manifest, compare-and-swap: this makes the new base current
        await self._put_manifest(new)
        self._current = new
        # 4. everything older is unreachable now
        await self._purge_older(old, new, sealed)

    async def _put_manifest(self, new: Manifest) -> None:
        kv = await self._open()
        value = new.dumps()
        try:
            if self._revision:
                self._revision = await kv.update(self._key("manifest"), value,
                                                 last=self._revision)
            else:
                self._revision = await kv.create(self._key("manifest"), value)
        except KeyWrongLastSequenceError as exc:
            raise fenced(self.description, "the manifest was changed by another "
                         "writer") from exc
        except (NatsError, TimeoutError, OSError):
            self._doubt = Doubt("manifest", self._key("manifest"), value, new)
            raise

    async def _purge_older(self, old: Manifest | None, new: Manifest, sealed: int) -> None:
        """Purge every key of this checkpoint written before the seal of ``new`` (revision
        ``sealed``): one stream purge, or key by key for an id with dots. A failure is
        logged and retried at the next rebase: nothing reads these keys any more."""
        stream = f"KV_{self.bucket}"
        try:
            if "." not in self.id:
                await self._js.purge_stream(stream, seq=sealed,
                                            subject=f"$KV.{self.bucket}.{self.id}.>")
                self._stale.clear()
                return
            self._stale.update(self._segment_key(i) for i in range(
                max(0, old.first - 1) if old else 0, new.first - 1))
            if old is not None:
                self._stale.update(self._chunk_key(old, i) for i in range(old.chunks))
            for key in sorted(self._stale):
                await self._js.purge_stream(stream, subject=f"$KV.{self.bucket}.{key}")
                self._stale.discard(key)
        except (NatsError, TimeoutError, OSError) as exc:
            log.warning("checkpoint %s: keys of replaced bases not purged yet (%r); retried "
                        "at the next rebase", self.description, exc)

    # ---- writes of unknown outcome -----------------------------------------------------------

    async def _create(self, doubt: Doubt) -> int:
        """``create`` (the key must not exist: another writer took it means fenced); a
        failure that may have written it anyway leaves ``doubt`` for the next write."""
        kv = await self._open()
        try:
            return int(await kv.create(doubt.key, doubt.value))
        except KeyWrongLastSequenceError as exc:
            raise fenced(self.description, f"{doubt.key} exists already") from exc
        except (NatsError, TimeoutError, OSError):
            self._doubt = doubt
            raise

    async def _settle(self) -> None:
        """Before a write: find out what the last write of unknown outcome did."""
        doubt = self._doubt
        if doubt is None:
            return
        kv = await self._open()
        try:
            entry = await kv.get(doubt.key)
        except KeyNotFoundError:
            entry = None
        self._doubt = None
        if doubt.kind == "manifest":
            assert doubt.manifest is not None
            revision = entry.revision if entry else 0
            if entry is not None and bytes(entry.value) == doubt.value:  # it landed
                old, self._current, self._revision = self._current, doubt.manifest, revision
                self._next = max(self._next, doubt.manifest.first)
                try:
                    sealed = await kv.get(self._segment_key(doubt.manifest.first - 1))
                except KeyNotFoundError:
                    return  # purged by the next rebase
                await self._purge_older(old, doubt.manifest, sealed.revision)
            elif revision != self._revision:
                raise fenced(self.description, "the manifest was changed by another writer")
            return
        if entry is None:
            return  # not written
        if bytes(entry.value or b"") != doubt.value:
            raise fenced(self.description, f"{doubt.key} was written by another writer")
        self._next += 1  # it landed

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
        self._nc = self._js = self._kv = None
