"""Exactly-once into Kafka (`delivery: exactly-once`), audited by a `read_committed` consumer
against the real API server and broker: SIGKILLs at random moments (inside transactions and
during the initial snapshot), a broker restart, a leader killed with a standby taking over,
a zombie leader (SIGSTOP, then SIGCONT after the standby took over), and a second instance
with the same transactional id. NATS is routed alongside (at-least-once, deduplicated by
`Nats-Msg-Id` within the stream's duplicate window).

``make test`` runs 8 kills; ``CHAOS=full`` (``make chaos``) runs 30."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from tests.auditor import Report, audit
from tests.daemon import BridgeProcess
from tests.env.world import Endpoints, World
from tests.readback import kafka_all, kafka_topics
from tests.rig import Rig, watching_again

pytestmark = pytest.mark.world

FULL = os.environ.get("CHAOS") == "full"
KILLS = 30 if FULL else 8


def exactly_once_rig(endpoints: Endpoints, kube: k8s.ApiClient, tmp: Path,
                     **transaction: Any) -> Rig:
    rig = Rig(endpoints, kube, tmp)
    bus = rig.config["sinks"][0]
    bus.update(delivery="exactly-once", transaction=transaction or {"max_wait": 0.05})
    rig.config["checkpoint"] = {
        "store": "kafka", "bootstrap_servers": endpoints.kafka_bootstrap_servers,
        "topic": f"{rig.topic_prefix}-checkpoints", "id": rig.topic_prefix, "interval": 0.5}
    rig.process = rig.bridge("main")
    return rig


@pytest.fixture
def rig(endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> Rig:
    return exactly_once_rig(endpoints, kube, tmp_path)


async def committed(rig: Rig, isolation: str = "read_committed") -> Report:
    bootstrap = rig.endpoints.kafka_bootstrap_servers
    topics = [t for t in await kafka_topics(bootstrap, rig.topic_prefix + ".")]
    return audit(rig.work.truth, await kafka_all(bootstrap, topics, isolation=isolation))


async def settled(rig: Rig, timeout: float = 120) -> tuple[Report, Report, Report]:
    """read_committed, read_uncommitted and NATS audits once nothing owed is missing."""
    deadline = time.monotonic() + timeout
    while True:
        kafka = await committed(rig)
        nats = audit(rig.work.truth, await rig.nats())
        if (not kafka.lost and not nats.lost) or time.monotonic() > deadline:
            return kafka, await committed(rig, "read_uncommitted"), nats


def report(name: str, kafka: Report, uncommitted: Report, nats: Report) -> None:
    print(f"\n{name}\n  kafka read_committed   {kafka.line()}\n  kafka read_uncommitted "
          f"{uncommitted.line()}\n  nats (at-least-once)   {nats.line()}")
    assert kafka.ok and kafka.duplicates == 0, kafka.line()
    assert not uncommitted.lost, uncommitted.line()
    assert nats.ok, nats.line()


async def ready(process: BridgeProcess) -> None:
    await asyncio.to_thread(process.wait_ready, 90)


async def leader_now(process: BridgeProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "kube_event_bridge_is_leader 1.0" not in process.get("/metrics")[1]:
        assert time.monotonic() < deadline, process.tail()
        await asyncio.sleep(0.1)


async def exited(process: BridgeProcess, timeout: float = 60) -> int:
    assert process.proc is not None
    return await asyncio.to_thread(process.proc.wait, timeout)


async def test_sigkills_broker_restart_leader_change_and_a_zombie(rig: Rig,
                                                                  world: World) -> None:
    rng = random.Random(13)
    rig.work.truth.in_gap = True  # before the first snapshot only final states are owed
    await rig.work.run(60, objects_per_kind=40)
    rig.process.start()
    await asyncio.sleep(0.4)
    rig.process.sigkill()  # inside the initial snapshot
    rig.process.start()
    await ready(rig.process)
    await watching_again(rig)
    writer = asyncio.create_task(rig.work.run(30))
    await asyncio.sleep(rng.uniform(0.1, 1.5))
    rig.process.sigkill()
    await writer
    for n in range(KILLS - 2):
        rig.process.start()
        if n % 3 == 0:  # the first second: before ready, maybe inside the snapshot
            writer = asyncio.create_task(rig.work.run(15))
            await asyncio.sleep(rng.uniform(0.05, 1.0))
        else:
            await ready(rig.process)
            writer = asyncio.create_task(rig.work.run(30))
            await asyncio.sleep(rng.uniform(0.1, 1.5))  # most often inside a transaction
        rig.process.sigkill()
        await writer
    rig.process.start()
    await ready(rig.process)
    writer = asyncio.create_task(rig.work.run(60, pause=0.02))
    await asyncio.to_thread(world.restart, "kafka")
    await writer
    kafka, uncommitted, nats = await settled(rig)
    report(f"exactly-once: {KILLS} SIGKILLs + a broker restart", kafka, uncommitted, nats)
    assert rig.process.sigterm() == 0, rig.process.tail()

    election = {"enabled": True, "namespace": "default",
                "name": f"eo-{rig.topic_prefix}", "lease_duration": 4, "renew_deadline": 3,
                "retry_period": 0.5}
    first, second, third = (rig.bridge(name, leader_election=election)
                            for name in ("leader", "standby", "standby2"))
    first.start()
    await ready(first)
    second.start()
    await ready(second)
    writer = asyncio.create_task(rig.work.run(80, pause=0.01))
    await asyncio.sleep(1.5)
    first.sigkill()  # the leader, killed: the standby takes over
    await leader_now(second)
    await writer
    third.start()
    await ready(third)
    writer = asyncio.create_task(rig.work.run(80, pause=0.01))
    await asyncio.sleep(1.0)
    assert second.proc is not None
    second.proc.send_signal(signal.SIGSTOP)  # a zombie: paused while leading
    await leader_now(third)
    await asyncio.sleep(1.0)  # the new leader opens transactions (fencing the zombie)
    second.proc.send_signal(signal.SIGCONT)
    assert await exited(second) == 1, second.tail()  # it found itself deposed or fenced
    await writer
    rig.process = third
    kafka, uncommitted, nats = await settled(rig)
    report(f"exactly-once: {KILLS} SIGKILLs, broker restart, leader killed, zombie", kafka,
           uncommitted, nats)
    assert third.sigterm() == 0, third.tail()


async def test_a_second_instance_with_the_same_transactional_id_fences_the_first(
        rig: Rig) -> None:
    """The first instance is idle when the second starts: it learns of the takeover from
    its heartbeat transaction (within 5 s), not only from its next change."""
    rig.process.start()
    await ready(rig.process)
    await rig.work.run(60, pause=0.01)
    await asyncio.sleep(1.0)
    second = rig.bridge(f"second-{uuid.uuid4().hex[:4]}")
    second.start()
    assert await exited(rig.process, 30) == 1, rig.process.tail()
    assert "fenced" in rig.process.tail(200), rig.process.tail()
    await ready(second)
    await rig.work.run(60, pause=0.01)
    rig.process = second
    kafka, uncommitted, nats = await settled(rig)
    report("exactly-once: a second instance fences the first", kafka, uncommitted, nats)
    assert second.sigterm() == 0, second.tail()
