"""Replicas (issue 14): three bridge processes claiming six shards through per-shard Leases
on the real API server (checkpoints in ConfigMaps, as replicas in a cluster share them).
One replica is killed with SIGKILL under load, then a fourth is added: nothing is lost,
duplicates are only the changes in flight, and no shard is ever led by two replicas (each
replica's merged /metrics, sampled every 0.2 s, against every other's and the Leases)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.daemon import BridgeProcess
from tests.env.world import Endpoints
from tests.rig import Rig

pytestmark = pytest.mark.world

SHARDS = 6
CHANGES = 600
LEADING = re.compile(r'^kube_event_bridge_is_leader\{worker="(\d+)"\} 1\.0$', re.M)


def leading(replica: BridgeProcess) -> set[int]:
    return {int(shard) for shard in LEADING.findall(replica.get("/metrics")[1])}


class Owners:
    """Samples which replica leads which shard; a shard led by two replicas in two
    consecutive samples (0.2 s apart: more than a scrape's skew) is a violation."""

    def __init__(self, replicas: dict[str, BridgeProcess]) -> None:
        self.replicas = replicas
        self.previous: set[int] = set()
        self.violations: list[str] = []
        self.last: dict[str, set[int]] = {}

    async def sample(self) -> None:
        self.last = {name: await asyncio.to_thread(leading, replica)
                     for name, replica in self.replicas.items()
                     if replica.proc is not None and replica.proc.poll() is None}
        doubled = {shard for shard in range(SHARDS)
                   if sum(shard in shards for shards in self.last.values()) > 1}
        if doubled & self.previous:
            self.violations.append(f"shards {sorted(doubled & self.previous)} led twice: "
                                   f"{self.last}")
        self.previous = doubled

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(0.2)

    async def until(self, predicate: str, check: object, timeout: float = 60) -> float:
        started = time.monotonic()
        while not check(self.last):  # type: ignore[operator]
            assert time.monotonic() - started < timeout, f"{predicate}: {self.last}"
            await asyncio.sleep(0.1)
        return time.monotonic() - started


def lease_holders(kube: k8s.ApiClient, name: str) -> dict[int, str]:
    leases = k8s.CoordinationV1Api(kube).list_namespaced_lease("default").items
    prefix = f"{name}-shard-"
    return {int(lease.metadata.name.removeprefix(prefix)): lease.spec.holder_identity or ""
            for lease in leases if lease.metadata.name.startswith(prefix)}


async def test_replicas_hand_shards_over_when_one_dies_and_one_joins(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:6]
    name = f"rep{run}"
    rig = Rig(endpoints, kube, tmp_path,
              sharding={"shards": SHARDS, "leases": True},
              leader_election={"namespace": "default", "name": name, "lease_duration": 4,
                               "renew_deadline": 3, "retry_period": 0.5},
              checkpoint={"store": "configmap", "namespace": "default", "id": name,
                          "interval": 0.5})
    replicas: dict[str, BridgeProcess] = {}
    for n in range(1, 5):
        replica = replicas[f"r{n}"] = rig.bridge(f"r{n}")
        replica.env = {"POD_NAME": f"{name}-r{n}"}
    owners = Owners(replicas)
    watcher = asyncio.create_task(owners.run())
    try:
        for n in (1, 2, 3):
            replicas[f"r{n}"].start()
        took = await owners.until("three replicas share six shards", lambda last: sorted(
            len(s) for s in last.values()) == [2, 2, 2] and len(set().union(*last.values()))
            == SHARDS, timeout=90)
        print(f"\nthree replicas: 2 shards each after {took:.1f}s")
        holders = await asyncio.to_thread(lease_holders, kube, name)
        assert sorted(holders) == list(range(SHARDS))
        assert {holders[s] for s in owners.last["r1"]} == {f"{name}-r1"}
        for n in (1, 2, 3):
            await asyncio.to_thread(replicas[f"r{n}"].wait_ready, 60)
        writer = asyncio.create_task(rig.work.run(CHANGES, pause=0.01))
        await asyncio.sleep(2)
        victim = owners.last["r1"]
        replicas["r1"].sigkill()
        killed = time.monotonic()
        took = await owners.until("r2 and r3 take r1's shards over", lambda last: set(
            last) == {"r2", "r3"} and len(set().union(*last.values())) == SHARDS)
        print(f"r1 (shards {sorted(victim)}) killed: taken over after {took:.1f}s "
              f"(lease duration 4s)")
        # the lease duration (observed unchanged), a claim round each, a worker's start
        assert took < 4 + 2 * 0.5 + 5
        replicas["r4"].start()
        took = await owners.until("r4 joins and gets its share", lambda last: sorted(
            len(s) for s in last.values()) == [2, 2, 2] and len(set().union(*last.values()))
            == SHARDS, timeout=90)
        print(f"r4 joined: 2 shards each again after {took:.1f}s")
        await writer
        kafka, nats, _ = await rig.settle(timeout=120)
        print(f"kafka {kafka.line()}\nnats  {nats.line()}\n"
              f"caught up {time.monotonic() - killed:.1f}s after the kill")
        for report in (kafka, nats):
            assert report.ok, f"{report.line()}\n{replicas['r2'].tail()}"
            assert report.duplicate_ids_match, report.line()
        assert not owners.violations, owners.violations
        holders = await asyncio.to_thread(lease_holders, kube, name)
        for replica, shards in owners.last.items():
            assert {holders[s] for s in shards} <= {f"{name}-{replica}"}
    finally:
        watcher.cancel()
        for replica in replicas.values():
            if replica.proc is not None and replica.proc.poll() is None:
                assert await asyncio.to_thread(replica.sigterm) == 0, replica.tail()
