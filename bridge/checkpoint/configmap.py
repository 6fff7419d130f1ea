"""``configmap``: ConfigMaps in the bridge's namespace (in-cluster, small and mid-size clusters).

Objects (``NAME`` = ``kube-event-bridge-{id}``):

- ``NAME``: the manifest (``bridge.checkpoint.chunks``): the current base's generation,
  chunk count, SHA-256 and the index of its first journal segment. Replaced with ``PUT`` and
  its resourceVersion (optimistic concurrency): a second writer's rebase gets 409.
- ``NAME-{generation}-{token}-{i}``: the base, in chunks of 700 KiB (``binaryData``; the
  API server refuses more than 1 MiB per ConfigMap).
- ``NAME-j{n}``: journal segment ``n`` (one ``POST`` per append; 409 AlreadyExists means
  another writer took the index: fenced), or a rebase's seal (skipped on load).

Every object carries ``kube-event-bridge.io/checkpoint=true`` (the engine excludes that label
when it watches ConfigMaps, so the bridge never re-emits its own writes),
``kube-event-bridge.io/checkpoint-of`` (which checkpoint) and
``kube-event-bridge.io/generation`` (the base a chunk or segment belongs to; ``manifest`` on
the manifest). A load is one paginated ``LIST`` by label: one consistent snapshot of the
manifest, chunks and segments. An append creates its segment, then reads the manifest: a
rebase by another writer (after this writer's last write) has changed its resourceVersion.
A rebase writes the seal, the chunks, then the manifest, and deletes everything else of the
checkpoint with one ``deletecollection`` (``generation notin (new, manifest)``: the previous
base, its segments and seal, leftovers of crashed rebases); without that RBAC verb it deletes
object by object. 0.1.0's manifest and chunks (no labels) are read and deleted by name.

Cost and sizing. The inventory takes 70-100 bytes per object (uid, resourceVersion,
namespace, name), a journal entry about 90:

| objects | base | ConfigMaps per rebase | append (100 changes) |
|---|---|---|---|
| 10k | ~0.8 MB | 2 chunks + seal + manifest | one ~12 KB POST and one GET |
| 50k | ~3.7 MB | 6 + 2 | same |
| 100k | ~7.3 MB (measured) | 11 + 2 | same |

The writer spaces writes ``min_write_interval`` apart (default 0.2 s: at most 5 API writes/s,
each carrying every change since the last) and rewrites the base when the journal outgrows
``compact_ratio`` times it or reaches ``max_segments`` (4000) segments. Every byte also lands
in etcd (quota 2-8 GiB, history kept until compaction), so above about 50k objects use the
kafka or nats-kv store; a base above 8 MiB logs a warning saying so.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

import orjson

from bridge.checkpoint.chunks import Doubt, Manifest, fenced, join, seal, split
from bridge.checkpoint.codec import CheckpointError, decode_base
from bridge.checkpoint.store import Stored
from bridge.errors import ApiError, TransportError
from bridge.kube.auth import own_namespace
from bridge.kube.transport import Transport, get_object
from bridge.watch.selection import CHECKPOINT_LABEL as LABEL

log = logging.getLogger(__name__)

CHUNK = 700 * 1024
MAX_OBJECT = 1024 * 1024 - 16 * 1024  # raw bytes the API server takes in one ConfigMap, less slack
WARN_BASE = 8 * 1024 * 1024
OF_LABEL = "kube-event-bridge.io/checkpoint-of"
GENERATION_LABEL = "kube-event-bridge.io/generation"
MANIFEST_GENERATION = "manifest"
_PAGE = 100  # objects per LIST page (segments are small; all of them stay near the base size)


class ConfigMapStore:
    segment_limit = 700 * 1024
    # a load LISTs them, 100 per request; at 5 appends/s, 1000 segments put 200 s between
    # two rewrites of the base (100k objects: 7.3 MB / 200 s; with 100, every 20 s)
    max_segments = 4000  # a load LISTs them, 100 a request
    default_min_write_interval = 0.2  # every write is an API request: at most 5/s

    def __init__(self, transport: Transport, namespace: str, checkpoint_id: str) -> None:
        self.transport = transport
        self.namespace = namespace or own_namespace()
        self.name = f"kube-event-bridge-{checkpoint_id}"
        self.description = f"configmap {self.namespace}/{self.name}"
        self._base = f"/api/v1/namespaces/{self.namespace}/configmaps"
        self._of = (self.name if len(self.name) <= 63 else
                    "sha256-" + hashlib.sha256(self.name.encode()).hexdigest()[:40])
        self._collection = True  # deletecollection allowed (until a 403 says otherwise)
        self._warned = False
        self._reset()

    def _reset(self) -> None:
        self._resource_version: str | None = None  # of the manifest; None: no manifest yet
        self._current: Manifest | None = None
        self._next = 0  # the index of the next segment
        self._doubt: Doubt | None = None
        self._unlabelled: set[str] = set()  # 0.1.0 chunks: deleted by name
        self._stale: set[str] = set()  # labelled, outside the current state

    # ---- load --------------------------------------------------------------------------------

    async def load(self) -> Stored:
        """The current base and its segments. Also (re)reads the manifest's resourceVersion
        and the next segment index: a store that was fenced or failed is usable again."""
        for attempt in range(3):
            self._reset()
            try:
                return await self._load()
            except ApiError as exc:  # a LIST continue token older than etcd's history
                if not exc.gone or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _load(self) -> Stored:
        objects = await self._list()
        manifest_cm = objects.get(self.name) or await self._get(self.name)
        manifest = base = None
        if manifest_cm is not None:
            self._resource_version = manifest_cm["metadata"]["resourceVersion"]
            manifest = Manifest.loads(_manifest_value(manifest_cm))
            chunks = []
            for index in range(manifest.chunks):
                name = self._chunk_name(manifest, index)
                cm = objects.get(name) if manifest.version >= 2 else await self._get(name)
                if cm is None:
                    raise CheckpointError(f"checkpoint chunk {name} of {self.description} "
                                          "is missing")
                chunks.append(_binary(cm, "chunk"))
            base = join(manifest, chunks)
            if manifest.version < 2:  # 0.1.0: unlabelled; replaced by the first rebase
                self._unlabelled.update(self._chunk_name(manifest, i)
                                        for i in range(manifest.chunks))
        self._current = manifest
        segments: list[bytes] = []
        first = index = manifest.first if manifest else 0
        while (cm := objects.get(self._segment_name(index))) is not None:
            if "seal" not in (cm.get("data") or {}):
                segments.append(_binary(cm, "segment"))
            index += 1
        self._next = index
        keep = {self.name, *(self._segment_name(i) for i in range(max(0, first - 1), index))}
        if manifest is not None:
            keep.update(self._chunk_name(manifest, i) for i in range(manifest.chunks))
        self._stale = set(objects) - keep
        return Stored(base or b"", segments)

    async def _list(self) -> dict[str, dict[str, Any]]:
        """Every labelled object of this checkpoint: one consistent snapshot, paginated."""
        found: dict[str, dict[str, Any]] = {}
        params = {"labelSelector": f"{OF_LABEL}={self._of}", "limit": str(_PAGE)}
        while True:
            page = orjson.loads(await self.transport.request("GET", self._base, params=params))
            for item in page.get("items") or ():
                found[item["metadata"]["name"]] = item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found
            params["continue"] = token

    async def _get(self, name: str) -> dict[str, Any] | None:
        return await get_object(self.transport, f"{self._base}/{name}")

    # ---- append ------------------------------------------------------------------------------

    async def append(self, segment: bytes) -> None:
        await self._settle()
        if len(segment) > MAX_OBJECT:
            raise CheckpointError(f"journal segment of {len(segment)} bytes is larger than a "
                                  f"ConfigMap holds ({MAX_OBJECT})")
        name = self._segment_name(self._next)
        await self._create(name, self._current.prefix if self._current else "none",
                           Doubt("segment", name, segment),
                           binaryData={"segment": base64.b64encode(segment).decode()})
        self._next += 1
        await self._still_current()

    async def _still_current(self) -> None:
        """After an append: a rebase by another writer (whose seal this writer's index did not
        meet, because that rebase came after this writer's last write and its cleanup freed
        the index) has changed the manifest."""
        cm = await self._get(self.name)
        version = cm["metadata"]["resourceVersion"] if cm else None
        if version != self._resource_version:
            raise fenced(self.description, "the manifest was changed by another writer")

    # ---- rebase ------------------------------------------------------------------------------

    async def rebase(self, base: bytes) -> None:
        await self._settle()
        old = self._current
        parts = split(base, CHUNK)
        new = Manifest.after(old, base, len(parts), first=self._next + 1)
        # 1. seal the journal being replaced: a writer still appending to it is refused
        name, marker = self._segment_name(self._next), seal(new)
        await self._create(name, new.prefix, Doubt("seal", name, marker),
                           data={"seal": marker.decode()})
        self._next += 1
        # 2. the chunks (new names: a crash from here on leaves the previous state intact)
        for index, part in enumerate(parts):
            await self._create(self._chunk_name(new, index), new.prefix, None,
                               binaryData={"chunk": base64.b64encode(part).decode()})
        # 3. the manifest, compare-and-swap: this makes the new base current
        await self._put_manifest(new)
        self._current = new
        self._warn_size(base, len(parts))
        # 4. everything older is unreachable now
        await self._delete_older(old, new)

    async def _put_manifest(self, new: Manifest) -> None:
        value = new.dumps()
        body = orjson.loads(self._body(self.name, MANIFEST_GENERATION,
                                       data={"manifest": value.decode()}))
        try:
            if self._resource_version is None:
                answer = await self.transport.request("POST", self._base,
                                                      body=orjson.dumps(body))
            else:
                body["metadata"]["resourceVersion"] = self._resource_version
                answer = await self.transport.request("PUT", f"{self._base}/{self.name}",
                                                      body=orjson.dumps(body))
        except ApiError as exc:
            if exc.status == 409:
                raise fenced(self.description, "the manifest was changed by another writer "
                             f"({exc.reason})") from exc
            if exc.status >= 500:
                self._doubt = Doubt("manifest", self.name, value, new)
            raise
        except TransportError:
            self._doubt = Doubt("manifest", self.name, value, new)
            raise
        self._resource_version = orjson.loads(answer)["metadata"]["resourceVersion"]

    async def _delete_older(self, old: Manifest | None, new: Manifest) -> None:
        """Delete every object of this checkpoint outside ``new`` (its chunks, its seal and
        what comes after) and the manifest: one deletecollection by label, object by object
        without that RBAC verb (and for 0.1.0's unlabelled chunks). A failure is logged and
        retried at the next rebase: nothing reads these objects any more."""
        seal_index = new.first - 1
        self._stale.update(self._segment_name(i)
                           for i in range((max(0, old.first - 1) if old else 0), seal_index))
        if old is not None:
            self._stale.update(self._chunk_name(old, i) for i in range(old.chunks))
        try:
            if self._collection:
                try:
                    await self.transport.request("DELETE", self._base, params={
                        "labelSelector": f"{OF_LABEL}={self._of},{GENERATION_LABEL} notin "
                                         f"({new.prefix},{MANIFEST_GENERATION})"})
                    self._stale.clear()
                except ApiError as exc:
                    if not exc.forbidden:
                        raise
                    self._collection = False
                    log.warning("checkpoint %s: deletecollection on configmaps is forbidden: "
                                "deleting old checkpoint objects one by one (grant the verb "
                                "for one request per rebase)", self.description)
            for name in sorted(self._unlabelled | self._stale):
                await self._delete(name)
                self._unlabelled.discard(name)
                self._stale.discard(name)
        except (ApiError, TransportError) as exc:
            log.warning("checkpoint %s: objects of replaced bases not deleted yet (%s); "
                        "retried at the next rebase", self.description, exc)

    async def _delete(self, name: str) -> None:
        try:
            await self.transport.request("DELETE", f"{self._base}/{name}")
        except ApiError as exc:
            if not exc.not_found:
                raise

    # ---- writes of unknown outcome -----------------------------------------------------------

    async def _create(self, name: str, generation: str, doubt: Doubt | None,
                      **content: Any) -> None:
        """POST a new object; 409 means another writer took the name: fenced. A failure that
        may have created it anyway leaves ``doubt`` to check before the next write."""
        try:
            await self.transport.request("POST", self._base,
                                         body=self._body(name, generation, **content))
        except ApiError as exc:
            if exc.status == 409:
                raise fenced(self.description, f"{name} exists already") from exc
            if exc.status >= 500:
                self._doubt = doubt
            raise
        except TransportError:
            self._doubt = doubt
            raise

    async def _settle(self) -> None:
        """Before a write: find out what the last write of unknown outcome did."""
        doubt = self._doubt
        if doubt is None:
            return
        cm = await self._get(doubt.key)
        self._doubt = None
        if doubt.kind == "manifest":
            assert doubt.manifest is not None
            version = cm["metadata"]["resourceVersion"] if cm else None
            if cm is not None and _manifest_value(cm) == doubt.value:  # it landed
                old, self._current = self._current, doubt.manifest
                self._resource_version = version
                self._next = max(self._next, doubt.manifest.first)
                await self._delete_older(old, doubt.manifest)
            elif version != self._resource_version:
                raise fenced(self.description, "the manifest was changed by another writer")
            return
        if cm is None:
            return  # not written
        data = cm.get("data") or {}
        written = (str(data.get("seal", "")).encode() if doubt.kind == "seal"
                   else _binary(cm, "segment") if "seal" not in data else b"")
        if written != doubt.value:
            raise fenced(self.description, f"{doubt.key} was written by another writer")
        self._next += 1  # it landed

    # ---- names and bodies --------------------------------------------------------------------

    def _chunk_name(self, manifest: Manifest, index: int) -> str:
        return f"{self.name}-{manifest.prefix}-{index}"

    def _segment_name(self, index: int) -> str:
        return f"{self.name}-j{index}"

    def _body(self, name: str, generation: str, **content: Any) -> bytes:
        labels = {LABEL: "true", "app.kubernetes.io/managed-by": "kube-event-bridge",
                  OF_LABEL: self._of, GENERATION_LABEL: generation}
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": labels}
        return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                             **content})

    def _warn_size(self, base: bytes, chunks: int) -> None:
        if self._warned or len(base) <= WARN_BASE:
            return
        self._warned = True
        try:
            objects = str(sum(len(s.checkpoint.inventory) for s in decode_base(base).values()))
        except CheckpointError:
            objects = "?"
        log.warning("checkpoint %s: the base is %.1f MiB, %s objects in %d ConfigMaps, "
                    "rewritten at every compaction; above about 50k objects use the kafka or "
                    "nats-kv store", self.description, len(base) / 2**20, objects, chunks + 1)

    async def close(self) -> None:
        return None


def _manifest_value(cm: dict[str, Any]) -> bytes:
    try:
        return str((cm.get("data") or {})["manifest"]).encode()
    except KeyError as exc:
        raise CheckpointError(f"ConfigMap {cm['metadata']['name']} holds no manifest") from exc


def _binary(cm: dict[str, Any], key: str) -> bytes:
    return base64.b64decode((cm.get("binaryData") or {}).get(key, ""))
