"""Run the real watch engine against a real API server and record what it emits."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from bridge.checkpoint.codec import encode
from bridge.checkpoint.replay import decode
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.delta import Delta
from bridge.watch.engine import EngineOptions, WatchEngine
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint
from tests.kubetools import crd_manifest, create_crd


def persisted(checkpoints: dict[str, StreamCheckpoint]) -> dict[str, StreamCheckpoint]:
    """A copy as a checkpoint store would give it back."""
    return decode(encode(checkpoints))


class EngineRun:
    """The engine running in the background; every delta is recorded and acked."""

    def __init__(self, kubeconfig: Path, selection: Selection,
                 checkpoints: dict[str, StreamCheckpoint] | None = None,
                 options: EngineOptions | None = None) -> None:
        self.transport = HttpTransport(auth.load(str(kubeconfig)))
        self.engine = WatchEngine(self.transport, selection, options, checkpoints)
        self.deltas: list[Delta] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EngineRun:
        await self.engine.start()
        self._task = asyncio.create_task(self._consume())
        return self

    async def _consume(self) -> None:
        async for deltas in self.engine:
            self.deltas.extend(deltas)
            self.engine.ack(deltas)

    async def __aexit__(self, *exc: object) -> None:
        await self.engine.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.transport.close()

    async def synced(self, timeout: float = 60) -> None:
        async with asyncio.timeout(timeout):
            await self.engine.wait_synced()

    async def wait_for(self, predicate: Callable[[list[Delta]], bool], timeout: float = 20,
                       what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self.deltas):
                    await asyncio.sleep(0.02)
        except TimeoutError:
            seen = [(d.type.value, d.resource.plural, d.name) for d in self.deltas]
            raise AssertionError(f"timed out waiting for {what}; saw {seen}") from None

    async def quiet(self, seconds: float = 1.0) -> None:
        """Wait until no new delta arrived for ``seconds``."""
        count = -1
        while count != len(self.deltas):
            count = len(self.deltas)
            await asyncio.sleep(seconds)

    def of(self, name: str) -> list[Delta]:
        return [d for d in self.deltas if d.name == name]


class Cluster:
    """Writes through the official client, in a thread so the engine keeps running."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self.objs = k8s.CustomObjectsApi(api)
        self.suffix = uuid.uuid4().hex[:6]

    def group(self, stem: str) -> str:
        return f"{stem}.t{self.suffix}.keb.example.com"

    def selection(self) -> Selection:
        return Selection(include=(f"*.t{self.suffix}.keb.example.com/*",))

    async def crd(self, group: str, plural: str, kind: str, **kw: Any) -> None:
        await asyncio.to_thread(create_crd, self.api, crd_manifest(group, plural, kind, **kw))

    async def create(self, group: str, plural: str, name: str, namespace: str | None = None,
                     version: str = "v1", **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{group}/{version}", "kind": "X",
                "metadata": {"name": name}, "spec": spec}
        body["kind"] = await asyncio.to_thread(self._kind, group, plural)
        if namespace:
            return dict(await asyncio.to_thread(
                self.objs.create_namespaced_custom_object, group, version, namespace, plural,
                body))
        return dict(await asyncio.to_thread(
            self.objs.create_cluster_custom_object, group, version, plural, body))

    def _kind(self, group: str, plural: str) -> str:
        crd = k8s.ApiextensionsV1Api(self.api).read_custom_resource_definition(
            f"{plural}.{group}")
        return str(crd.spec.names.kind)

    async def patch(self, group: str, plural: str, name: str, namespace: str | None = None,
                    version: str = "v1", **spec: Any) -> dict[str, Any]:
        body = {"spec": spec}
        if namespace:
            return dict(await asyncio.to_thread(
                self.objs.patch_namespaced_custom_object, group, version, namespace, plural,
                name, body))
        return dict(await asyncio.to_thread(
            self.objs.patch_cluster_custom_object, group, version, plural, name, body))

    async def delete(self, group: str, plural: str, name: str, namespace: str | None = None,
                     version: str = "v1") -> None:
        if namespace:
            await asyncio.to_thread(self.objs.delete_namespaced_custom_object, group, version,
                                    namespace, plural, name)
        else:
            await asyncio.to_thread(self.objs.delete_cluster_custom_object, group, version,
                                    plural, name)


def rv(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])
