"""Live: writes to the real API server at steady rates from a separate process
(``bench.livewriter``); end-to-end latency from the write's acknowledgement to the sink's
acknowledgement (wall clock, same machine), and the highest rate kept up with."""

from __future__ import annotations

import asyncio
import statistics
import sys
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
        now = time.time()
        for event in events:
            self.acked[event.id] = now
        return await super().send(events)


async def write(kubeconfig: Path, path: str, group: str, rate: int | None, seconds: float,
                concurrency: int, phase: str) -> tuple[dict[str, float], float, float]:
    """Run ``bench.livewriter``: (event id -> time its write was acknowledged, writes/s,
    failed writes)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.livewriter", str(kubeconfig), path, group,
        str(rate or 0), str(seconds), str(concurrency), phase, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    written: dict[str, float] = {}
    summary: dict[str, float] = {}
    async for line in proc.stdout:
        record = orjson.loads(line)
        if record.get("done"):
            summary = record
        else:
            written[record["id"]] = record["t"]
    await proc.wait()
    return (written, len(written) / float(summary.get("elapsed", seconds)),
            float(summary.get("errors", 0)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(kubeconfig: Path, rates: tuple[int | None, ...] = (100, 500, None),
              seconds: float = 10.0, concurrency: int = 32,
              ) -> tuple[float, list[dict[str, float]]]:
    """(the API server's flat-out write rate with no bridge running, each rate's results)."""
    group = f"live{uuid.uuid4().hex[:6]}.bench.keb.example.com"
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    ensure_namespace(api, "bench")
    await asyncio.to_thread(create_crd, api, crd_manifest(group, "pings", "Ping"))
    path = f"/apis/{group}/v1/namespaces/bench/pings"
    transport = HttpTransport(auth.load(str(kubeconfig)))
    engine = WatchEngine(transport, Selection(include=(f"{group}/*",)))
    sink = RecordingSink()
    delivery = Delivery(engine, EventBuilder(), [sink])
    await delivery.start()
    await engine.start()
    await engine.wait_synced()
    results = []
    for rate in rates:
        written, write_rate, errors = await write(kubeconfig, path, group, rate, seconds,
                                                  concurrency, f"r{rate or 'max'}")
        drain_until = time.monotonic() + 30
        while time.monotonic() < drain_until and not all(i in sink.acked for i in written):
            await asyncio.sleep(0.05)
        latencies = [sink.acked[i] - t for i, t in written.items() if i in sink.acked]
        results.append({
            "target_rate": float(rate or 0),
            "write_rate": write_rate, "writes": float(len(written)), "write_errors": errors,
            "undelivered": float(sum(1 for i in written if i not in sink.acked)),
            "p50_ms": 1000 * statistics.median(latencies) if latencies else -1.0,
            "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else -1.0,
        })
        print(f"  live {rate or 'max'}/s: {results[-1]}", flush=True)
    await engine.stop()
    await delivery.stop()
    await transport.close()
    _, alone, _ = await write(kubeconfig, path, group, None, seconds, concurrency, "alone")
    print(f"  API server alone (bridge stopped), flat out: {alone:,.0f} writes/s", flush=True)
    return alone, results
