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
- **Replicas** (``sharding.leases``): the shards are claimed through per-shard Leases
  (``bridge.sharding.claims``): this supervisor runs a worker only for the shards it claims,
  each worker holding its shard's Lease as a leader election (identity: this replica's);
  a worker that dies is restarted (it re-takes its own Lease at once), a shard given back is
  drained (SIGTERM) and released.
- **Workers die with the supervisor** (``PR_SET_PDEATHSIG``): a supervisor killed with
  SIGKILL leaves no worker holding a shard.
- **Discovery**: each worker discovers for itself (one CRD list + watch and one discovery
  lookup per built-in kind per worker): docs/scaling.md gives the request cost.
"""

from __future__ import annotations

import asyncio
import ctypes
import datetime as dt
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from bridge.config.model import Config
from bridge.errors import ApiError, TransportError
from bridge.kube import auth
from bridge.kube.transport import HttpTransport
from bridge.leader import default_identity
from bridge.sharding.claims import OBSERVED_ENV, LeaseObserver, plan

log = logging.getLogger("bridge.workers")

BACKOFF_START, BACKOFF_MAX, HEALTHY_AFTER = 1.0, 30.0, 60.0
EXIT_CONFIG = 2


@dataclass(eq=False)
class Worker:
    index: int
    port: int
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[int] | None = None
    wanted: bool = True  # restarted when it ends; False: stopping it
    observed: str = ""  # replicas: the claimer's observation of the shard's Lease
    restarts: int = 0
    started: float = 0.0


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


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the supervisor dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WorkerSupervisor:
    def __init__(self, config_path: str, config: Config, identity: str = "") -> None:
        self.config_path = config_path
        self.config = config
        self.count = config.sharding.count()
        self.identity = identity  # replicas: the identity every worker's Lease is held by
        self.workers: dict[int, Worker] = {}
        self.stopping = asyncio.Event()
        self._ports: set[int] = set()
        self._config_error = False
        self._codes: list[int] = []

    def command(self, worker: Worker) -> list[str]:
        return [sys.executable, "-m", "bridge.cli", "run", "--config", self.config_path,
                "--shard", f"{worker.index}/{self.count}", "--http-address", "127.0.0.1",
                "--http-port", str(worker.port)]

    def start_worker(self, index: int, observed: str = "") -> None:
        """Run shard ``index``'s worker; ``observed``: what the claimer saw of its Lease."""
        worker = self.workers.get(index)
        if worker is None:
            worker = self.workers[index] = Worker(index, free_port(self._ports))
        worker.wanted = True
        worker.observed = observed
        if worker.task is None or worker.task.done():
            worker.task = asyncio.create_task(self._keep(worker), name=f"worker {index}")

    def stop_worker(self, index: int) -> None:
        """Drain and stop one worker (SIGTERM: it flushes, saves its checkpoint and releases
        its Lease)."""
        worker = self.workers.get(index)
        if worker is None:
            return
        worker.wanted = False
        if worker.process is not None and worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)

    async def run(self, *, claims: Coroutine[Any, Any, None] | None = None) -> int:
        """Every shard's worker (or, with ``claims``, the workers it starts) until
        ``stop()``; the exit code: 0 when every worker stopped cleanly."""
        runner = await self._serve()
        claiming = asyncio.create_task(claims) if claims is not None else None
        try:
            if claiming is None:
                for index in range(self.config.sharding.worker_count()):
                    self.start_worker(index)
            await self.stopping.wait()
            tasks = [w.task for w in self.workers.values() if w.task is not None]
            await asyncio.gather(*tasks)
        finally:
            if claiming is not None:
                claiming.cancel()
                await asyncio.gather(claiming, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
        if self._config_error:
            return EXIT_CONFIG
        return 0 if all(code == 0 for code in self._codes) else 1

    def stop(self) -> None:
        self.stopping.set()
        for index in list(self.workers):
            self.stop_worker(index)

    async def _keep(self, worker: Worker) -> int:
        """Run ``worker`` until it is no longer wanted; returns its last exit code."""
        delay = BACKOFF_START
        while True:
            env = None
            if self.identity:
                env = {**os.environ, "POD_NAME": self.identity, OBSERVED_ENV: worker.observed}
            worker.started = time.monotonic()
            worker.process = await asyncio.create_subprocess_exec(
                *self.command(worker), env=env, preexec_fn=_die_with_parent)
            log.info("worker %d (shard %d/%d) started: pid %d, port %d", worker.index,
                     worker.index, self.count, worker.process.pid, worker.port)
            if not worker.wanted:  # stopped while starting it
                worker.process.send_signal(signal.SIGTERM)
            code = await worker.process.wait()
            if not worker.wanted and code == -signal.SIGTERM:
                code = 0  # ended by our SIGTERM before its handler was set: nothing read yet
            if not worker.wanted:
                log.info("worker %d exited with %d", worker.index, code)
                if self.stopping.is_set():
                    self._codes.append(code)
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
            await asyncio.sleep(delay)
            if not worker.wanted:
                return code
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

    def _running(self) -> list[Worker]:
        return sorted((w for w in self.workers.values() if w.wanted), key=lambda w: w.index)

    async def _fetch(self, worker: Worker, path: str) -> tuple[int, str]:
        """(status, body) of a worker's endpoint; (0, reason) when it does not answer."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                    s.get(f"http://127.0.0.1:{worker.port}{path}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"not answering ({exc.__class__.__name__})"

    async def _metrics(self, _: web.Request) -> web.Response:
        workers = self._running()
        answers = await asyncio.gather(*(self._fetch(w, "/metrics") for w in workers))
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(workers, [text for _, text in answers],
                                  [status == 200 for status, _ in answers]))
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        workers = self._running()
        answers = await asyncio.gather(*(self._fetch(w, "/readyz") for w in workers))
        lines = [f"worker {w.index}: {text.strip()}"
                 for w, (_, text) in zip(workers, answers, strict=True)]
        if not workers:
            lines = [f"standby: no shard claimed ({self.identity})"]
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
    supervisor = WorkerSupervisor(config_path, config,
                                  default_identity() if config.sharding.leases else "")

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, supervisor.stop)
        if not config.sharding.leases:
            log.info("running %d worker processes for %d shards",
                     config.sharding.worker_count(), supervisor.count)
            return await supervisor.run()
        credentials = auth.load(config.kubeconfig, config.context)
        transport = HttpTransport(credentials)
        try:
            claimer = Claimer(transport, supervisor, config)
            log.info("replica %s: claiming at most its fair share of %d shards through the "
                     "Leases %s-shard-*", supervisor.identity, supervisor.count,
                     config.leader_election.name)
            return await supervisor.run(claims=claimer.run())
        finally:
            await transport.close()

    return asyncio.run(main())



class Claimer:
    """Claims and gives back shards from the shard Leases, every ``retry_period``, and
    renews this replica's membership Lease (``bridge.sharding.claims``)."""

    def __init__(self, transport: HttpTransport, supervisor: WorkerSupervisor,
                 config: Config) -> None:
        le = config.leader_election
        self.transport = transport
        self.supervisor = supervisor
        self.path = (f"/apis/coordination.k8s.io/v1/namespaces/"
                     f"{le.namespace or auth.own_namespace()}/leases")
        self.prefix = f"{le.name}-shard-"
        digest = blake2b(supervisor.identity.encode(), digest_size=5).hexdigest()
        self.members = f"{le.name}-replica-"
        self.member = self.members + digest
        self.duration = max(1, round(le.lease_duration))
        self.period = le.retry_period
        self.observer = LeaseObserver()

    async def leases(self) -> dict[str, dict[str, Any]]:
        """Every Lease in the namespace, by name (one list request)."""
        listed = orjson.loads(await self.transport.request("GET", self.path))
        return {str((lease.get("metadata") or {}).get("name")): lease
                for lease in listed.get("items") or []}

    async def renew_membership(self, current: dict[str, Any] | None) -> None:
        spec = {"holderIdentity": self.supervisor.identity,
                "leaseDurationSeconds": self.duration,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        if current is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.member}, "spec": spec}
            await self.transport.request("POST", self.path, body=orjson.dumps(body))
        else:
            await self.transport.request("PUT", f"{self.path}/{self.member}",
                                         body=orjson.dumps({**current, "spec": spec}))

    async def run(self) -> None:
        supervisor = self.supervisor
        try:
            while not supervisor.stopping.is_set():
                try:
                    await self.round()
                except (ApiError, TransportError) as exc:
                    log.warning("shard leases cannot be read or renewed (%s): keeping the "
                                "shards claimed", exc)
                await asyncio.sleep(self.period)
        finally:
            try:
                await self.transport.request("DELETE", f"{self.path}/{self.member}")
            except (ApiError, TransportError) as exc:
                log.info("membership lease %s not deleted: %s", self.member, exc)

    async def round(self) -> None:
        supervisor = self.supervisor
        leases = await self.leases()
        await self.renew_membership(leases.get(self.member))
        ours = {name: lease.get("spec") or {} for name, lease in leases.items()
                if name.startswith((self.prefix, self.members))}
        held = self.observer.holders(ours, time.monotonic())
        holders = {int(name.removeprefix(self.prefix)): holder
                   for name, holder in held.items() if name.startswith(self.prefix)
                   and name.removeprefix(self.prefix).isdigit()}
        members = {holder for name, holder in held.items() if name.startswith(self.members)}
        running = {w.index for w in supervisor.workers.values() if w.wanted}
        decided = plan(supervisor.count, supervisor.identity,
                       {shard: holder for shard, holder in holders.items()
                        if shard < supervisor.count}, running, members)
        for shard in decided.release:
            log.info("giving back shard %d (held by %s)", shard,
                     holders.get(shard) or "this replica")
            supervisor.stop_worker(shard)
        for shard in decided.claim:
            log.info("claiming shard %d", shard)
            supervisor.start_worker(shard, self.observer.seen(self.prefix + str(shard)))
