"""Memory: inventory bytes per object (tracemalloc) and the bridge's RSS after a snapshot of
N objects, each measured in a fresh process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import tracemalloc
import uuid

from bench.pipeline import ReplayServer
from bench.stream import GROUP, KINDS


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def inventory_bytes_per_object(count: int) -> float:
    from bridge.watch.inventory import Entry, Inventory

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    inv = Inventory()
    for n in range(count):
        inv.put(str(uuid.uuid4()), Entry(str(1_000_000 + n), f"team-{n % 50}",
                                         f"widget-{n:07d}"))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(inv) == count
    return (after - before) / count


async def engine_rss(objects: int) -> dict[str, float]:
    from bridge.delivery.pipeline import Delivery
    from bridge.events.builder import EventBuilder
    from bridge.kube import auth
    from bridge.kube.transport import HttpTransport
    from bridge.watch.engine import WatchEngine
    from bridge.watch.selection import Selection
    from sinks.null import NullSettings, NullSink

    with ReplayServer(0, objects) as server:
        base = rss_bytes()
        transport = HttpTransport(auth.load(str(server.kubeconfig)))
        engine = WatchEngine(transport, Selection(
            crds=False, builtins=(f"{GROUP}/v1/{KINDS[0][0]}",)))
        sink = NullSink(NullSettings(name="null"))
        delivery = Delivery(engine, EventBuilder(), [sink])
        started = time.perf_counter()
        await delivery.start()
        await engine.start()
        await engine.wait_synced()
        while sink.count < objects:
            await asyncio.sleep(0.01)
        synced = time.perf_counter() - started
        await asyncio.sleep(0.5)
        rss = rss_bytes()
        await engine.stop()
        await delivery.stop()
        await transport.close()
    return {"objects": objects, "rss_mb": rss / 2**20, "rss_growth_mb": (rss - base) / 2**20,
            "snapshot_seconds": synced}


def child(kind: str, count: int) -> None:
    if kind == "inventory":
        print(json.dumps({"objects": count,
                          "inventory_bytes_per_object": inventory_bytes_per_object(count)}))
    else:
        print(json.dumps(asyncio.run(engine_rss(count))))


def measure(kind: str, count: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.memory", kind, str(count)],
                         capture_output=True, text=True, check=True, timeout=1200)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]))
