"""Scale: N CRD kinds x M objects on the real API server; time until everything is synced,
API requests and connections it took, idle CPU afterwards."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bridge import metrics
from bridge.delivery.pipeline import Delivery
from bridge.events.builder import EventBuilder
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.engine import WatchEngine
from bridge.watch.selection import Selection
from sinks.null import NullSettings, NullSink
from tests.kubetools import crd_manifest, create_crd, ensure_namespace


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def api_requests() -> float:
    return sum(s.value for m in metrics.api_requests.collect() for s in m.samples
               if s.name.endswith("_total"))


def populate(kubeconfig: Path, kinds: int, objects: int) -> str:
    suffix = f"s{uuid.uuid4().hex[:5]}.bench.keb.example.com"
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    ensure_namespace(api, "bench")
    objs = k8s.CustomObjectsApi(api)

    def one_kind(i: int) -> None:
        group = f"k{i:03d}.{suffix}"
        create_crd(api, crd_manifest(group, "items", f"Item{i}"), timeout=120)
        for n in range(objects):
            objs.create_namespaced_custom_object(group, "v1", "bench", "items", {
                "apiVersion": f"{group}/v1", "kind": f"Item{i}",
                "metadata": {"name": f"o{n}"}, "spec": {"n": n}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one_kind, range(kinds)))
    return suffix


async def run(kubeconfig: Path, kinds: int = 500, objects: int = 20) -> dict[str, float]:
    started = time.perf_counter()
    suffix = await asyncio.to_thread(populate, kubeconfig, kinds, objects)
    populated = time.perf_counter() - started
    print(f"  scale: created {kinds} CRDs x {objects} objects in {populated:.0f}s", flush=True)
    transport = HttpTransport(auth.load(str(kubeconfig)))
    engine = WatchEngine(transport, Selection(include=(f"*.{suffix}/*",)))
    sink = NullSink(NullSettings(name="null"))
    delivery = Delivery(engine, EventBuilder(), [sink])
    requests_before = api_requests()
    wall = time.perf_counter()
    await delivery.start()
    await engine.start()
    await engine.wait_synced()
    while sink.count < kinds * objects:
        await asyncio.sleep(0.01)
    synced = time.perf_counter() - wall
    requests = api_requests() - requests_before
    sockets = open_sockets()
    cpu = time.process_time()
    await asyncio.sleep(10)
    idle = (time.process_time() - cpu) / 10
    await engine.stop()
    await delivery.stop()
    await transport.close()
    return {"kinds": float(kinds), "objects": float(kinds * objects),
            "seconds_to_synced": synced, "api_requests": requests, "open_sockets": sockets,
            "idle_cpu_fraction": idle, "populate_seconds": populated}
