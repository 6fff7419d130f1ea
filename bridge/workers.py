"""Worker processes on one host: ``sharding.workers`` processes, each running one shard
(``run --shard I/N``), under this supervisor process.

- **Restart.** A worker that ends while the supervisor is not stopping (crash, kill -9, exit
  1 after a fenced checkpoint) is restarted with backoff (1 s doubling up to 30 s, reset
  after 60 s of running); it resumes from its shard's checkpoint, so nothing is lost (the
  changes in flight when it died are sent again, same ids). Exit code 2 (invalid config) is
  not retried: every worker is stopped and the supervisor exits 2.
- **One /metrics.** Each worker serves its endpoints on a loopback port the supervisor picked;
  the supervisor's ``/metrics`` fetches every worker's and merges them, each sample with a
  ``worker`` label (plus ``kube_event_bridge_worker_up`` and
  ``kube_event_bridge_worker_restarts_total``). Scraping the workers (rather than
  prometheus_client's multiprocess mode) keeps each worker a complete, ordinary bridge
  process (gauges with callbacks, per-process collectors, its own /readyz) and needs no
  shared directory whose stale files outlive a killed worker.
- **Readiness** = every worker answers ``/readyz`` 200; ``/healthz``: the supervisor runs.
- **SIGTERM/SIGINT** are forwarded to every worker, which flushes and saves its checkpoint;
  the supervisor exits with 0 when every worker exited 0, else 1.
- **Discovery**: each worker discovers for itself (one CRD list + watch and one discovery
  lookup per built-in kind per worker): docs/scaling.md gives the request cost.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bridge.config.model import Config

log = logging.getLogger("bridge.workers")

BACKOFF_START, BACKOFF_MAX, HEALTHY_AFTER = 1.0, 30.0, 60.0
EXIT_CONFIG = 2


@dataclass(eq=False)
class Worker:
    index: int
    port: int
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


def free_port(taken: set[int], address: str = "127.0.0.1") -> int:
    """A free loopback port below the kernel's ephemeral range (32768-60999 on Linux): a
    restarted worker binds it again, and no outgoing connection can take it meanwhile."""
    while True:
        port = random.randrange(20_000, 32_000)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
        taken.add(port)
        return port


class WorkerSupervisor:
    def __init__(self, config_path: str, config: Config) -> None:
        self.config_path = config_path
        self.config = config
        self.count = config.sharding.count()
        ports: set[int] = set()
        self.workers = [Worker(i, free_port(ports))
                        for i in range(config.sharding.worker_count())]
        self.stopping = asyncio.Event()
        self._config_error = False

    def command(self, worker: Worker) -> list[str]:
        return [sys.executable, "-m", "bridge.cli", "run", "--config", self.config_path,
                "--shard", f"{worker.index}/{self.count}", "--http-address", "127.0.0.1",
                "--http-port", str(worker.port)]

    async def run(self) -> int:
        runner = await self._serve()
        try:
            codes = await asyncio.gather(*(self._keep(w) for w in self.workers))
        finally:
            if runner is not None:
                await runner.cleanup()
        if self._config_error:
            return EXIT_CONFIG
        return 0 if all(code == 0 for code in codes) else 1

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)

    async def _keep(self, worker: Worker) -> int:
        """Run ``worker`` until the supervisor stops; returns its last exit code."""
        delay = BACKOFF_START
        while True:
            worker.started = time.monotonic()
            worker.process = await asyncio.create_subprocess_exec(*self.command(worker))
            log.info("worker %d (shard %d/%d) started: pid %d, port %d", worker.index,
                     worker.index, self.count, worker.process.pid, worker.port)
            if self.stopping.is_set():  # stopped while starting it
                worker.process.send_signal(signal.SIGTERM)
            code = await worker.process.wait()
            worker.exit_codes.append(code)
            if self.stopping.is_set():
                log.info("worker %d exited with %d", worker.index, code)
                return code
            if code == EXIT_CONFIG:
                log.error("worker %d: invalid configuration (exit 2): stopping", worker.index)
                self._config_error = True
                self.stop()
                return code
            if time.monotonic() - worker.started >= HEALTHY_AFTER:
                delay = BACKOFF_START
            worker.restarts += 1
            log.warning("worker %d exited with %d; restarting it in %.0fs from its shard's "
                        "checkpoint", worker.index, code, delay)
            try:
                await asyncio.wait_for(self.stopping.wait(), delay)
                return code
            except TimeoutError:
                pass
            delay = min(delay * 2, BACKOFF_MAX)

    # ---- the endpoints -----------------------------------------------------------------

    async def _serve(self) -> web.AppRunner | None:
        http = self.config.http
        if not http.port:
            return None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, http.address, http.port).start()
        return runner

    async def _fetch(self, worker: Worker, path: str) -> tuple[int, str]:
        """(status, body) of a worker's endpoint; (0, reason) when it does not answer."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                    s.get(f"http://127.0.0.1:{worker.port}{path}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"not answering ({exc.__class__.__name__})"

    async def _metrics(self, _: web.Request) -> web.Response:
        answers = await asyncio.gather(*(self._fetch(w, "/metrics") for w in self.workers))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(self.workers, [text for _, text in answers],
                                  [status == 200 for status, _ in answers]))
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        answers = await asyncio.gather(*(self._fetch(w, "/readyz") for w in self.workers))
        lines = [f"worker {w.index}: {text.strip()}"
                 for w, (_, text) in zip(self.workers, answers, strict=True)]
        ready = all(status == 200 for status, _ in answers)
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")


class _Merged:
    """Every worker's metric families, each sample labelled with its worker."""

    def __init__(self, workers: list[Worker], texts: list[str], up: list[bool]) -> None:
        self._workers, self._texts, self._up = workers, texts, up

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for worker, text, up in zip(self._workers, self._texts, self._up, strict=True):
            if not up:
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation,
                                                             family.type, family.unit)
                merged.samples.extend(
                    Sample(s.name, {**s.labels, "worker": str(worker.index)}, s.value,
                           s.timestamp, s.exemplar) for s in family.samples)
        yield from families.values()
        worker_up = Metric("kube_event_bridge_worker_up", "1 while the worker answers its "
                           "/metrics", "gauge")
        restarts = Metric("kube_event_bridge_worker_restarts", "worker processes restarted "
                          "by the supervisor", "counter")
        for worker, up in zip(self._workers, self._up, strict=True):
            labels = {"worker": str(worker.index)}
            worker_up.samples.append(Sample("kube_event_bridge_worker_up", labels,
                                            1.0 if up else 0.0))
            restarts.samples.append(Sample("kube_event_bridge_worker_restarts_total", labels,
                                           float(worker.restarts)))
        yield worker_up
        yield restarts


def run_workers(config_path: str, config: Config) -> int:
    """The ``run`` command with more than one worker: supervise them until SIGTERM/SIGINT."""
    from bridge import logs

    logs.setup(config.logging.format, config.logging.level)
    supervisor = WorkerSupervisor(config_path, config)
    log.info("running %d worker processes for %d shards", len(supervisor.workers),
             supervisor.count)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, supervisor.stop)
        return await supervisor.run()

    return asyncio.run(main())

