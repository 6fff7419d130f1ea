"""``make demo``: the local control plane, sample CRDs, the bridge with the jsonl sink on the
terminal, and a small workload; the CloudEvents are shown as they arrive.

``make demo SINK=kafka`` (or ``SINK=nats``): the bridge sends to the test world's Kafka broker
(or NATS JetStream) instead, after ``kube-event-bridge provision`` has created the topics (or
the stream); a consumer (Kafka: ``read_committed``) prints what it receives."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.env.procs import free_port
from tests.env.world import Endpoints, World
from tests.kubetools import create_crd, ensure_namespace
from tests.readback import _partitions as kafka_partitions

ROOT = Path(__file__).resolve().parents[1]
TTY = sys.stdout.isatty()


def color(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


def show_events(stream: IO[bytes], count: list[int]) -> None:
    for line in stream:
        event = orjson.loads(line)
        count[0] += 1
        kind = event["type"].rsplit(".", 1)[-1]
        tint = {"added": "32", "updated": "33", "deleted": "31"}.get(kind, "0")
        synthetic = " (snapshot)" if event.get("synthetic") == "true" else ""
        print(color(tint, f"● {kind:8}") + f" {event['kind']} {event['subject']}"
              f"  rv={event['resourceversion']}{synthetic}")
        data = event.get("data") or {}
        compact = {k: event[k] for k in ("id", "source", "type", "time", "partitionkey")}
        compact["data.spec"] = data.get("spec")
        print(color("2", "  " + orjson.dumps(compact).decode()))


def show_received(headers: dict[str, str], prefix: str, where: str) -> None:
    """One event as a consumer received it: its CloudEvents attributes from the headers."""
    change = headers[prefix + "type"].rsplit(".", 1)[-1]
    tint = {"added": "32", "updated": "33", "deleted": "31"}.get(change, "0")
    synthetic = " (snapshot)" if headers.get(prefix + "synthetic") == "true" else ""
    print(color(tint, f"◆ consumer got {change:8}") + f" {headers[prefix + 'kind']} "
          f"{headers[prefix + 'subject']}  id={headers[prefix + 'id']}{synthetic}"
          + color("2", f"  ({where})"))


KAFKA_TOPICS = "demo.{group}.{plural}"
NATS_STREAM = "KEB_DEMO"


async def consume_kafka(bootstrap: str, stop: threading.Event, count: list[int],
                        started: threading.Event) -> None:
    """Read the demo's topics from their current end, as a read_committed consumer."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        topics = [t for t in await consumer.topics() if t.startswith("demo.")]
        partitions = [TopicPartition(t, p) for t in topics
                      for p in await kafka_partitions(consumer, t)]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for tp in partitions:
            await consumer.position(tp)  # resolve "end" now, before the bridge sends
        started.set()
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200)
            for tp, records in batches.items():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    if record.value is None or "ce_type" not in headers:
                        continue
                    count[0] += 1
                    show_received(headers, "ce_", f"topic {tp.topic} partition "
                                  f"{tp.partition} offset {record.offset}")
    finally:
        started.set()
        await consumer.stop()


async def consume_nats(url: str, stop: threading.Event, count: list[int],
                       started: threading.Event) -> None:
    """An ordered JetStream consumer of the demo stream, from new messages on."""
    from urllib.parse import unquote

    import nats
    from nats.aio.msg import Msg
    from nats.js.api import DeliverPolicy

    nc = await nats.connect(url)

    async def received(msg: Msg) -> None:
        headers = {k: unquote(v) for k, v in (msg.headers or {}).items()}
        count[0] += 1
        show_received(headers, "ce-", f"subject {msg.subject}, stream sequence "
                      f"{msg.metadata.sequence.stream}")

    try:
        await nc.jetstream().subscribe("demo.>", stream=NATS_STREAM, cb=received,
                                       ordered_consumer=True,
                                       deliver_policy=DeliverPolicy.NEW)
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.2)
    finally:
        started.set()
        await nc.close()


def sink_config(sink: str, endpoints: Endpoints) -> dict[str, object]:
    if sink == "kafka":
        return {"name": "bus", "type": "kafka",
                "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                "topic": KAFKA_TOPICS, "dead_letter_topic": "demo.dead-letters"}
    if sink == "nats":
        return {"name": "js", "type": "nats", "url": endpoints.nats_url,
                "stream": NATS_STREAM, "subject": "demo.{group}.{plural}.{namespace}.{name}",
                "dead_letter_subject": "demo-dead-letters",
                "dead_letter_stream": f"{NATS_STREAM}_DLQ"}
    return {"name": "terminal", "type": "jsonl", "path": "-"}


def show_logs(stream: IO[bytes]) -> None:
    for line in stream:
        print(color("2;36", "  bridge | " + line.decode(errors="replace").rstrip()),
              file=sys.stderr)


def workload(api: k8s.ApiClient) -> None:
    objs = k8s.CustomObjectsApi(api)
    group, ns = "demo.example.com", "demo"

    def db(name: str, **spec: object) -> dict[str, object]:
        return {"apiVersion": f"{group}/v1", "kind": "Database", "metadata": {"name": name},
                "spec": spec}

    steps = [
        ("create orders-db", lambda: objs.create_namespaced_custom_object(
            group, "v1", ns, "databases", db("orders-db", engine="postgres", sizeGi=10))),
        ("create tenant acme", lambda: objs.create_cluster_custom_object(
            "platform.demo.example.com", "v1", "tenants",
            {"apiVersion": "platform.demo.example.com/v1", "kind": "Tenant",
             "metadata": {"name": "acme"}, "spec": {"plan": "gold"}})),
        ("scale orders-db", lambda: objs.patch_namespaced_custom_object(
            group, "v1", ns, "databases", "orders-db", {"spec": {"replicas": 3}})),
        ("create cache-db", lambda: objs.create_namespaced_custom_object(
            group, "v1", ns, "databases", db("cache-db", engine="redis", sizeGi=2))),
        ("grow orders-db", lambda: objs.patch_namespaced_custom_object(
            group, "v1", ns, "databases", "orders-db", {"spec": {"sizeGi": 20}})),
        ("delete cache-db", lambda: objs.delete_namespaced_custom_object(
            group, "v1", ns, "databases", "cache-db")),
        ("delete tenant acme", lambda: objs.delete_cluster_custom_object(
            "platform.demo.example.com", "v1", "tenants", "acme")),
    ]
    for what, step in steps:
        time.sleep(1.0)
        print(color("1;35", f"$ workload: {what}"))
        step()


def provision(config: Path) -> None:
    print(color("1", f"running: kube-event-bridge provision --config {config}"))
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "provision", "--config",
                           str(config)], capture_output=True, text=True, timeout=120)
    for line in (done.stdout + done.stderr).splitlines():
        print(color("2;36", "  provision | " + line))
    if done.returncode != 0:
        raise SystemExit(f"provision failed with exit code {done.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sink", choices=["jsonl", "kafka", "nats"], default="jsonl",
                        help="where the bridge sends (kafka, nats: the test world's brokers)")
    sink = parser.parse_args().sink
    print(color("1", "starting the local control plane (first run builds it, ~10 min)..."))
    endpoints = World().up()
    api = k8s_config.new_client_from_config(config_file=str(endpoints.kubeconfig))
    ensure_namespace(api, "demo")
    for manifest in yaml.safe_load_all((ROOT / "config" / "samples" / "crds.yaml").read_text()):
        create_crd(api, manifest)
    for leftover in ("orders-db", "cache-db"):  # a re-run starts from a clean slate
        try:
            k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
                "demo.example.com", "v1", "demo", "databases", leftover)
        except k8s.ApiException:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.yaml"
        config.write_text(yaml.safe_dump({
            "cluster": "demo", "kubeconfig": str(endpoints.kubeconfig),
            "http": {"port": free_port(set()), "address": "127.0.0.1"},
            "watch": {"include": ["*demo.example.com/*"]},
            "sinks": [sink_config(sink, endpoints)],
            "checkpoint": {"path": tmp},
        }))
        consumer: threading.Thread | None = None
        stop, started, received = threading.Event(), threading.Event(), [0]
        if sink != "jsonl":
            provision(config)
            consume = consume_kafka(endpoints.kafka_bootstrap_servers, stop, received,
                                    started) if sink == "kafka" else consume_nats(
                endpoints.nats_url, stop, received, started)
            consumer = threading.Thread(target=asyncio.run, args=(consume,))
            consumer.start()
            started.wait(60)
        print(color("1", f"running: kube-event-bridge run --config {config}"))
        bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                                   str(config)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=dict(os.environ))
        assert bridge.stdout is not None and bridge.stderr is not None
        count = [0]
        readers = [threading.Thread(target=show_events, args=(bridge.stdout, count)),
                   threading.Thread(target=show_logs, args=(bridge.stderr,))]
        for reader in readers:
            reader.start()
        time.sleep(2)
        workload(api)
        time.sleep(2)
        bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(30)
        for reader in readers:
            reader.join(5)
        if consumer is not None:
            stop.set()
            consumer.join(10)
            count = received
    where = {"jsonl": "on the terminal", "kafka": "read back from Kafka",
             "nats": "read back from JetStream"}[sink]
    print(color("1", f"demo done: {count[0]} CloudEvents {where}, bridge exit code {code}. "
                     "Next: `make test`; configure real sinks from config/example.yaml."))
    return 0 if code == 0 and count[0] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
