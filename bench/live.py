"""Live: writes to the real API server at steady rates; end-to-end latency from the write's
acknowledgement to the sink's acknowledgement, and the highest rate kept up with."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson
from kubernetes import config as k8s_config

from bridge.delivery.pipeline import Delivery
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.watch.engine import WatchEngine
from bridge.watch.selection import Selection
from sinks.base import SinkError
from sinks.null import NullSettings, NullSink
from tests.kubetools import crd_manifest, create_crd, ensure_namespace


class RecordingSink(NullSink):
    def __init__(self) -> None:
        super().__init__(NullSettings(name="recording"))
        self.acked: dict[str, float] = {}

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        now = time.monotonic()
        for event in events:
            self.acked[event.id] = now
        return await super().send(events)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(kubeconfig: Path, rates: tuple[int | None, ...] = (100, 500, None),
              seconds: float = 10.0, concurrency: int = 32) -> list[dict[str, float]]:
    group = f"live{uuid.uuid4().hex[:6]}.bench.keb.example.com"
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    ensure_namespace(api, "bench")
    await asyncio.to_thread(create_crd, api, crd_manifest(group, "pings", "Ping"))
    transport = HttpTransport(auth.load(str(kubeconfig)))
    writer = HttpTransport(auth.load(str(kubeconfig)))
    engine = WatchEngine(transport, Selection(include=(f"{group}/*",)))
    sink = RecordingSink()
    delivery = Delivery(engine, EventBuilder(), [sink])
    await delivery.start()
    await engine.start()
    await engine.wait_synced()
    path = f"/apis/{group}/v1/namespaces/bench/pings"
    names = [f"p{i}" for i in range(200)]
    created: set[str] = set()
    results = []
    for rate in rates:
        written: dict[str, float] = {}
        errors = 0
        stop_at = time.monotonic() + seconds
        gate = asyncio.Semaphore(concurrency)
        counter = 0

        async def write(n: int, written: dict[str, float], gate: asyncio.Semaphore) -> None:
            nonlocal errors
            name = names[n % len(names)]
            try:
                if name in created:
                    body = await writer.request(
                        "PATCH", f"{path}/{name}", body=orjson.dumps({"spec": {"n": n}}),
                        content_type="application/merge-patch+json")
                else:
                    created.add(name)
                    body = await writer.request("POST", path, body=orjson.dumps({
                        "apiVersion": f"{group}/v1", "kind": "Ping",
                        "metadata": {"name": name}, "spec": {"n": n}}))
                meta = orjson.loads(body)["metadata"]
                written[f"{meta['uid']}/{meta['resourceVersion']}"] = time.monotonic()
            except Exception:
                errors += 1
            finally:
                gate.release()

        started = time.monotonic()
        tasks = []
        while time.monotonic() < stop_at:
            await gate.acquire()
            tasks.append(asyncio.create_task(write(counter, written, gate)))
            counter += 1
            if rate is not None:
                next_at = started + counter / rate
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        drain_until = time.monotonic() + 30
        while time.monotonic() < drain_until and not all(i in sink.acked for i in written):
            await asyncio.sleep(0.05)
        latencies = [sink.acked[i] - t for i, t in written.items() if i in sink.acked]
        lost = sum(1 for i in written if i not in sink.acked)
        results.append({
            "target_rate": float(rate or 0), "write_rate": len(written) / elapsed,
            "writes": float(len(written)), "write_errors": float(errors),
            "undelivered": float(lost),
            "p50_ms": 1000 * statistics.median(latencies) if latencies else -1.0,
            "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else -1.0,
        })
        print(f"  live {rate or 'max'}/s: {results[-1]}", flush=True)
    await engine.stop()
    await delivery.stop()
    await transport.close()
    await writer.close()
    return results
