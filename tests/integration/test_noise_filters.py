"""Noise filters against the real API server, through the daemon: status-subresource,
annotation-only and finalizer updates of a CRD (``status_only``) and heartbeat/last-applied
updates of another (``pointers``) are not sent; spec, label and other status changes, and
the update that begins a deletion, are; the
checkpoint and inventory advance over the suppressed ones (a restart re-sends nothing, and
neither does a re-list after a ``410``: a resume point older than the API server's
history); the metric counts them."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from bridge.checkpoint.file import FileStore
from bridge.checkpoint.replay import restore
from bridge.metrics import REGISTRY
from bridge.watch.engine import EngineOptions, WatchOptions
from bridge.watch.noise import NoiseRule, NoiseRules
from bridge.watch.tracker import StreamCheckpoint
from tests.daemon import BridgeProcess, bridge
from tests.env.world import Endpoints
from tests.integration.harness import Cluster, EngineRun, persisted
from tests.kubetools import crd_manifest, create_crd
from tests.readback import Received, jsonl_all

pytestmark = pytest.mark.world

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class Objects:
    """Writes to one namespaced custom resource through the official client."""

    def __init__(self, api: k8s.ApiClient, group: str, plural: str, kind: str,
                 namespace: str) -> None:
        self.objs = k8s.CustomObjectsApi(api)
        self.group, self.plural, self.kind, self.namespace = group, plural, kind, namespace

    def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{self.group}/v1", "kind": self.kind,
                "metadata": {"name": name}, "spec": spec}
        return dict(self.objs.create_namespaced_custom_object(
            self.group, "v1", self.namespace, self.plural, body))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.objs.patch_namespaced_custom_object(
            self.group, "v1", self.namespace, self.plural, name, body))

    def patch_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return dict(self.objs.patch_namespaced_custom_object_status(
            self.group, "v1", self.namespace, self.plural, name, {"status": status}))


def with_status_subresource(manifest: dict[str, Any]) -> dict[str, Any]:
    for version in manifest["spec"]["versions"]:
        version["subresources"] = {"status": {}}
    return manifest


def received(path: Path) -> list[Received]:
    return jsonl_all(path) if path.exists() else []


def summary(events: list[Received]) -> list[tuple[str, str, str]]:
    return [(e.attributes["type"].rsplit(".", 1)[1], e.attributes["kind"],
             e.attributes["resourceversion"]) for e in events]


async def settle(path: Path, count: int, timeout: float = 30) -> list[Received]:
    """At least ``count`` events, then nothing new for a second."""
    deadline = time.monotonic() + timeout
    while len(received(path)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} events, got {summary(received(path))}")
        await asyncio.sleep(0.1)
    seen = -1
    while seen != len(received(path)):
        seen = len(received(path))
        await asyncio.sleep(1.0)
    return received(path)


def suppressed(process: BridgeProcess, group: str, kind: str, reason: str) -> float:
    _, text = process.get("/metrics")
    pattern = (r'kube_event_bridge_events_suppressed_total\{group="' + re.escape(group) +
               r'",kind="' + kind + r'",reason="' + reason + r'"\} (\S+)')
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def checkpoints(directory: Path) -> dict[str, StreamCheckpoint]:
    store = FileStore(str(directory), "default.checkpoint")
    try:
        stored = await store.load()
    finally:
        await store.close()
    return restore(stored.base, stored.segments)


def rv(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


@pytest.fixture
def namespace(kube: k8s.ApiClient) -> str:
    name = f"noise-{uuid.uuid4().hex[:6]}"
    k8s.CoreV1Api(kube).create_namespace({"metadata": {"name": name}})
    return name


async def test_noise_filters_suppress_and_advance_the_checkpoint(
        endpoints: Endpoints, kube: k8s.ApiClient, namespace: str, tmp_path: Path) -> None:
    group = f"noise{uuid.uuid4().hex[:6]}.keb.example.com"
    await asyncio.to_thread(create_crd, kube, with_status_subresource(
        crd_manifest(group, "widgets", "Widget")))
    await asyncio.to_thread(create_crd, kube, crd_manifest(group, "gauges", "Gauge"))
    widgets = Objects(kube, group, "widgets", "Widget", namespace)
    gauges = Objects(kube, group, "gauges", "Gauge", namespace)
    out = tmp_path / "out.jsonl"
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [f"{group}/*"], "ignore_updates": [
                         {"kind": f"{group}/widgets", "status_only": True},
                         {"kind": f"{group}/Gauge", "pointers": [
                             "/status/heartbeatTime",
                             "/metadata/annotations/" + LAST_APPLIED.replace("/", "~1")]}]},
                     sinks=[{"name": "out", "type": "jsonl", "path": str(out)}])
    process.start()
    await asyncio.to_thread(process.wait_ready)
    w = await asyncio.to_thread(widgets.create, "w", size=1)
    g = await asyncio.to_thread(gauges.create, "g", size=1)
    await settle(out, 2)

    # noise: status through the subresource, an annotation; a heartbeat, last-applied
    for phase in ("Provisioning", "Ready"):
        await asyncio.to_thread(widgets.patch_status, "w", {"phase": phase})
    await asyncio.to_thread(widgets.patch, "w", {"metadata": {"annotations": {"note": "x"}}})
    for beat in ("t1", "t2"):
        await asyncio.to_thread(gauges.patch, "g", {"status": {"heartbeatTime": beat}})
    await asyncio.to_thread(gauges.patch, "g", {"metadata": {"annotations": {
        LAST_APPLIED: '{"spec": {"size": 1}}'}}})
    # changes: a spec (generation 2), a label and another status field
    w_spec = await asyncio.to_thread(widgets.patch, "w", {"spec": {"size": 2}})
    g_label = await asyncio.to_thread(gauges.patch, "g", {"metadata": {"labels": {"a": "b"}}})
    g_phase = await asyncio.to_thread(gauges.patch, "g", {"status": {"phase": "Ready"}})
    # and noise last, so the checkpoint must move over it
    w_last = await asyncio.to_thread(widgets.patch_status, "w", {"phase": "Idle"})
    g_last = await asyncio.to_thread(gauges.patch, "g", {"status": {"heartbeatTime": "t3"}})
    events = await settle(out, 5)
    assert summary(events) == [("added", "Widget", rv(w)), ("added", "Gauge", rv(g)),
                               ("updated", "Widget", rv(w_spec)),
                               ("updated", "Gauge", rv(g_label)),
                               ("updated", "Gauge", rv(g_phase))]
    assert events[2].data["spec"] == {"size": 2}
    assert events[2].data["status"] == {"phase": "Ready"}  # the full current object
    assert events[4].data["status"]["heartbeatTime"] == "t2"
    assert suppressed(process, group, "Widget", "status_only") == 4
    assert suppressed(process, group, "Gauge", "pointers") == 4
    assert await asyncio.to_thread(process.sigterm) == 0

    saved = await checkpoints(tmp_path / "checkpoint")
    streams = {cp.kind: cp for cp in saved.values() if cp.kind in ("Widget", "Gauge")}
    assert set(streams) == {"Widget", "Gauge"}, {k: cp.kind for k, cp in saved.items()}
    for kind, obj, last in (("Widget", w, w_last), ("Gauge", g, g_last)):
        entry = streams[kind].inventory.get(obj["metadata"]["uid"])
        assert entry is not None and entry.resource_version == rv(last), kind
        assert entry.digest, kind
        assert int(streams[kind].resource_version or 0) >= int(rv(last)), kind

    # a restart re-sends nothing
    process.start()
    await asyncio.to_thread(process.wait_ready)
    await asyncio.sleep(2)
    assert len(received(out)) == 5

    # a finalizer is metadata (dropped); a deletion that begins bumps the generation (sent)
    await asyncio.to_thread(widgets.patch, "w", {"metadata": {"finalizers": ["keb.io/hold"]}})
    await asyncio.to_thread(widgets.objs.delete_namespaced_custom_object, group, "v1",
                            namespace, "widgets", "w")
    await asyncio.to_thread(widgets.patch, "w", {"metadata": {"finalizers": None}})
    events = await settle(out, 7)
    assert [t for t, _, _ in summary(events[5:])] == ["updated", "deleted"]
    assert events[5].data["metadata"]["deletionTimestamp"]
    assert suppressed(process, group, "Widget", "status_only") == 1
    assert await asyncio.to_thread(process.sigterm) == 0


async def test_a_relist_after_410_sends_no_update_whose_only_change_is_ignored(
        endpoints: Endpoints, kube: k8s.ApiClient, namespace: str) -> None:
    cluster = Cluster(kube)
    group = cluster.group("noise")
    await asyncio.to_thread(create_crd, kube, with_status_subresource(
        crd_manifest(group, "widgets", "Widget")))
    widgets = Objects(kube, group, "widgets", "Widget", namespace)
    for name in "abc":
        await asyncio.to_thread(widgets.create, name, size=1)
    options = EngineOptions(watch=WatchOptions(noise=NoiseRules((
        NoiseRule(f"{group}/*", status_only=True),))))
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), options=options) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) == 3, what="snapshot")
        await run.quiet(0.3)
        saved = persisted(run.engine.checkpoints())
    await asyncio.to_thread(widgets.patch_status, "a", {"phase": "Ready"})
    await asyncio.to_thread(widgets.patch, "a", {"metadata": {"labels": {"x": "y"}}})
    b = await asyncio.to_thread(widgets.patch, "b", {"spec": {"size": 2}})
    # a resume point older than the API server's history: the watch answers 410 Gone
    stream = saved[f"widgets.{group}"]
    stream.resource_version = "1"
    gone = relists(group, "gone")
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), saved,
                         options=options) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) >= 1, what="the diff")
        await run.quiet(0.5)
        assert [(d.type.value, d.name, d.synthetic, d.resource_version)
                for d in run.deltas] == [("updated", "b", True, rv(b))]
        assert relists(group, "gone") == gone + 1
        entry = run.engine.checkpoints()[f"widgets.{group}"].inventory.get(
            saved_uid(stream, "a"))
        assert entry is not None and entry.resource_version != "1"


def relists(group: str, reason: str) -> float:
    return REGISTRY.get_sample_value("kube_event_bridge_relists_total", {
        "group": group, "kind": "Widget", "reason": reason}) or 0.0


def saved_uid(checkpoint: StreamCheckpoint, name: str) -> str:
    return next(uid for uid, entry in checkpoint.inventory.items() if entry.name == name)
