"""Provisioning against the real servers: ``kube-event-bridge provision`` creates, checks and
reports Kafka topics (on a broker with ``auto.create.topics.enable=false``) and NATS streams;
the daemon facing a missing or contradicting topic or stream is not ready, says which and
what to run, sets ``kube_event_bridge_sink_destination_missing``, backs off, and delivers
everything once the destination is provisioned."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from kubernetes import client as k8s
from nats.js.api import StreamConfig
from prometheus_client.parser import text_string_to_metric_families

from tests.auditor import Report, audit
from tests.daemon import BridgeProcess, bridge
from tests.env.world import Endpoints
from tests.readback import kafka_topics, nats_all
from tests.rig import kafka_report
from tests.workload import Workload

pytestmark = pytest.mark.world


def provision(config: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge.cli", "provision", "--config",
                           str(config), *flags], capture_output=True, text=True, timeout=120)


def destination_missing(process: BridgeProcess) -> dict[tuple[str, str], float]:
    """(destination, problem) -> the gauge, from /metrics."""
    _, text = process.get("/metrics")
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == "kube_event_bridge_sink_destination_missing":
            for s in family.samples:
                found[(s.labels["destination"], s.labels["problem"])] = s.value
    return found


async def not_ready_with(process: BridgeProcess, text: str, timeout: float = 60) -> str:
    """Wait until /readyz answers 503 with ``text`` in its body; the body."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc is not None and process.proc.poll() is None, process.tail()
        status, body = process.get("/readyz")
        if status == 503 and text in body:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"/readyz never said {text!r}: {process.get('/readyz')}\n"
                         f"{process.tail()}")


async def synced(process: BridgeProcess, timeout: float = 60) -> None:
    """Wait until the initial sync is done (ready, or down only for its sinks): changes
    from now on are owed one by one, not only as the snapshot's final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc is not None and process.proc.poll() is None, process.tail()
        status, body = process.get("/readyz")
        if status == 200 or "sinks down" in body:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no initial sync: {process.get('/readyz')}\n{process.tail()}")


async def nats_report(url: str, stream: str, work: Workload, timeout: float = 30) -> Report:
    deadline = time.monotonic() + timeout
    while True:
        report = audit(work.truth, await nats_all(url, stream))
        if not report.lost or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.5)


def noauto(endpoints: Endpoints) -> str:
    """The broker that does not create topics on first use."""
    return endpoints.kafka_noauto_bootstrap_servers


def kafka_sink(servers: str, prefix: str, **settings: Any) -> dict[str, Any]:
    return {"name": "bus", "type": "kafka", "bootstrap_servers": servers,
            "topic": prefix + ".{plural}", "dead_letter_topic": f"{prefix}.dlq", **settings}


def nats_sink(endpoints: Endpoints, prefix: str, **settings: Any) -> dict[str, Any]:
    return {"name": "js", "type": "nats", "url": endpoints.nats_url, "stream": prefix.upper(),
            "subject": prefix + ".{group}.{plural}.{namespace}.{name}",
            "dead_letter_subject": f"dlq-{prefix}", "dead_letter_stream": f"{prefix.upper()}_DLQ",
            **settings}


def lines(output: str, status: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(rf": {status}(:|$)", line)]


async def test_provision_creates_then_reports_ok(endpoints: Endpoints, kube: k8s.ApiClient,
                                                 tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"prov{uuid.uuid4().hex[:8]}"
    servers = noauto(endpoints)
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]},
                     sinks=[kafka_sink(servers, prefix, tombstones=True, partitions=2),
                            nats_sink(endpoints, prefix, duplicate_window=300),
                            {"name": "out", "type": "jsonl", "path": str(tmp_path / "o")}])
    dry = provision(process.config, "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert len(lines(dry.stdout, "missing")) == 6, dry.stdout  # 3 kinds + dlq, 2 streams
    assert f"bus: kafka topic {prefix}.alphas: missing: would create: partitions=2, " \
        "replication_factor=1, cleanup.policy=compact" in dry.stdout
    assert f"bus: kafka topic {prefix}.dlq: missing: would create: partitions=2, " \
        "replication_factor=1, cleanup.policy=delete" in dry.stdout
    assert "out: jsonl sink: nothing to provision" in dry.stdout
    assert await kafka_topics(servers, prefix) == []  # a dry run creates nothing
    made = provision(process.config)
    assert made.returncode == 0, made.stdout + made.stderr
    assert len(lines(made.stdout, "created")) == 6, made.stdout
    assert f"js: nats stream {prefix.upper()}: created: subjects={prefix}.>, " \
        "duplicate_window=300s" in made.stdout
    assert await kafka_topics(servers, prefix) == [f"{prefix}.{p}" for p in
                                                   ("alphas", "betas", "deltas", "dlq")]
    again = provision(process.config, "--dry-run")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(lines(again.stdout, "ok")) == 6, again.stdout
    assert "6 ok" in again.stdout


async def test_a_missing_topic_stops_delivery_loudly_until_provisioned(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"miss{uuid.uuid4().hex[:8]}"
    servers = noauto(endpoints)
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]}, sinks=[kafka_sink(servers, prefix)])
    process.start()
    await synced(process)
    await work.run(20)
    body = await not_ready_with(process, "does not exist")
    topic = re.search(rf"topic ({prefix}\.\w+) does not exist", body)
    assert topic is not None, body
    assert "sinks down: bus" in body
    assert f"kube-event-bridge provision --config {process.config}" in body
    assert destination_missing(process)[(topic[1], "missing")] == 1
    await work.run(20)  # held, not dropped
    await asyncio.sleep(3)
    log = process.log.read_text()
    assert f"topic {topic[1]} does not exist" in log and "kube-event-bridge provision" in log
    attempts = log.count(f"topic {topic[1]} does not exist")
    assert attempts <= 12, f"{attempts} attempts in a few seconds: no backoff?"
    made = provision(process.config)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "4 created" in made.stdout, made.stdout  # 3 kinds and the dead-letter topic
    await asyncio.to_thread(process.wait_ready, 90)
    report = await kafka_report(servers, prefix, work.truth)
    assert report.ok, report.line()
    assert destination_missing(process)[(topic[1], "missing")] == 0
    assert await asyncio.to_thread(process.sigterm) == 0


async def test_create_topics_covers_a_kind_created_at_run_time(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)  # its CRDs are created after the bridge started
    prefix = f"auto{uuid.uuid4().hex[:8]}"
    servers = noauto(endpoints)
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]},
                     sinks=[kafka_sink(servers, prefix, create_topics=True, tombstones=True)])
    process.start()
    await asyncio.to_thread(process.wait_ready)
    work.setup()
    await work.run(30)
    report = await kafka_report(servers, prefix, work.truth, timeout=60)
    assert report.ok, report.line()
    assert f"created topic {prefix}.alphas (partitions=3, replication_factor=1, " \
        "cleanup.policy=compact)" in process.log.read_text()
    assert await asyncio.to_thread(process.sigterm) == 0
    check = provision(process.config, "--dry-run")
    assert lines(check.stdout, "ok") == [line for line in check.stdout.splitlines()
                                         if line.startswith("bus: kafka topic") and
                                         "dlq" not in line], check.stdout


async def test_a_topic_contradicting_tombstones_is_reported_and_blocks(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"contra{uuid.uuid4().hex[:8]}"
    servers = endpoints.kafka_bootstrap_servers
    topics = [f"{prefix}.{kind.plural}" for kind in work.kinds]
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 3, 1, topic_configs={"cleanup.policy": "delete"})
                                   for t in topics])
        process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                         watch={"include": [work.include]},
                         sinks=[kafka_sink(servers, prefix, tombstones=True)])
        dry = provision(process.config, "--dry-run")
        assert dry.returncode == 1
        assert len(lines(dry.stdout, "contradicts")) == 3, dry.stdout
        assert "cleanup.policy=delete, config wants compact (tombstones: true needs a " \
            "compacted topic); to change it: kafka-configs.sh" in dry.stdout
        process.start()
        await synced(process)
        await work.run(15)
        body = await not_ready_with(process, "contradicts the config")
        assert "cleanup.policy=delete, config wants compact" in body
        assert 1 in [v for (d, p), v in destination_missing(process).items()
                     if p == "contradicts" and d in topics]
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, t,
                                                  {"cleanup.policy": "compact"})
                                   for t in topics])
        await asyncio.to_thread(process.wait_ready, 90)
        report = await kafka_report(servers, prefix, work.truth)
        assert report.ok, report.line()
        assert await asyncio.to_thread(process.sigterm) == 0
    finally:
        await admin.close()


async def test_a_missing_nats_stream_stops_delivery_loudly_until_provisioned(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"nmiss{uuid.uuid4().hex[:8]}"
    stream = prefix.upper()
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]}, sinks=[nats_sink(endpoints, prefix)])
    process.start()
    await synced(process)
    await work.run(20)
    body = await not_ready_with(process, f"stream {stream} does not exist")
    assert f"kube-event-bridge provision --config {process.config}" in body and "503" in body
    assert destination_missing(process)[(stream, "missing")] == 1
    made = provision(process.config)
    assert made.returncode == 0 and "2 created" in made.stdout, made.stdout + made.stderr
    await asyncio.to_thread(process.wait_ready, 90)
    report = await nats_report(endpoints.nats_url, stream, work)
    assert report.ok, report.line()
    assert await asyncio.to_thread(process.sigterm) == 0


async def test_a_nats_stream_with_a_short_duplicate_window_is_reported_and_blocks(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"nshort{uuid.uuid4().hex[:8]}"
    stream = prefix.upper()
    nc = await nats.connect(endpoints.nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"],
                                         duplicate_window=10))
        process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                         watch={"include": [work.include]},
                         sinks=[nats_sink(endpoints, prefix, create_stream=True)])
        dry = provision(process.config, "--dry-run")
        assert dry.returncode == 1
        assert f"js: nats stream {stream}: contradicts: duplicate_window=10s, config wants " \
            "120s (re-sent events could be stored twice)" in dry.stdout, dry.stdout
        process.start()
        await synced(process)
        await work.run(10)
        body = await not_ready_with(process, "contradicts the config")
        assert "duplicate_window=10s" in body
        assert destination_missing(process)[(stream, "contradicts")] == 1
        await js.update_stream(StreamConfig(name=stream, subjects=[f"{prefix}.>"],
                                            duplicate_window=120))
        await asyncio.to_thread(process.wait_ready, 90)
        report = await nats_report(endpoints.nats_url, stream, work)
        assert report.ok, report.line()
        assert await asyncio.to_thread(process.sigterm) == 0
    finally:
        await nc.close()
