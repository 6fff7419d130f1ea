"""Worker processes (issue 14): one supervisor, one worker process per shard, against real
servers: a worker killed with SIGKILL under load is restarted from its shard's checkpoint and
nothing is lost; /metrics merges every worker's; SIGTERM drains every worker (exit 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from bridge.sharding.assign import owner
from tests.daemon import BridgeProcess
from tests.env.world import Endpoints
from tests.rig import Rig

pytestmark = pytest.mark.world

CHANGES = 400


def stopped(process: BridgeProcess) -> None:
    """A test that failed half-way leaves no bridge running."""
    if process.proc is not None and process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(10)


def worker_pids(supervisor: int) -> dict[int, int]:
    """shard index -> pid of the supervisor's worker processes."""
    pids: dict[int, int] = {}
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        for child in (task / "children").read_text().split():
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            if b"--shard" in argv:
                pids[int(argv[argv.index(b"--shard") + 1].split(b"/")[0])] = int(child)
    return pids


async def test_a_worker_killed_under_load_loses_nothing(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    rig = Rig(endpoints, kube, tmp_path, sharding={"workers": 2})
    process = rig.process
    process.start()
    try:
        await asyncio.to_thread(process.wait_ready, 120)
        assert process.proc is not None
        pids = worker_pids(process.proc.pid)
        assert sorted(pids) == [0, 1]
        metrics = process.get("/metrics")[1]
        assert 'kube_event_bridge_worker_up{worker="0"} 1.0' in metrics
        assert 'kube_event_bridge_source_up{worker="1"} 1.0' in metrics  # each worker's own
        # the shard owning the first kind's stream is killed (every shard's checkpoint is its own)
        kind = rig.work.kinds[0]
        victim = owner(f"{kind.plural}.{kind.group}", 2)
        writer = asyncio.create_task(rig.work.run(CHANGES, pause=0.002))
        await asyncio.sleep(1.0)
        os.kill(pids[victim], signal.SIGKILL)
        killed = time.monotonic()
        await writer
        while f'kube_event_bridge_worker_restarts_total{{worker="{victim}"}} 1.0' not in \
                process.get("/metrics")[1]:
            assert time.monotonic() - killed < 30, process.tail()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(process.wait_ready, 120)
        assert worker_pids(process.proc.pid)[victim] != pids[victim]
        kafka, nats, _ = await rig.settle(timeout=120)
        print(f"\nworker {victim} killed: kafka {kafka.line()}\n  nats {nats.line()}\n"
              f"  caught up {time.monotonic() - killed:.1f}s after the kill")
        for report in (kafka, nats):
            assert report.ok, f"{report.line()}\n{process.tail()}"
            assert report.duplicate_ids_match, report.line()
        checkpoints = sorted(p.name for p in (tmp_path / "checkpoint").glob("*.checkpoint"))
        assert checkpoints == ["default-shard-0-of-2.checkpoint", "default-shard-1-of-2.checkpoint"]
        assert await asyncio.to_thread(process.sigterm) == 0, process.tail()
    finally:
        stopped(process)


async def test_going_from_two_shards_to_three_hands_the_streams_over(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    """2 workers, stopped; 3 workers with ``previous: 2``: every stream resumes from the
    previous shard's checkpoint: nothing lost, nothing sent again (no snapshot flood)."""
    rig = Rig(endpoints, kube, tmp_path, sharding={"workers": 2})
    two = rig.process
    three = rig.bridge("three", sharding={"workers": 3, "previous": 2})
    try:
        two.start()
        await asyncio.to_thread(two.wait_ready, 120)
        await rig.work.run(CHANGES // 2)
        await rig.settle(timeout=60)
        assert await asyncio.to_thread(two.sigterm) == 0, two.tail()
        await rig.work.run(CHANGES // 4)  # while no bridge runs
        three.start()
        await asyncio.to_thread(three.wait_ready, 120)
        await rig.work.run(CHANGES // 4)
        kafka, nats, _ = await rig.settle(timeout=120)
        print(f"\n2 -> 3 shards: kafka {kafka.line()}\n  nats {nats.line()}")
        for report in (kafka, nats):
            assert report.ok, f"{report.line()}\n{three.tail()}"
            assert report.duplicates == 0, report.line()
        assert "adopted" in three.log.read_text()
        checkpoints = {p.name for p in (tmp_path / "checkpoint").glob("*-of-3.checkpoint")}
        assert len(checkpoints) == 3
        assert await asyncio.to_thread(three.sigterm) == 0, three.tail()
    finally:
        stopped(two)
        stopped(three)
