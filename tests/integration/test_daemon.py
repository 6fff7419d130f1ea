"""The daemon as operators meet it: health, metrics, progress, bad environments, leader
election, signals. Real API server and brokers throughout."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.daemon import BridgeProcess, bridge, write_config
from tests.env.world import Endpoints
from tests.rig import kafka_report
from tests.tcpproxy import TcpProxy
from tests.workload import Workload

pytestmark = pytest.mark.world


def kafka_sink(endpoints: Endpoints, prefix: str, servers: str | None = None) -> dict[str, str]:
    return {"name": "bus", "type": "kafka",
            "bootstrap_servers": servers or endpoints.kafka_bootstrap_servers,
            "topic": prefix + ".{plural}"}


async def test_health_metrics_and_sync_progress(endpoints: Endpoints, kube: k8s.ApiClient,
                                                tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    await work.run(30)
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]},
                     sinks=[{"name": "out", "type": "jsonl", "path": str(tmp_path / "o.jsonl")}])
    process.start()
    await asyncio.to_thread(process.wait_ready)
    assert process.get("/healthz") == (200, "ok\n")
    _, text = process.get("/metrics")
    for name in ("kube_event_bridge_events_observed_total", "kube_event_bridge_watched_kinds 3.0",
                 "kube_event_bridge_events_published_total", "kube_event_bridge_sink_up",
                 "kube_event_bridge_publish_latency_seconds_bucket",
                 "kube_event_bridge_end_to_end_lag_seconds_bucket",
                 "kube_event_bridge_api_requests_total", "kube_event_bridge_is_leader 1.0",
                 "kube_event_bridge_synced_streams 3.0"):
        assert name in text, name
    assert await asyncio.to_thread(process.sigterm) == 0
    log = process.log.read_text()
    assert "initial sync complete: 3 kinds" in log
    assert "checkpoint saved" in log


async def test_unreachable_broker_at_start_waits_and_recovers(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    kafka_port = int(endpoints.kafka_bootstrap_servers.rsplit(":", 1)[1])
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    proxy_port = port.getsockname()[1]
    port.close()
    prefix = f"late{uuid.uuid4().hex[:8]}"
    process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                     watch={"include": [work.include]},
                     sinks=[kafka_sink(endpoints, prefix, f"127.0.0.1:{proxy_port}")])
    process.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "sinks down" not in process.get("/readyz")[1]:
        await asyncio.sleep(0.2)
    status, why = process.get("/readyz")
    assert status == 503 and "sinks down: bus" in why
    assert process.proc is not None and process.proc.poll() is None
    assert "cannot reach" in process.log.read_text()
    await work.run(40)  # changes while the broker is unreachable are held, not dropped
    # the broker "comes back": a proxy to the real one appears on the configured address
    async with TcpProxy("127.0.0.1", kafka_port, listen_port=proxy_port):
        await asyncio.to_thread(process.wait_ready, 90)
        report = await kafka_report(endpoints.kafka_bootstrap_servers, prefix, work.truth)
        assert report.ok, report.line()
        assert await asyncio.to_thread(process.sigterm) == 0


def test_metrics_port_in_use_exits_3(endpoints: Endpoints, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "c.yaml", kubeconfig=str(endpoints.kubeconfig),
                              http={"port": port, "address": "127.0.0.1"},
                              sinks=[{"name": "out", "type": "null"}],
                              checkpoint={"path": str(tmp_path / "cp")})
        done = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config",
                               str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cp").exists()  # nothing half-started


async def test_second_signal_forces_exit(endpoints: Endpoints, tmp_path: Path) -> None:
    outage = TcpProxy("127.0.0.1", 1)  # a NATS URL nobody answers: flushing can never end
    async with outage:
        process = bridge(tmp_path, kubeconfig=str(endpoints.kubeconfig),
                         watch={"include": ["*.nothing.keb.example.com/*"]},
                         sinks=[{"name": "js", "type": "nats",
                                 "url": f"nats://127.0.0.1:{outage.port}"}],
                         shutdown_grace=60)
        process.start()
        await asyncio.sleep(3)
        assert process.proc is not None
        process.proc.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        process.proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(process.proc.wait, 10)
    assert code == 1
    assert "second signal" in process.log.read_text()


def leader_and_standby(endpoints: Endpoints, work: Workload, tmp_path: Path, prefix: str,
                       checkpoint: dict[str, object]) -> tuple[BridgeProcess, BridgeProcess]:
    """Two bridges with leader election on one Lease and one checkpoint, Kafka sink."""
    common = {
        "kubeconfig": str(endpoints.kubeconfig), "watch": {"include": [work.include]},
        "sinks": [kafka_sink(endpoints, prefix)], "checkpoint": checkpoint,
        "leader_election": {"enabled": True, "namespace": "default",
                            "name": f"keb-{uuid.uuid4().hex[:6]}", "lease_duration": 4,
                            "renew_deadline": 3, "retry_period": 0.5},
    }
    processes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        processes.append(bridge(tmp_path / name, **common))
    return processes[0], processes[1]


async def test_standby_takes_over_when_the_leader_dies(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    prefix = f"lead{uuid.uuid4().hex[:8]}"
    first, second = leader_and_standby(
        endpoints, work, tmp_path, prefix,
        {"store": "file", "path": str(tmp_path / "shared"), "interval": 0.5})
    first.start()
    await asyncio.to_thread(first.wait_ready)
    second.start()
    await asyncio.to_thread(second.wait_ready)
    assert "standby" in second.get("/readyz")[1]
    await work.run(80)
    first.sigkill()
    killed_at = time.monotonic()
    await work.run(40)
    deadline = time.monotonic() + 30
    while "kube_event_bridge_is_leader 1.0" not in second.get("/metrics")[1]:
        assert time.monotonic() < deadline, second.tail()
        await asyncio.sleep(0.2)
    takeover = time.monotonic() - killed_at
    await work.run(20)
    report = await kafka_report(endpoints.kafka_bootstrap_servers, prefix, work.truth)
    assert await asyncio.to_thread(second.sigterm) == 0
    print(f"\nleader killed; standby leading after {takeover:.1f}s; {report.line()}")
    assert takeover < 4 + 3, "a standby must take over within the lease duration"
    assert report.ok, report.line()
    assert report.duplicate_ids_match


def test_kinds_table(endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    config = write_config(tmp_path / "c.yaml", kubeconfig=str(endpoints.kubeconfig),
                          watch={"include": [work.include], "builtins": ["v1/secrets",
                                                                          "apps/v1/deployments"],
                                 "exclude": [f"*/{work.kinds[1].plural}"]},
                          sinks=[{"name": "out", "type": "null"}])
    done = subprocess.run([sys.executable, "-m", "bridge.cli", "kinds", "--config",
                           str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines()[1:] if line.strip()
            and "/" in line.split()[1]}
    alpha = next(v for k, v in rows.items() if work.kinds[0].group in k)
    beta = next(v for k, v in rows.items() if work.kinds[1].group in k)
    assert " yes " in alpha and "watch.include" in alpha
    assert " no " in beta and "watch.exclude" in beta
    assert "sensitive built-in" in rows["core/v1/secrets"]
    assert "not matched by watch.include" in rows["apps/v1/deployments"]


async def test_a_paused_leader_that_lost_its_lease_stops_and_the_new_leader_saves(
        endpoints: Endpoints, kube: k8s.ApiClient, tmp_path: Path) -> None:
    """Issue 12 finding 6: a leader frozen (SIGSTOP) past its lease while a standby takes
    over, then resumed (SIGCONT), must stop (exit 1) without sending or saving; the new
    leader's checkpoint writes keep succeeding (configmap store, the deploy default); 0 lost."""
    work = Workload(kube)
    work.setup()
    prefix = f"zomb{uuid.uuid4().hex[:8]}"
    first, second = leader_and_standby(
        endpoints, work, tmp_path, prefix,
        {"store": "configmap", "namespace": "default", "id": prefix, "interval": 0.5})
    first.start()
    await asyncio.to_thread(first.wait_ready)
    second.start()
    await asyncio.to_thread(second.wait_ready)
    writer = asyncio.create_task(work.run(150, pause=0.01))
    await asyncio.sleep(1.0)
    assert first.proc is not None
    first.proc.send_signal(signal.SIGSTOP)  # mid-flight: events handed on, not yet saved
    deadline = time.monotonic() + 30
    while "kube_event_bridge_is_leader 1.0" not in second.get("/metrics")[1]:
        assert time.monotonic() < deadline, second.tail()
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the new leader works (and writes its checkpoint) meanwhile
    first.proc.send_signal(signal.SIGCONT)
    assert await asyncio.to_thread(first.proc.wait, 30) == 1, first.tail()
    await writer
    await work.run(20)
    report = await kafka_report(endpoints.kafka_bootstrap_servers, prefix, work.truth)
    _, metrics_text = second.get("/metrics")
    assert await asyncio.to_thread(second.sigterm) == 0, second.tail()
    print(f"\nzombie leader stopped with exit 1; new leader: {report.line()}")
    assert report.ok, report.line()
    assert report.duplicate_ids_match
    assert 'kube_event_bridge_checkpoint_saves_total{result="error"}' not in metrics_text, \
        second.tail()
    assert "NOT SAVED" not in second.log.read_text()
    log = first.log.read_text()
    assert "lost the leader Lease" in log or "fenced" in log, first.tail()
