"""``configmap``: ConfigMaps in the bridge's namespace (for in-cluster use, small clusters).

Chunks ``{id}-{generation}-{token}-{i}`` (binaryData, under the 1 MiB object limit), then the
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
from bridge.kube.transport import Transport, get_object
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
        self._current: Manifest | None = None

    async def _get(self, name: str) -> dict[str, Any] | None:
        return await get_object(self.transport, f"{self._base}/{name}")

    async def load(self) -> bytes:
        manifest_cm = await self._get(self.name)
        if manifest_cm is None:
            self._resource_version = None
            return b""
        self._resource_version = manifest_cm["metadata"]["resourceVersion"]
        manifest = self._current = Manifest.loads(
            (manifest_cm.get("data") or {})["manifest"].encode())
        chunks = []
        for index in range(manifest.chunks):
            cm = await self._get(self._chunk_name(manifest, index))
            if cm is None:
                raise CheckpointError(f"checkpoint chunk {index} of {self.name} is missing")
            chunks.append(base64.b64decode((cm.get("binaryData") or {}).get("chunk", "")))
        return join(manifest, chunks)

    def _chunk_name(self, manifest: Manifest, index: int) -> str:
        return f"{self.name}-{manifest.prefix}-{index}"

    def _body(self, name: str, **content: Any) -> bytes:
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace,
                                "labels": {LABEL: "true",
                                           "app.kubernetes.io/managed-by": "kube-event-bridge"}}
        return orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                             **content})

    async def save(self, blob: bytes) -> None:
        parts = split(blob, CHUNK)
        new = Manifest((self._current.generation if self._current else 0) + 1, len(parts),
                       digest(blob))
        for index, part in enumerate(parts):
            await self.transport.request("POST", self._base, body=self._body(
                self._chunk_name(new, index),
                binaryData={"chunk": base64.b64encode(part).decode()}))
        manifest = {"manifest": new.dumps().decode()}
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
        old, self._current = self._current, new
        if old is not None:
            for index in range(old.chunks):
                try:
                    await self.transport.request("DELETE", f"{self._base}/"
                                                 f"{self._chunk_name(old, index)}")
                except ApiError as exc:
                    if not exc.not_found:
                        raise

    async def close(self) -> None:
        return None
