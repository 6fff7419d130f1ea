"""``configmap``: ConfigMaps in the bridge's namespace (for in-cluster use, small clusters).

Chunks ``{id}-{generation}-{i}`` (binaryData, under the 1 MiB object limit), then the
manifest ConfigMap ``{id}`` updated with its resourceVersion (optimistic concurrency fences a
second writer). All carry the label ``kube-event-bridge.io/checkpoint=true``; the engine
excludes that label when it watches ConfigMaps, so the bridge never re-emits its own writes.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from bridge.checkpoint.chunks import Manifest, digest, join, split
from bridge.checkpoint.codec import CheckpointError
from bridge.errors import ApiError
from bridge.kube.auth import own_namespace
from bridge.kube.transport import Transport
from bridge.watch.selection import CHECKPOINT_LABEL as LABEL

CHUNK = 700 * 1024  # base64 grows it by a third: stays under 1 MiB per object
class ConfigMapStore:
    def __init__(self, transport: Transport, namespace: str, checkpoint_id: str) -> None:
        self.transport = transport
        self.namespace = namespace or own_namespace()
        self.name = f"kube-event-bridge-{checkpoint_id}"
        self.description = f"configmap {self.namespace}/{self.name}"
        self._base = f"/api/v1/namespaces/{self.namespace}/configmaps"
        self._resource_version: str | None = None
        self._generation = 0
        self._chunks = 0

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = orjson.loads(
                await self.transport.request("GET", f"{self._base}/{name}"))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise
        return found

    async def load(self) -> bytes:
        manifest_cm = await self._get(self.name)
        if manifest_cm is None:
            self._resource_version = None
            return b""
        self._resource_version = manifest_cm["metadata"]["resourceVersion"]
        manifest = Manifest.loads((manifest_cm.get("data") or {})["manifest"].encode())
        self._generation, self._chunks = manifest.generation, manifest.chunks
        chunks = []
        for index in range(manifest.chunks):
            cm = await self._get(self._chunk_name(manifest.generation, index))
            if cm is None:
                raise CheckpointError(f"checkpoint chunk {index} of {self.name} is missing")
            chunks.append(base64.b64decode((cm.get("binaryData") or {}).get("chunk", "")))
        return join(manifest, chunks)

    def _chunk_name(self, generation: int, index: int) -> str:
        return f"{self.name}-{generation}-{index}"

    def _body(self, name: str, **content: Any) -> bytes:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace,
                                "labels": {LABEL: "true",
                                           "app.kubernetes.io/managed-by": "kube-event-bridge"}}
        return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                             **content})

    async def save(self, blob: bytes) -> None:
        generation = self._generation + 1
        parts = split(blob, CHUNK)
        for index, part in enumerate(parts):
            await self.transport.request("POST", self._base, body=self._body(
                self._chunk_name(generation, index),
                binaryData={"chunk": base64.b64encode(part).decode()}))
        manifest = {"manifest": Manifest(generation, len(parts), digest(blob)).dumps().decode()}
        try:
            if self._resource_version is None:
                answer = await self.transport.request(
                    "POST", self._base, body=self._body(self.name, data=manifest))
            else:
                body = orjson.loads(self._body(self.name, data=manifest))
                body["metadata"]["resourceVersion"] = self._resource_version
                answer = await self.transport.request(
                    "PUT", f"{self._base}/{self.name}", body=orjson.dumps(body))
        except ApiError as exc:
            if exc.status == 409:
                raise CheckpointError(
                    f"another writer changed {self.description}: this instance is fenced "
                    "off (is a second bridge running with the same checkpoint id?)") from exc
            raise
        self._resource_version = orjson.loads(answer)["metadata"]["resourceVersion"]
        old, old_chunks = self._generation, self._chunks
        self._generation, self._chunks = generation, len(parts)
        for index in range(old_chunks if old else 0):
            try:
                await self.transport.request("DELETE", f"{self._base}/"
                                             f"{self._chunk_name(old, index)}")
            except ApiError as exc:
                if not exc.not_found:
                    raise

    async def close(self) -> None:
        return None
