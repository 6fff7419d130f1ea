"""What makes JetStream's `Nats-Msg-Id` deduplication cover a crash: the stream's duplicate
window must outlast the outage. Events in flight at a SIGKILL are re-sent after the restart
with the same ids; the server drops them only while it still remembers those ids.

Measured against the real NATS server: the same crash with a window longer than the outage
(0 duplicates, asserted) and with a window shorter than it (the re-sent events stay as
duplicates; reported)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.auditor import Report, audit
from tests.env.world import Endpoints
from tests.rig import Rig

pytestmark = pytest.mark.world

OUTAGE = 4.0  # seconds between the kill and the restart
KILLS = 3


async def crash_loop(rig: Rig) -> Report:
    for _ in range(KILLS):
        rig.process.start()
        await asyncio.to_thread(rig.process.wait_ready, 90)
        writer = asyncio.create_task(rig.work.run(150))
        await asyncio.sleep(1.0)
        rig.process.sigkill()  # under load: events in flight
        await writer
        await asyncio.sleep(OUTAGE)
    rig.process.start()
    await asyncio.to_thread(rig.process.wait_ready, 90)
    for _ in range(240):
        report = audit(rig.work.truth, await rig.nats())
        if not report.lost:
            break
        await asyncio.sleep(0.5)
    assert rig.process.sigterm() == 0, rig.process.tail()
    return report


def nats_only(endpoints: Endpoints, kube: k8s.ApiClient, tmp: Path, window: float) -> Rig:
    tmp.mkdir()
    rig = Rig(endpoints, kube, tmp)
    js = rig.config["sinks"][1]
    js["duplicate_window"] = window
    rig.config["sinks"] = [js]
    rig.process = rig.bridge("main")
    return rig


async def test_a_duplicate_window_longer_than_the_outage_hides_every_resend(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    covered = await crash_loop(nats_only(endpoints, kube, tmp_path / "long", 120.0))
    uncovered = await crash_loop(nats_only(endpoints, kube, tmp_path / "short", 1.0))
    print(f"\nNATS, {KILLS} SIGKILLs under load, {OUTAGE:.0f} s outage each:\n"
          f"  duplicate_window 120 s: {covered.line()}\n"
          f"  duplicate_window   1 s: {uncovered.line()}")
    assert covered.ok and covered.duplicates == 0, covered.line()
    assert uncovered.ok, uncovered.line()  # never lost; duplicates allowed (same ids)
    assert uncovered.duplicate_ids_match, uncovered.line()
