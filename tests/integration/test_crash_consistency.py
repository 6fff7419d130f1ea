"""Issue 11's reproductions: whatever reached a sink is known to the next start, whatever
the moment of the crash (before the first save, followed by a 410, in a crash loop).

The checkpoint interval is long on purpose (30 s): nothing here may depend on a periodic
save having happened; only the write-ahead journal covers these cases.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.env.world import Endpoints, World
from tests.rig import Rig

pytestmark = pytest.mark.world

SLOW_SAVES = {"store": "file", "interval": 30}


@pytest.fixture
def rig(endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> Rig:
    return Rig(endpoints, kube, tmp_path,
               checkpoint={**SLOW_SAVES, "path": str(tmp_path / "checkpoint")})


async def start(rig: Rig) -> None:
    rig.process.start()
    await asyncio.to_thread(rig.process.wait_ready, 90)


async def until_delivered(rig: Rig, ids: set[str], timeout: float = 60) -> None:
    """Until every id is in both sinks."""
    deadline = time.monotonic() + timeout
    while True:
        kafka = {r.id for r in await rig.kafka()}
        nats = {r.id for r in await rig.nats()}
        if ids <= kafka and ids <= nats:
            return
        assert time.monotonic() < deadline, (
            f"not delivered: kafka {ids - kafka}, nats {ids - nats}\n{rig.process.tail()}")
        await asyncio.sleep(0.1)


async def create(rig: Rig, name: str) -> tuple[str, str]:
    """Create an object of the first kind; returns (uid, the id of its added event)."""
    await asyncio.to_thread(rig.work._create, 0, name)
    uid = rig.work.live[(0, name)]
    return uid, f"{uid}/{rig.work.truth.states[uid][-1]}"


async def delete(rig: Rig, name: str) -> str:
    uid = rig.work.live[(0, name)]
    await asyncio.to_thread(rig.work._delete, 0, name)
    return f"{uid}/deleted"


async def audited(rig: Rig) -> None:
    kafka, nats, _ = await rig.settle(timeout=60)
    assert await asyncio.to_thread(rig.process.sigterm) == 0, rig.process.tail()
    for report in (kafka, nats):
        assert report.ok, f"{report.line()}\n{rig.process.tail()}"
        assert report.duplicate_ids_match, report.line()


async def test_crash_before_the_first_save_keeps_the_deletion(rig: Rig) -> None:
    """An empty checkpoint directory; X's added reaches the sinks; SIGKILL; X deleted while
    the bridge is down; the next start must emit X's deletion (was: a fresh snapshot that
    never knew X)."""
    await start(rig)
    _, added = await create(rig, "x")
    await until_delivered(rig, {added})
    rig.process.sigkill()
    deleted = await delete(rig, "x")
    await start(rig)
    await until_delivered(rig, {deleted})
    await audited(rig)


async def test_crash_then_gap_keeps_the_deletion(rig: Rig, world: World) -> None:
    """A checkpoint in place; X's added out; SIGKILL; X deleted; history compacted (410 on
    resume); the re-list diff must know X (was: the inventory held only what was saved)."""
    await start(rig)
    await rig.work.run(20)
    assert await asyncio.to_thread(rig.process.sigterm) == 0  # a clean, saved checkpoint
    await start(rig)
    _, added = await create(rig, "x")
    await until_delivered(rig, {added})
    rig.process.sigkill()
    deleted = await delete(rig, "x")
    await asyncio.to_thread(world.gap)
    await start(rig)
    await until_delivered(rig, {deleted})
    await audited(rig)


async def test_crash_loop_makes_progress_and_loses_nothing(rig: Rig) -> None:
    """Six starts, each killed 0.3-2 s after ready while objects are created, updated and
    deleted: every change is delivered, and later starts resume instead of re-snapshotting
    everything."""
    rng = random.Random(5)
    rig.work.truth.in_gap = True  # before the first start only the final states are owed
    await rig.work.run(30)  # objects that exist before the first start: a snapshot
    for _ in range(6):
        await start(rig)
        rig.work.truth.in_gap = False
        writer = asyncio.create_task(rig.work.run(25))
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        rig.process.sigkill()
        await writer
    await start(rig)
    await rig.work.run(10)
    log = rig.process.log.read_text()
    assert log.count("resuming") >= 6, "later starts must resume from the journal"
    await audited(rig)
