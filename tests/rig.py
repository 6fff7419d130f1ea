"""A bridge process wired to real Kafka and NATS, a workload, and the auditor around them
(shared by the end-to-end and chaos tests)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from tests.auditor import Report, Truth, audit
from tests.daemon import BridgeProcess, bridge
from tests.env.world import Endpoints
from tests.readback import Received, kafka_all, kafka_topics, nats_all
from tests.workload import Workload


async def kafka_report(bootstrap: str, prefix: str, truth: Truth,
                       timeout: float = 30) -> Report:
    """Audit the topics under ``prefix`` until nothing owed is missing (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        report = audit(truth, await kafka_all(bootstrap, await kafka_topics(bootstrap, prefix)))
        if not report.lost or time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.5)


class Rig:
    def __init__(self, endpoints: Endpoints, kube: k8s.ApiClient, tmp: Path,
                 **config: Any) -> None:
        self.endpoints = endpoints
        self.tmp = tmp
        self.work = Workload(kube)
        self.work.setup()
        run = uuid.uuid4().hex[:8]
        self.topic_prefix = f"e2e{run}"
        self.stream = f"E2E{run.upper()}"
        self.config: dict[str, Any] = {
            "cluster": "e2e",
            "kubeconfig": str(endpoints.kubeconfig),
            "watch": {"include": [self.work.include]},
            "sinks": [
                {"name": "bus", "type": "kafka",
                 "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                 "topic": self.topic_prefix + ".{group}.{plural}"},
                {"name": "js", "type": "nats", "url": endpoints.nats_url,
                 "stream": self.stream, "create_stream": True, "duplicate_window": 600,
                 "subject": f"e2e{run}" + ".{group}.{plural}.{namespace}.{name}"},
            ],
            "shutdown_grace": 30,
            **config,
        }
        self.process = self.bridge("main")

    def bridge(self, name: str, **overrides: Any) -> BridgeProcess:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)
        config = {**self.config, **overrides}
        config.setdefault("checkpoint", {"store": "file", "path": str(self.tmp / "checkpoint"),
                                         "interval": 0.5})
        return bridge(folder, **config)

    async def kafka(self) -> list[Received]:
        topics = await kafka_topics(self.endpoints.kafka_bootstrap_servers,
                                    self.topic_prefix + ".")  # not a checkpoint topic
        return await kafka_all(self.endpoints.kafka_bootstrap_servers, topics)

    async def nats(self) -> list[Received]:
        return await nats_all(self.endpoints.nats_url, self.stream)

    async def reports(self) -> tuple[Report, Report]:
        return (audit(self.work.truth, await self.kafka()),
                audit(self.work.truth, await self.nats()))

    async def settle(self, timeout: float = 90) -> tuple[Report, Report, float]:
        """Wait until both sinks hold every owed change (or time out); returns the audits and
        how long catching up took."""
        started = time.monotonic()
        while True:
            kafka, nats = await self.reports()
            if (not kafka.lost and not nats.lost) or time.monotonic() - started > timeout:
                return kafka, nats, time.monotonic() - started
            await asyncio.sleep(0.5)


async def watching_again(rig: Rig) -> None:
    """Until a probe change written now to every kind is delivered: from then on every stream
    watches from a valid position, so every later change is owed exactly (earlier ones were
    in a gap)."""
    probes = set(rig.work.probes())
    deadline = time.monotonic() + 60
    while not probes <= {r.id for r in await rig.kafka()}:
        assert time.monotonic() < deadline, rig.process.tail()
        await asyncio.sleep(0.2)
    rig.work.truth.in_gap = False
