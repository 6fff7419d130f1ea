"""The daemon end to end: real API server -> bridge process -> real Kafka and NATS, audited
against the API server's answers to the workload's writes."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.daemon import bridge
from tests.env.world import Endpoints
from tests.readback import kafka_all, kafka_topics
from tests.rig import Rig
from tests.workload import Workload

pytestmark = pytest.mark.world


@pytest.fixture
def setup(endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> Rig:
    return Rig(endpoints, kube, tmp_path)


async def test_sigterm_restart_loses_and_repeats_nothing(setup: Rig) -> None:
    process = setup.process
    process.start()
    await asyncio.to_thread(process.wait_ready)
    await setup.work.run(120)
    assert await asyncio.to_thread(process.sigterm) == 0
    await setup.work.run(80)  # changes while the bridge is down
    process.start()
    await asyncio.to_thread(process.wait_ready)
    await setup.work.run(60)
    kafka, nats, _ = await setup.settle()
    assert await asyncio.to_thread(process.sigterm) == 0
    for report in (kafka, nats):
        assert report.ok, report.line()
        assert report.duplicates == 0, report.line()


async def test_sigkill_at_random_moments_loses_nothing(setup: Rig) -> None:
    process = setup.process
    rng = random.Random(11)
    process.start()
    await asyncio.to_thread(process.wait_ready)
    kills = 0
    for _ in range(10):
        writer = asyncio.create_task(setup.work.run(60))
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        process.sigkill()
        kills += 1
        await writer
        process.start()
        await asyncio.to_thread(process.wait_ready)
    await setup.work.run(30)
    kafka, nats, _ = await setup.settle()
    assert await asyncio.to_thread(process.sigterm) == 0
    print(f"\nSIGKILL x{kills}: kafka {kafka.line()}\n              nats  {nats.line()}")
    for report in (kafka, nats):
        assert report.ok, report.line()
        assert report.duplicate_ids_match, report.line()
    assert nats.duplicates == 0  # JetStream drops re-sent ids inside its duplicate window


@pytest.mark.parametrize("oversize", ["reference", "dead-letter"])
async def test_oversized_object_does_not_stall_the_stream(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path, oversize: str) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"big{uuid.uuid4().hex[:8]}"
    dlq = f"{prefix}.dlq"
    process = bridge(
        tmp_path, kubeconfig=str(endpoints.kubeconfig), watch={"include": [work.include]},
        events={"max_bytes": 1_048_576, "oversize": oversize},
        sinks=[{"name": "bus", "type": "kafka",
                "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                "topic": prefix + ".{plural}", "dead_letter_topic": dlq}])
    process.start()
    await asyncio.to_thread(process.wait_ready)
    kind = work.kinds[0]
    objs = k8s.CustomObjectsApi(kube)
    big = await asyncio.to_thread(
        objs.create_namespaced_custom_object, kind.group, "v1", work.namespace, kind.plural,
        {"apiVersion": f"{kind.group}/v1", "kind": kind.kind, "metadata": {"name": "big"},
         "spec": {"blob": "x" * 1_450_000}})
    small = await asyncio.to_thread(
        objs.create_namespaced_custom_object, kind.group, "v1", work.namespace, kind.plural,
        {"apiVersion": f"{kind.group}/v1", "kind": kind.kind, "metadata": {"name": "small"},
         "spec": {}})
    big_id = f"{big['metadata']['uid']}/{big['metadata']['resourceVersion']}"
    small_id = f"{small['metadata']['uid']}/{small['metadata']['resourceVersion']}"
    bootstrap = endpoints.kafka_bootstrap_servers
    async with asyncio.timeout(60):
        while True:
            got = {r.id: r for r in await kafka_all(
                bootstrap, await kafka_topics(bootstrap, f"{prefix}.alphas"))}
            if small_id in got:
                break
            await asyncio.sleep(0.5)
    _, metrics_text = process.get("/metrics")
    assert await asyncio.to_thread(process.sigterm) == 0
    if oversize == "reference":
        ref = got[big_id]
        assert ref.attributes["truncated"] == "reference"
        assert ref.attributes["dataref"].endswith("/alphas/big")
        assert "spec" not in ref.data and ref.data["metadata"]["name"] == "big"
        assert 'kube_event_bridge_events_oversized_total{outcome="reference"} 1.0' in \
            metrics_text
    else:
        assert big_id not in got
        import orjson
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(dlq, bootstrap_servers=bootstrap,
                                    auto_offset_reset="earliest")
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), 20)
        finally:
            await consumer.stop()
        letter = orjson.loads(record.value)
        assert letter["attributes"]["id"] == big_id and "exceeds" in letter["reason"]
        assert 'kube_event_bridge_events_dead_lettered_total{reason="permanent",sink="bus"}' \
            in metrics_text
