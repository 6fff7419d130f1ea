"""Simulation (issue 14): how the first sync's cost grows with the number of kinds, beyond
what the local API server can hold, with 1 and 2 worker processes.

A stand-in API server (a separate process, aiohttp on loopback) serves K CRDs, each with M
small namespaced objects (paginated lists; watches stay open and quiet; the streaming
watch-list is refused so lists are paginated as against an older server). The daemon
(``kube-event-bridge run``, null sink, file checkpoint) syncs everything: the clock runs
from process start until every object's snapshot event is published (summed over the
workers from the merged ``/metrics``); reported with the API requests (from the bridge's
own counter), each process's RSS and the CPU seconds of the bridge's processes.

    python -m bench.simulate serve PORT KINDS OBJECTS
    python -m bench.simulate KINDS OBJECTS [KINDS OBJECTS ...]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiohttp import web

from bench.workers import PUBLISHED, REQUESTS, _cpu_seconds, _published, _rss_mib, _tree
from tests.env.procs import free_port

GROUP = "sim.example.com"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def crd(i: int) -> dict[str, object]:
    group = f"k{i:05d}.{GROUP}"
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"items.{group}", "uid": f"crd-{i}", "resourceVersion": "1"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "items", "kind": f"Item{i}"},
                     "versions": [{"name": "v1", "served": True, "storage": True}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]}}


def item(i: int, n: int) -> dict[str, object]:
    group = f"k{i:05d}.{GROUP}"
    return {"apiVersion": f"{group}/v1", "kind": f"Item{i}",
            "metadata": {"name": f"o{n}", "namespace": f"ns{n % 10}", "uid": f"{i}-{n}",
                         "resourceVersion": str(2 + n), "labels": {"app": "sim"}},
            "spec": {"replicas": n % 5, "image": f"registry/app:{n}"}}


def build_app(kinds: int, objects: int) -> web.Application:
    def page(make: list[int] | range, build: object, request: web.Request) -> bytes:
        limit = int(request.query.get("limit") or 0) or len(make)
        start = int(request.query.get("continue") or 0)
        chunk = make[start:start + limit]
        meta: dict[str, str] = {"resourceVersion": "1"}
        if start + limit < len(make):
            meta["continue"] = str(start + limit)
        return orjson.dumps({"items": [build(x) for x in chunk],  # type: ignore[operator]
                             "metadata": meta})

    async def collection(request: web.Request) -> web.StreamResponse:
        if request.query.get("sendInitialEvents") == "true":
            return web.Response(status=422, text='{"kind":"Status","code":422}')
        if request.query.get("watch") in ("1", "true"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            try:
                await asyncio.sleep(3600)  # open and quiet
            except (ConnectionError, asyncio.CancelledError):
                pass
            return response
        if request.path == CRDS:
            body = page(range(kinds), crd, request)
        else:
            i = int(request.match_info["group"].split(".")[0][1:])
            body = page(range(objects), lambda n: item(i, n), request)
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get(CRDS, collection)
    app.router.add_get("/apis/{group}/v1/items", collection)
    return app


@dataclass
class Point:
    kinds: int
    objects: int
    workers: int
    seconds: float
    api_requests: float
    rss_mib: list[float]
    cpu_seconds: float


def measure(kinds: int, objects: int, workers: int) -> Point:
    folder = Path(tempfile.mkdtemp(prefix="keb-sim-"))
    ports: set[int] = set()
    server_port, port = free_port(ports), free_port(ports)
    server = subprocess.Popen([sys.executable, "-m", "bench.simulate", "serve",
                               str(server_port), str(kinds), str(objects)])
    kubeconfig = folder / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "s",
        "clusters": [{"name": "s", "cluster": {"server": f"http://127.0.0.1:{server_port}"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}]}))
    config = {"cluster": "sim", "kubeconfig": str(kubeconfig),
              "http": {"address": "127.0.0.1", "port": port},
              "sinks": [{"name": "out", "type": "null", "batch_size": 5000}],
              "checkpoint": {"store": "file", "path": str(folder / "checkpoint")},
              "logging": {"level": "warning"}, "sharding": {"workers": workers}}
    (folder / "bridge.yaml").write_text(json.dumps(config))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{server_port}{CRDS}?limit=1",
                                       timeout=1)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                                 str(folder / "bridge.yaml")], stderr=subprocess.DEVNULL)
        try:
            while True:
                metrics = _metrics(port)
                if _published(metrics, PUBLISHED) >= kinds * objects:
                    break
                if proc.poll() is not None or time.monotonic() - started > 1800:
                    raise RuntimeError(f"{workers} worker(s) did not sync {kinds} kinds")
                time.sleep(0.25)
            seconds = time.monotonic() - started
            tree = _tree(proc.pid)
            point = Point(kinds, objects, workers, seconds,
                          _published(_metrics(port), REQUESTS),
                          [_rss_mib(pid) for pid in tree],
                          sum(_cpu_seconds(pid) for pid in tree))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    return point


def _metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def run(sizes: list[tuple[int, int]]) -> list[Point]:
    points = []
    for kinds, objects in sizes:
        for workers in (1, 2):
            p = measure(kinds, objects, workers)
            points.append(p)
            print(f"  {kinds:,} kinds x {objects} objects, {workers} worker(s): synced in "
                  f"{p.seconds:.1f}s from start, {p.api_requests:,.0f} API requests, CPU "
                  f"{p.cpu_seconds:.0f}s, RSS {' + '.join(f'{m:.0f}' for m in p.rss_mib)} MiB",
                  flush=True)
    return points


def main() -> None:
    if sys.argv[1] == "serve":
        port, kinds, objects = (int(a) for a in sys.argv[2:5])
        web.run_app(build_app(kinds, objects), host="127.0.0.1", port=port, print=None,
                    access_log=None)
        return
    numbers = [int(a) for a in sys.argv[1:]]
    run(list(zip(numbers[::2], numbers[1::2], strict=True)))


if __name__ == "__main__":
    main()
