"""kube_event_consumer against the real thing: the bridge watching the real API server and
sending to real Kafka (compacted topics with tombstones) and NATS JetStream while a workload
creates, updates and deletes, a CRD is created at run time, the bridge is SIGKILLed, and
history is compacted (`410 Gone`) while it is down. The consumers run as processes (this
module is their program, ``python -m tests.integration.test_consumer``); their views must
equal the API server's objects (0 missing, 0 extra, 0 stale), first as they ran through all
of that, then again after each was SIGKILLed mid-stream and restarted. The two examples of
docs/consumers.md run alongside and their dicts must equal the cluster's Databases."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from aiokafka import AIOKafkaProducer
from kubernetes import client as k8s

from bridge.events.builder import EventBuilder
from bridge.events.event import Event as BridgeEvent
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from kube_event_consumer import Anomaly, Change, Informer, Source
from kube_event_consumer.kafka import KafkaSource
from kube_event_consumer.nats import NatsSource
from sinks.kafka import binary_headers as kafka_headers
from sinks.nats import binary_headers as nats_headers
from tests.env.world import Endpoints, World
from tests.kubetools import crd_manifest, create_crd
from tests.rig import Rig

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "consumers.md"


# ---- the consumer program --------------------------------------------------------------------

async def consume(source: Source, out: Path) -> None:
    """Keep a view and write it (key -> [uid, resourceVersion]), the counters and the
    anomalies to ``out`` every 0.2 s."""
    anomalies: list[str] = []

    def report(anomaly: Anomaly) -> None:
        anomalies.append(f"{anomaly.kind}: {anomaly.detail}")

    informer = Informer(source, on_anomaly=report)
    handled: list[int] = [0]

    def count(change: Change) -> None:
        handled[0] += 1

    for register in (informer.on_added, informer.on_updated, informer.on_deleted):
        register(count)
    running = asyncio.create_task(informer.run())
    while True:
        if running.done():  # what stopped it, in the log
            running.result()
            raise AssertionError("the informer stopped")
        view = {"|".join(e.key): [e.uid, e.resource_version] for e in informer.view.list()}
        doc = {"synced": informer.synced.is_set(), "view": view, "handled": handled[0],
               "stats": vars(informer.stats), "anomalies": anomalies[:20]}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(out)
        await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker", choices=["kafka", "nats"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--server", required=True)
    parser.add_argument("--topics", default="")
    parser.add_argument("--stream", default="")
    parser.add_argument("--name", required=True, help="consumer group or durable")
    args = parser.parse_args()
    source: Source
    if args.broker == "kafka":
        source = KafkaSource(bootstrap_servers=args.server, topics=args.topics,
                             group_id=args.name, discovery_interval=0.5)
    else:
        source = NatsSource(url=args.server, stream=args.stream, durable=args.name)
    asyncio.run(consume(source, args.out))


# ---- the test's side -------------------------------------------------------------------------

@dataclass
class Consumer:
    """One consumer process (restartable; SIGKILLed to test its restart)."""

    argv: list[str]
    out: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=ROOT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def state(self) -> dict[str, Any]:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"consumer exited {self.proc.returncode}:\n{self.tail()}")
        try:
            return dict(json.loads(self.out.read_text()))
        except (OSError, ValueError):
            return {}

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def truth(kube: k8s.ApiClient, kinds: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    """Every object of these (group, plural, Kind) as the API server has them now."""
    api = k8s.CustomObjectsApi(kube)
    found: dict[str, list[str]] = {}
    for group, plural, kind in kinds:
        for obj in api.list_cluster_custom_object(group, "v1", plural)["items"]:
            meta = obj["metadata"]
            key = f"{kind}.{group}|{meta.get('namespace', '')}|{meta['name']}"
            found[key] = [meta["uid"], meta["resourceVersion"]]
    return found


@dataclass
class Equality:
    missing: int
    extra: int
    stale: int
    stats: dict[str, int]
    examples: list[str]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.stale)

    def line(self, objects: int) -> str:
        s = self.stats
        return (f"{objects} objects: missing={self.missing} extra={self.extra} "
                f"stale={self.stale} | applied={s.get('applied')} "
                f"duplicates={s.get('duplicates')} out_of_order={s.get('out_of_order')} "
                f"gaps={s.get('gaps')} tombstones={s.get('tombstones')}"
                + (f" e.g. {self.examples}" if self.examples else ""))


def compare(view: dict[str, list[str]], want: dict[str, list[str]],
            stats: dict[str, int]) -> Equality:
    missing, extra = want.keys() - view.keys(), view.keys() - want.keys()
    stale = {k for k in want.keys() & view.keys() if want[k] != view[k]}
    examples = ([f"missing {k} {want[k]}" for k in sorted(missing)[:3]]
                + [f"extra {k} {view[k]}" for k in sorted(extra)[:3]]
                + [f"stale {k} {view[k]} != {want[k]}" for k in sorted(stale)[:3]])
    return Equality(len(missing), len(extra), len(stale), stats, examples)


async def converged(consumer: Consumer, want: dict[str, list[str]],
                    timeout: float = 60) -> Equality:
    deadline = time.monotonic() + timeout
    while True:
        state = consumer.state()
        result = compare(state.get("view", {}), want, state.get("stats", {}))
        if (state.get("synced") and result.ok) or time.monotonic() > deadline:
            assert not state.get("anomalies"), state.get("anomalies")
            return result
        await asyncio.sleep(0.2)


def example(broker: str) -> str:
    """The docs' example for ``broker``: the Kafka one, or the Kafka one with the NATS
    source put in (the docs show only what differs)."""
    blocks = dict(re.findall(r"```python\n# example: (\w+)\n(.*?)```", DOCS.read_text(),
                             re.S))
    kafka = blocks["kafka"]
    if broker == "kafka":
        return kafka
    nats_import, nats_source = blocks["nats"].split("\n\n", 1)
    kafka_source = re.search(r"^source = .*?\n(?=informer = )", kafka, re.S | re.M)
    assert kafka_source is not None
    return (kafka.replace(kafka_source.group(0), nats_source.strip() + "\n")
            .replace("from kube_event_consumer.kafka import KafkaSource", nats_import))


class Example:
    """A docs example as a process: its last printed line is its dict."""

    def __init__(self, broker: str, tmp: Path, env: dict[str, str]) -> None:
        script = tmp / f"example_{broker}.py"
        script.write_text(example(broker))
        self.out = tmp / f"example_{broker}.out"
        self.proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT,
                                     stdout=open(self.out, "wb"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **env})

    def last(self) -> dict[str, Any]:
        assert self.proc.poll() is None, self.out.read_text()[-3000:]
        lines = self.out.read_text().splitlines()
        return dict(json.loads(lines[-1])) if lines and lines[-1].startswith("{") else {}

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def databases(kube: k8s.ApiClient, group: str) -> dict[str, Any]:
    items = k8s.CustomObjectsApi(kube).list_cluster_custom_object(group, "v1", "databases")
    return {f"{o['metadata']['namespace']}/{o['metadata']['name']}": o["spec"]
            for o in items["items"]}


async def write_databases(kube: k8s.ApiClient, group: str, namespace: str) -> None:
    """Creates, updates, a deletion and a re-creation under the same name."""
    api = k8s.CustomObjectsApi(kube)

    def body(name: str, size: int) -> dict[str, Any]:
        return {"apiVersion": f"{group}/v1", "kind": "Database", "metadata": {"name": name},
                "spec": {"engine": "postgres", "sizeGi": size}}

    def run() -> None:
        for n in range(6):
            api.create_namespaced_custom_object(group, "v1", namespace, "databases",
                                                body(f"db{n}", n))
        for n in range(4):
            api.patch_namespaced_custom_object(group, "v1", namespace, "databases", f"db{n}",
                                               {"spec": {"sizeGi": 100 + n}})
        for n in (4, 5):
            api.delete_namespaced_custom_object(group, "v1", namespace, "databases", f"db{n}")
        api.create_namespaced_custom_object(group, "v1", namespace, "databases",
                                            body("db5", 55))
    await asyncio.to_thread(run)


async def test_views_equal_the_cluster_through_kills_a_gap_and_a_new_crd(
        endpoints: Endpoints, kube: k8s.ApiClient, world: World, tmp_path: Path) -> None:
    rig = Rig(endpoints, kube, tmp_path)
    rig.config["sinks"][0].update(tombstones=True, create_topics=True)
    rig.process = rig.bridge("main")
    work = rig.work
    db_group = f"db.w{work.suffix}.keb.example.com"  # matches the bridge's include glob
    kinds = [(k.group, k.plural, k.kind) for k in work.kinds]
    topics = re.escape(rig.topic_prefix + ".") + ".*"
    python = [sys.executable, "-m", "tests.integration.test_consumer"]
    consumers = {
        "kafka": Consumer([*python, "kafka", str(tmp_path / "kafka.json"),
                           "--server", endpoints.kafka_bootstrap_servers, "--topics", topics,
                           "--name", f"view-{rig.topic_prefix}"],
                          tmp_path / "kafka.json", tmp_path / "kafka.log"),
        "nats": Consumer([*python, "nats", str(tmp_path / "nats.json"),
                          "--server", endpoints.nats_url, "--stream", rig.stream,
                          "--name", f"view-{rig.topic_prefix}"],
                         tmp_path / "nats.json", tmp_path / "nats.log"),
    }
    examples: list[Example] = []
    try:
        await work.run(30, objects_per_kind=12)  # the bridge's initial snapshot
        rig.process.start()
        await asyncio.to_thread(rig.process.wait_ready, 90)
        for consumer in consumers.values():
            consumer.start()
        examples = [Example("kafka", tmp_path, {"TOPICS": topics}),
                    Example("nats", tmp_path, {"STREAM": rig.stream})]
        writer = asyncio.create_task(work.run(60, objects_per_kind=12, pause=0.01))
        await asyncio.sleep(0.6)
        rig.process.sigkill()  # mid-stream
        await writer
        rig.process.start()
        await asyncio.to_thread(create_crd, kube, crd_manifest(db_group, "databases",
                                                                "Database"))
        kinds.append((db_group, "databases", "Database"))
        await asyncio.to_thread(rig.process.wait_ready, 90)
        await write_databases(kube, db_group, work.namespace)
        await work.run(20, objects_per_kind=12)
        rig.process.sigkill()
        await work.run(25, objects_per_kind=12)  # while the bridge is down...
        await asyncio.to_thread(world.gap)  # ...and then compacted away: a 410, a re-list
        rig.process.start()
        await asyncio.to_thread(rig.process.wait_ready, 90)
        await work.run(20, objects_per_kind=12)

        want = await asyncio.to_thread(truth, kube, kinds)
        lines = []
        for broker, consumer in consumers.items():
            result = await converged(consumer, want)
            lines.append(f"{broker}: {result.line(len(want))}")
            assert result.ok, lines[-1]

        # the consumers SIGKILLed mid-stream and restarted (the bridge once more too)
        writer = asyncio.create_task(work.run(80, objects_per_kind=12, pause=0.01))
        await asyncio.sleep(0.5)
        for consumer in consumers.values():
            consumer.kill()
        await asyncio.sleep(0.3)
        rig.process.sigkill()
        rig.process.start()
        for consumer in consumers.values():
            consumer.start()
        await writer
        want = await asyncio.to_thread(truth, kube, kinds)
        for broker, consumer in consumers.items():
            result = await converged(consumer, want)
            lines.append(f"{broker} after a consumer SIGKILL + restart: "
                         f"{result.line(len(want))}")
            assert result.ok, lines[-1]

        want_dbs = await asyncio.to_thread(databases, kube, db_group)
        deadline = time.monotonic() + 30
        while any(e.last() != want_dbs for e in examples) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        for e in examples:
            assert e.last() == want_dbs, (e.last(), want_dbs)
        lines.append(f"docs examples (kafka, nats): dict == the cluster's {len(want_dbs)} "
                     "Databases")
        print("\n" + "\n".join(lines))
        assert rig.process.sigterm() == 0, rig.process.tail()
    finally:
        for consumer in consumers.values():
            consumer.kill()
        for e in examples:
            e.stop()
        rig.process.sigkill() if rig.process.proc and rig.process.proc.poll() is None else None


# ---- the sources against the real brokers, with what the bridge's encoders produce ----------

DB = Resource("demo.example.com", "v1", "databases", "Database", True)


def bridge_event(change: DeltaType, uid: str, rv: str, seq: int, *,
                 name: str = "orders") -> BridgeEvent:
    obj = {"apiVersion": DB.api_version, "kind": DB.kind,
           "metadata": {"name": name, "namespace": "demo", "uid": uid,
                        "resourceVersion": rv}, "spec": {"rv": rv}}
    return EventBuilder().build(Delta(change, DB, obj, uid, rv, False, "s", seq,
                                      time.time(), "demo", name))


async def run_until_synced(source: Source) -> tuple[Informer, list[tuple[str, str, bool]]]:
    informer = Informer(source)
    seen: list[tuple[str, str, bool]] = []
    for register in (informer.on_added, informer.on_updated, informer.on_deleted):
        register(lambda c: seen.append((c.type.value, c.event.id, c.replayed)))
    async with informer:
        await informer.wait_synced(30)
        await asyncio.sleep(0.3)  # the batch after the synced one is committed too
    return informer, seen


async def test_nats_restart_rebuilds_a_subject_holding_two_uids(endpoints: Endpoints) -> None:
    """A name re-created: the new uid's add comes before the old uid's deletion on one
    subject (as a re-list diff sends them). The last message per subject alone would lose
    the new object."""
    stream, subject = f"C{uuid.uuid4().hex[:8].upper()}", "c.demo.orders"
    nc = await nats.connect(endpoints.nats_url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{subject}"])
    try:
        for event in (bridge_event(DeltaType.ADDED, "old", "5", 1),
                      bridge_event(DeltaType.ADDED, "new", "9", 2),
                      bridge_event(DeltaType.DELETED, "old", "5", 3)):
            await js.publish(subject, event.data or b"", headers=nats_headers(event))
        informer, seen = await run_until_synced(NatsSource(url=endpoints.nats_url,
                                                           stream=stream, durable="v"))
        assert [e.uid for e in informer.view.list()] == ["new"]
        # the old uid's deletion is no transition: the view shows the newer uid of the name
        assert seen == [("added", "old/5", False), ("added", "new/9", False)]
        informer, seen = await run_until_synced(NatsSource(url=endpoints.nats_url,
                                                           stream=stream, durable="v"))
        assert [e.uid for e in informer.view.list()] == ["new"]
        assert seen == [("added", "old/5", True), ("added", "new/9", True)]  # its history
        late = bridge_event(DeltaType.UPDATED, "new", "12", 4)
        await js.publish(subject, late.data or b"", headers=nats_headers(late))
        informer, seen = await run_until_synced(NatsSource(url=endpoints.nats_url,
                                                           stream=stream, durable="v"))
        # the subject's last message lies after the floor: its history up to it, then news
        assert seen == [("added", "old/5", True), ("added", "new/9", True),
                        ("updated", "new/12", False)]
    finally:
        await js.delete_stream(stream)
        await nc.close()


async def test_kafka_tombstones_and_a_restart_from_the_committed_offsets(
        endpoints: Endpoints) -> None:
    bootstrap = endpoints.kafka_bootstrap_servers
    topic, group = f"c{uuid.uuid4().hex[:8]}.databases", f"g{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()

    async def send(event: BridgeEvent | None, key: bytes = b"") -> None:
        if event is None:  # a tombstone, as the sink writes it
            await producer.send_and_wait(topic, None, key=key, partition=0)
        else:
            await producer.send_and_wait(topic, event.data, key=event.key, partition=0,
                                         headers=kafka_headers(event))
    try:
        await send(bridge_event(DeltaType.ADDED, "x", "5", 1, name="x"))
        await send(None, b"x")  # a tombstone whose deletion compaction already removed
        await send(bridge_event(DeltaType.ADDED, "y", "6", 2, name="y"))
        source = KafkaSource(bootstrap_servers=bootstrap, topics=re.escape(topic),
                             group_id=group)
        informer, seen = await run_until_synced(source)
        assert [e.uid for e in informer.view.list()] == ["y"]
        assert informer.stats.tombstones == 1
        assert seen == [("added", "x/5", False), ("deleted", "x/5", False),
                        ("added", "y/6", False)]
        await send(bridge_event(DeltaType.UPDATED, "y", "7", 3, name="y"))
        source = KafkaSource(bootstrap_servers=bootstrap, topics=re.escape(topic),
                             group_id=group)
        informer, seen = await run_until_synced(source)
        assert seen == [("added", "x/5", True), ("deleted", "x/5", True),
                        ("added", "y/6", True), ("updated", "y/7", False)]
    finally:
        await producer.stop()


if __name__ == "__main__":
    main()
