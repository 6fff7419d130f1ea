"""Chaos: faults against real servers while a workload runs, every scenario audited from the
consumer side (Kafka topics and the JetStream stream read back from the beginning).

``make test`` runs a short version of each scenario; ``make chaos`` (CHAOS=full) runs the
full set (thousands of changes, 20 kills, 60 s broker outages) and ends with one summary
line."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.auditor import Report
from tests.env.world import Endpoints, World, write_kubeconfig
from tests.kubetools import crd_manifest, create_crd, delete_crd
from tests.rig import Rig, watching_again
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.world

FULL = os.environ.get("CHAOS") == "full"
CHANGES = 3000 if FULL else 300  # per scenario
KILLS = 20 if FULL else 3
OUTAGE = 60.0 if FULL else 10.0
RESULTS: list[tuple[str, Report, Report, float]] = []


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    if not RESULTS:
        return
    print(f"\nchaos ({'full' if FULL else 'short'}): scenario | changes | kafka delivered/"
          "lost/dups(same ids) | nats delivered/lost/dups | recovery s")
    for name, kafka, nats, recovery in RESULTS:
        print(f"  {name:28} {kafka.changes:6} | {kafka.delivered:6}/{len(kafka.lost)}/"
              f"{kafka.duplicates}({kafka.duplicate_ids_match}) | {nats.delivered:6}/"
              f"{len(nats.lost)}/{nats.duplicates} | {recovery:.1f}")
    lost = sum(len(k.lost) + len(n.lost) for _, k, n, _ in RESULTS)
    changes = sum(k.changes for _, k, _, _ in RESULTS)
    print(f"CHAOS SUMMARY: {len(RESULTS)} scenarios, {changes} changes, lost {lost}, "
          f"duplicates kafka {sum(k.duplicates for _, k, _, _ in RESULTS)} / nats "
          f"{sum(n.duplicates for _, _, n, _ in RESULTS)}, all duplicate ids match: "
          f"{all(k.duplicate_ids_match and n.duplicate_ids_match for _, k, n, _ in RESULTS)}")


@pytest.fixture
def rig(endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> Rig:
    return Rig(endpoints, kube, tmp_path)


async def finish(rig: Rig, name: str, recovery_from: float | None = None) -> None:
    kafka, nats, took = await rig.settle(timeout=180)
    recovery = time.monotonic() - recovery_from if recovery_from is not None else took
    RESULTS.append((name, kafka, nats, recovery))
    print(f"\n{name}: kafka {kafka.line()}\n{' ' * len(name)}  nats  {nats.line()}")
    for report in (kafka, nats):
        assert report.ok, f"{name}: {report.line()}\n{rig.process.tail()}"
        assert report.duplicate_ids_match, f"{name}: {report.line()}"


async def start(rig: Rig) -> None:
    rig.process.start()
    await asyncio.to_thread(rig.process.wait_ready, 90)


async def stop(rig: Rig) -> None:
    assert await asyncio.to_thread(rig.process.sigterm) == 0, rig.process.tail()


async def test_a_sigkill_at_random_moments(rig: Rig) -> None:
    rng = random.Random(3)
    await start(rig)
    per_round = CHANGES // (KILLS + 1)
    for _ in range(KILLS):
        writer = asyncio.create_task(rig.work.run(per_round))
        await asyncio.sleep(rng.uniform(0.1, 1.5))
        rig.process.sigkill()
        await writer
        await start(rig)
    await rig.work.run(per_round)
    back = time.monotonic()
    await finish(rig, f"a. SIGKILL x{KILLS}", back)
    await stop(rig)


@pytest.mark.parametrize("broker", ["kafka", "nats"])
async def test_b_broker_stopped_then_started(rig: Rig, world: World, broker: str) -> None:
    await start(rig)
    await rig.work.run(CHANGES // 3)
    await asyncio.to_thread(world.stop, broker)
    writer = asyncio.create_task(rig.work.run(CHANGES // 3, pause=OUTAGE / CHANGES))
    down_until = time.monotonic() + OUTAGE
    seen_not_ready = ""
    while time.monotonic() < down_until:
        status, why = rig.process.get("/readyz")
        if status == 503 and "sinks down" in why:
            seen_not_ready = why
        await asyncio.sleep(0.25)
    assert seen_not_ready, "readiness never reported the broker outage"
    await asyncio.to_thread(world.start, broker)
    back = time.monotonic()
    await writer
    await rig.work.run(CHANGES // 3)
    await finish(rig, f"b. {broker} down {OUTAGE:.0f}s", back)
    await stop(rig)


async def test_c_apiserver_restart_and_gap_while_down(rig: Rig, world: World) -> None:
    await start(rig)
    await rig.work.run(CHANGES // 3)
    await asyncio.to_thread(world.restart, "kube-apiserver")
    back = time.monotonic()
    # the restarted server keeps no watch history: changes made before the bridge has
    # re-listed can only arrive as final states (a probe change tells when it is back)
    rig.work.truth.in_gap = True
    await rig.work.run(5)
    await watching_again(rig)
    await rig.work.run(CHANGES // 3)
    await rig.settle()
    await stop(rig)
    rig.work.truth.in_gap = True  # the bridge is down and history is about to be compacted
    await rig.work.run(CHANGES // 3)
    await asyncio.to_thread(world.gap)
    await start(rig)
    await watching_again(rig)
    await rig.work.run(20)
    await finish(rig, "c. apiserver restart + gap", back)
    await stop(rig)


async def test_d_watch_connections_cut_repeatedly(rig: Rig, world: World,
                                                  endpoints: Endpoints) -> None:
    port = int(endpoints.apiserver_url.rsplit(":", 1)[1])
    async with TcpProxy("127.0.0.1", port) as proxy:
        admin = world.admin_kubeconfig()
        user = json.loads(admin.read_text())["users"][0]["user"]
        via_proxy = write_kubeconfig(rig.tmp / "kubeconfig-proxy",
                                     f"https://127.0.0.1:{proxy.port}", endpoints.ca_file, user)
        rig.process = rig.bridge("cut", kubeconfig=str(via_proxy))
        await start(rig)
        writer = asyncio.create_task(rig.work.run(CHANGES, pause=0.005))
        while not writer.done():
            await asyncio.sleep(random.uniform(0.1, 0.6))
            await proxy.cut()
        await writer
        back = time.monotonic()
        cuts = proxy.cuts
        await finish(rig, f"d. {cuts} watch cuts", back)
        await stop(rig)


async def test_e_leader_killed_while_standby_runs(rig: Rig) -> None:
    election = {"enabled": True, "namespace": "default", "name": f"chaos-{rig.stream.lower()}",
                "lease_duration": 4, "renew_deadline": 3, "retry_period": 0.5}
    leader = rig.bridge("leader", leader_election=election)
    standby = rig.bridge("standby", leader_election=election)
    leader.start()
    await asyncio.to_thread(leader.wait_ready, 90)
    standby.start()
    await asyncio.to_thread(standby.wait_ready, 90)
    writer = asyncio.create_task(rig.work.run(CHANGES))
    await asyncio.sleep(2)
    leader.sigkill()
    killed = time.monotonic()
    while "kube_event_bridge_is_leader 1.0" not in standby.get("/metrics")[1]:
        await asyncio.sleep(0.1)
        assert time.monotonic() - killed < 30, standby.tail()
    await writer
    rig.process = standby
    await finish(rig, "e. leader killed", killed)
    await stop(rig)


async def test_f_crd_deleted_with_objects_and_created_under_load(
        rig: Rig, kube: k8s.ApiClient) -> None:
    await start(rig)
    writer = asyncio.create_task(rig.work.run(CHANGES // 2, pause=0.002))
    late = f"late.w{rig.work.suffix}.keb.example.com"
    await asyncio.to_thread(create_crd, kube, crd_manifest(late, "lates", "Late"))
    objs = k8s.CustomObjectsApi(kube)
    for n in range(20):
        made = await asyncio.to_thread(
            objs.create_namespaced_custom_object, late, "v1", rig.work.namespace, "lates",
            {"apiVersion": f"{late}/v1", "kind": "Late", "metadata": {"name": f"l{n}"}})
        rig.work.truth.wrote(made["metadata"]["uid"], made["metadata"]["resourceVersion"])
        rig.work.truth.delete(made["metadata"]["uid"])  # deleted with its CRD below
    await writer
    doomed = rig.work.kinds.pop(1)  # no more writes to it; its objects go with the CRD
    for (k, _), uid in list(rig.work.live.items()):
        if k == 1:
            rig.work.truth.delete(uid)
    rig.work.live = {key: uid for key, uid in rig.work.live.items() if key[0] != 1}
    rig.work.live = {(k - 1 if k > 1 else k, n): uid for (k, n), uid in rig.work.live.items()}
    await asyncio.to_thread(delete_crd, kube, f"{doomed.plural}.{doomed.group}")
    await asyncio.to_thread(delete_crd, kube, f"lates.{late}")
    back = time.monotonic()
    await rig.work.run(CHANGES // 4)
    await finish(rig, "f. CRD deleted / created", back)
    await stop(rig)


async def test_g_checkpoint_directory_unusable(rig: Rig) -> None:
    checkpoint = rig.tmp / "checkpoint"
    aside = rig.tmp / "checkpoint-aside"
    await start(rig)
    await rig.work.run(CHANGES // 3)
    checkpoint.rename(aside)  # keep the last good checkpoint, as a fixed disk would
    checkpoint.write_text("not a directory")  # every save now fails (works even as root)
    await rig.work.run(CHANGES // 3)
    await asyncio.sleep(2)
    _, metrics_text = rig.process.get("/metrics")
    assert 'kube_event_bridge_checkpoint_saves_total{result="error"}' in metrics_text
    assert "CHECKPOINT NOT SAVED" in rig.process.log.read_text()
    rig.process.sigkill()  # the worst moment: the stored checkpoint is stale
    checkpoint.unlink()
    aside.rename(checkpoint)  # the disk is repaired; the checkpoint is the stale one
    back = time.monotonic()
    await start(rig)  # resumes from the stale position: re-sends, loses nothing
    await rig.work.run(CHANGES // 3)
    await finish(rig, "g. checkpoint dir unusable", back)
    await stop(rig)


@pytest.mark.timeout(1800 if FULL else 300)
async def test_h_sigkill_loop_with_gaps(rig: Rig, world: World) -> None:
    """SIGKILLs at random moments, every third one within the first second after start (the
    first one inside the initial snapshot of a larger population), with `tests.env gap`
    (410 on the next start) after every fifth kill, while objects are created, updated and
    deleted: 0 lost (issue 11)."""
    rng = random.Random(17)
    kills = 30 if FULL else 6
    per_round = max(10, CHANGES // kills)
    rig.work.truth.in_gap = True  # until a start is ready only final states are owed
    await rig.work.run(400 if FULL else 120, objects_per_kind=200 if FULL else 60)
    for n in range(kills):
        rig.process.start()
        gap = n % 5 == 4  # history compacted after this round's kill
        if gap:  # from the last point everything was delivered, only final states are owed
            await asyncio.to_thread(rig.process.wait_ready, 90)  # through a compaction:
            if rig.work.truth.in_gap:  # what etcd no longer holds, no bridge can send
                await watching_again(rig)
            await rig.settle()
            rig.work.truth.in_gap = True
        if n % 3 == 0 and not gap:  # the first second: before ready, maybe during a list
            writer = asyncio.create_task(rig.work.run(per_round // 2))
            await asyncio.sleep(rng.uniform(0.05, 1.0))
        else:
            if not gap:
                await asyncio.to_thread(rig.process.wait_ready, 90)
                if rig.work.truth.in_gap:
                    await watching_again(rig)
            writer = asyncio.create_task(rig.work.run(per_round))
            await asyncio.sleep(rng.uniform(0.1, 1.5))
        rig.process.sigkill()
        await writer
        if gap:  # history compacted while the bridge is down
            await rig.work.run(5)
            await asyncio.to_thread(world.gap)
    await start(rig)
    if rig.work.truth.in_gap:
        await watching_again(rig)
    await rig.work.run(per_round)
    back = time.monotonic()
    await finish(rig, f"h. SIGKILL x{kills}, {kills // 5} gaps", back)
    await stop(rig)
