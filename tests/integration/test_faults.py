"""Hostile API server answers: the real bridge daemon behind ``tests.faultproxy`` in front of
the real kube-apiserver, a workload of creates/updates/deletes in two CRD kinds, one test
per fault class (issue 12; the README's guarantees: no silent stops, every retry backs off).

Each test audits the jsonl sink against the API server's answers (0 lost), bounds the
requests per second the bridge sent while the fault lasted, measures the time to recover
(from the end of the fault, or its injection for one-shot faults, until a change written
then to the faulted kind is delivered), and prints one line with those figures; the module
ends with a summary table.

Writes to a faulted kind between the fault and its recovery count as written in a gap: a
stream that restarts may re-list and diff (the README's guarantee for gaps), which legitimately
skips superseded intermediate states; final states and deletions stay owed.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from kubernetes import client as k8s

from tests.auditor import Report, audit
from tests.daemon import BridgeProcess, bridge
from tests.env.world import Endpoints
from tests.faultproxy import FaultProxy
from tests.readback import Received
from tests.workload import Workload

pytestmark = pytest.mark.world

OBJECTS = 8  # per kind
WATCH_RATE_BOUND = 2.0  # requests/s per kind once the first seconds of a fault are over
RESULTS: list[str] = []


class FaultWorkload(Workload):
    """The shared workload, restricted to two namespaced kinds, whose writes to the kinds
    in ``gap_kinds`` count as written in a gap."""

    gap_kinds: frozenset[int] = frozenset()

    def _mark(self, k: int) -> None:
        self.truth.in_gap = k in self.gap_kinds

    def _create(self, k: int, name: str) -> None:
        self._mark(k)
        super()._create(k, name)

    def _update(self, k: int, name: str) -> None:
        self._mark(k)
        super()._update(k, name)

    def _delete(self, k: int, name: str) -> None:
        self._mark(k)
        super()._delete(k, name)

    def probe(self, k: int) -> str:
        """Create one object of kind ``k`` now; the event id it must produce."""
        name = f"probe{self.counter}"
        self.counter += 1
        self._create(k, name)
        uid = self.live[(k, name)]
        return f"{uid}/{self.truth.states[uid][-1]}"


@pytest.fixture(scope="module")
def suffix(kube: k8s.ApiClient) -> str:
    """Two CRD kinds, created once for the module (each test has its own namespace)."""
    found = uuid.uuid4().hex[:6]
    work = FaultWorkload(kube, suffix=found)
    work.kinds = work.kinds[:2]
    work.setup()
    return found


@pytest.fixture(scope="module", autouse=True)
def summary() -> Iterator[None]:
    yield
    if RESULTS:
        print("\nfault | requests of the faulted kind (all) while it lasted | recovery | lost")
        for line in RESULTS:
            print(f"  {line}")


@dataclass
class Samples:
    """/readyz and gauges, sampled while a fault lasts."""

    readyz: list[int] = field(default_factory=list)
    source_up: list[float] = field(default_factory=list)
    stream_up: list[float] = field(default_factory=list)


class FaultRun:
    def __init__(self, proxy: FaultProxy, work: FaultWorkload, tmp: Path) -> None:
        self.proxy = proxy
        self.work = work
        self.tmp = tmp
        self.events = tmp / "events.jsonl"
        self.process: BridgeProcess | None = None
        kinds = work.kinds
        self.faulted = f"{kinds[0].plural}.{kinds[0].group}"  # proxy's name for kind 0
        self.other = f"{kinds[1].plural}.{kinds[1].group}"

    @property
    def bridge(self) -> BridgeProcess:
        assert self.process is not None, "start() first"
        return self.process

    async def start(self, **watch: object) -> None:
        """The bridge daemon, its API server being the proxy, one jsonl sink."""
        settings = {"include": [self.work.include], "namespaces": [self.work.namespace],
                    **watch}
        self.process = bridge(
            self.tmp, cluster="faults", shutdown_grace=10, watch=settings,
            kubeconfig=str(self.proxy.kubeconfig(self.tmp / "kubeconfig-proxy")),
            sinks=[{"name": "out", "type": "jsonl", "path": str(self.events)}])
        self.process.start()
        await asyncio.to_thread(self.process.wait_ready, 60)

    def received(self) -> list[Received]:
        """The sink's complete lines so far (the bridge may be writing the last one)."""
        try:
            raw = self.events.read_bytes()
        except FileNotFoundError:
            return []
        out = []
        for index, line in enumerate(raw[:raw.rfind(b"\n") + 1].splitlines()):
            doc = orjson.loads(line)
            data = doc.pop("data", None)
            out.append(Received({k: str(v) for k, v in doc.items()}, data, "", index))
        return out

    def delivered(self) -> set[str]:
        return {r.id for r in self.received()}

    async def write(self, changes: int, pause: float = 0.0) -> None:
        await self.work.run(changes, OBJECTS, pause)

    async def probe(self, k: int) -> str:
        return await asyncio.to_thread(self.work.probe, k)

    async def delivered_within(self, ids: set[str], timeout: float) -> float:
        """Seconds until every id in ``ids`` is delivered; fails after ``timeout``."""
        started = time.monotonic()
        while not ids <= self.delivered():
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"not delivered within {timeout:.0f}s: {sorted(ids - self.delivered())}"
                    f"\nproxy: {dict(self.proxy.counts(since=started))}"
                    f"\n{self.bridge.tail(30)}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def recovered(self, k: int, since: float, timeout: float = 40) -> float:
        """A probe written now to kind ``k`` is delivered: seconds from ``since``; from
        then on its writes are owed exactly again."""
        await self.delivered_within({await self.probe(k)}, timeout)
        self.work.gap_kinds = frozenset()
        return time.monotonic() - since

    def metrics(self) -> str:
        return self.bridge.get("/metrics")[1]

    def gauge(self, name: str, **labels: str) -> float | None:
        return metric(self.metrics(), name, **labels)

    async def sample(self, until: float, kind: str | None = None) -> Samples:
        """Sample /readyz, ``source_up`` and ``stream_up`` (of ``kind``) until ``until``."""
        out = Samples()
        while time.monotonic() < until:
            status, _ = await asyncio.to_thread(self.bridge.get, "/readyz")
            text = await asyncio.to_thread(self.metrics)
            out.readyz.append(status)
            up = metric(text, "kube_event_bridge_source_up")
            if up is not None:
                out.source_up.append(up)
            if kind is not None:
                flowing = metric(text, "kube_event_bridge_stream_up", kind=kind)
                if flowing is not None:
                    out.stream_up.append(flowing)
            await asyncio.sleep(0.4)
        return out

    async def finish(self, fault: str, began: float, ended: float, recovery: float,
                     ) -> Report:
        """Write a last batch, wait until nothing owed is missing, stop, audit, and print the
        faulted kind's and all requests in [began, ended) with the recovery time and lost."""
        await self.write(20)
        deadline = time.monotonic() + 60
        while True:
            report = audit(self.work.truth, self.received())
            if not report.lost or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        code = await asyncio.to_thread(self.bridge.sigterm)
        seconds = ended - began
        kind = len(self.proxy.select(self.faulted, since=began, until=ended))
        every = len(self.proxy.select(since=began, until=ended))
        line = (f"{fault:34} | {kind:3} ({every:3}) requests in {seconds:4.1f} s = "
                f"{kind / seconds:5.2f}/s ({every / seconds:5.2f}/s) | {recovery:5.1f} s | "
                f"{len(report.lost)}")
        RESULTS.append(line)
        print(f"\nFAULT {line}    [{report.line()}]")
        assert report.ok, f"{fault}: {report.line()}\n{self.bridge.tail()}"
        assert code == 0, self.bridge.tail()
        assert kind <= WATCH_RATE_BOUND * seconds + 4, \
            f"{kind} requests of {self.faulted} in {seconds:.1f}s: {self.proxy.counts(began)}"
        return report


def metric(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples of ``name`` whose labels include ``labels``; None if none."""
    total: float | None = None
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$")
    for line in text.splitlines():
        found = pattern.match(line)
        if found is None:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(found.group(2))
    return total


@pytest.fixture
async def run(endpoints: Endpoints, kube: k8s.ApiClient, suffix: str,
              tmp_path: Path) -> AsyncIterator[FaultRun]:
    work = FaultWorkload(kube, suffix=suffix, namespace=f"fault-{uuid.uuid4().hex[:8]}")
    work.kinds = work.kinds[:2]
    await asyncio.to_thread(work.setup)
    async with FaultProxy.from_kubeconfig(endpoints.kubeconfig) as proxy:
        fault_run = FaultRun(proxy, work, tmp_path)
        try:
            yield fault_run
        finally:
            process = fault_run.process
            if process is not None and process.proc is not None \
                    and process.proc.poll() is None:
                process.sigkill()


async def started(run: FaultRun, **watch: object) -> None:
    """The bridge runs through the proxy (``watch`` settings added), has synced, and has
    delivered a first workload."""
    await run.start(**watch)
    await run.write(30)
    await run.delivered_within({await run.probe(0), await run.probe(1)}, 20)


async def test_watch_closed_at_once_backs_off(run: FaultRun) -> None:
    """(a) Every watch of one kind answered with an empty 200: a very short watch is an
    error, retried with client-go-like backoff, not at once."""
    await started(run)
    seconds = 8.0
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    run.proxy.empty_watches(run.faulted, seconds)
    run.proxy.cut(run.faulted)  # the live watch ends, the next ones meet the fault
    writer = asyncio.create_task(run.write(40, pause=0.1))
    samples = await run.sample(began + seconds, kind=run.work.kinds[0].kind)
    await writer
    ended = time.monotonic()
    settled = run.proxy.rate(run.faulted, since=began + 2, until=ended)
    per_second = run.proxy.per_second(run.faulted, began, ended)
    recovery = await run.recovered(0, ended)
    up_again = run.gauge("kube_event_bridge_stream_up", kind=run.work.kinds[0].kind)
    await run.finish("a. watch closed at once", began, ended, recovery)
    assert settled <= WATCH_RATE_BOUND, f"{settled:.1f} requests/s; per second {per_second}"
    assert sum(per_second) <= WATCH_RATE_BOUND * seconds + 4, per_second
    assert 0.0 in samples.stream_up, f"stream_up never 0 while no watch held: {samples}"
    assert up_again == 1.0, f"stream_up after recovery: {up_again}"


async def test_malformed_line_restarts_that_kind_only(run: FaultRun) -> None:
    """(b) One line that is not JSON in one kind's stream: that kind restarts (counted) and
    catches up; the other kind keeps flowing meanwhile."""
    await started(run)
    kind = run.work.kinds[0].kind
    restarts = run.gauge("kube_event_bridge_stream_restarts_total", kind=kind) or 0.0
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    await run.proxy.malformed_line(run.faulted)
    other = await run.probe(1)
    await run.write(20)
    await run.delivered_within({other}, 5)  # the other kind never stopped
    recovery = await run.recovered(0, began, timeout=30)
    ended = time.monotonic()
    after = run.gauge("kube_event_bridge_stream_restarts_total", kind=kind) or 0.0
    await run.finish("b. malformed line", began, ended, recovery)
    assert after > restarts, f"stream_restarts_total{{kind={kind}}}: {restarts} -> {after}"


async def test_truncated_chunked_body(run: FaultRun) -> None:
    """(c) A watch response that ends inside a chunk, mid-line: resumed, nothing lost."""
    await started(run)
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    await run.proxy.truncate(run.faulted)
    await run.write(20)
    recovery = await run.recovered(0, began, timeout=30)
    ended = time.monotonic()
    await run.finish("c. truncated chunked body", began, ended, recovery)


async def test_500_storm_backs_off_and_loses_nothing(run: FaultRun) -> None:
    """(d) Every request answered 500 for 15 s (open watches cut): retries back off, readiness
    and ``source_up`` show the source unreachable, then everything written meanwhile
    arrives."""
    await started(run)
    seconds = 15.0
    run.work.gap_kinds = frozenset({0, 1})
    began = time.monotonic()
    run.proxy.fail(500, seconds)
    writer = asyncio.create_task(run.write(60, pause=0.1))
    samples = await run.sample(began + seconds)
    await writer
    ended = time.monotonic()
    per_kind = {k: run.proxy.rate(k, since=began + 3, until=ended)
                for k in (run.faulted, run.other)}
    everything = run.proxy.rate(since=began, until=ended)
    recovery = await run.recovered(0, ended)
    await run.delivered_within({await run.probe(1)}, 40)
    run.work.gap_kinds = frozenset()
    back = await ready_again(run, ended, timeout=45)  # every stream, the CRD watch too
    source_up = run.gauge("kube_event_bridge_source_up")
    print(f"\n500 storm: /readyz {sorted(set(samples.readyz))} during it, 200 again "
          f"{back[1]:.1f}s after it; source_up during it {sorted(set(samples.source_up))}")
    await run.finish("d. 500 for 15 s", began, ended, recovery)
    for kind, rate in per_kind.items():
        assert rate <= WATCH_RATE_BOUND, f"{kind}: {rate:.1f} requests/s"
    assert everything <= 10, f"{everything:.1f} requests/s in all: {run.proxy.counts(began)}"
    assert 503 in samples.readyz, f"/readyz stayed {set(samples.readyz)} while the API " \
        "server answered 500 to everything"
    assert 0.0 in samples.source_up, f"source_up during the storm: {samples.source_up}"
    assert back[0] == 200 and source_up == 1.0, (back, source_up)


async def ready_again(run: FaultRun, since: float, timeout: float) -> tuple[int, float]:
    """Until /readyz answers 200 (or ``timeout``): its last status and seconds from
    ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        status, why = await asyncio.to_thread(run.bridge.get, "/readyz")
        if status == 200 or time.monotonic() > deadline:
            if status != 200:
                print(f"/readyz still {status}: {why}")
            return status, time.monotonic() - since
        await asyncio.sleep(0.2)


async def test_429_retry_after_is_honoured(run: FaultRun) -> None:
    """(d) 429 with Retry-After: 2 to every request of one kind for 8 s: the bridge waits at
    least that long between its requests, then catches up."""
    await started(run)
    seconds, retry_after = 8.0, 2
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    run.proxy.fail(429, seconds, kind=run.faulted, retry_after=retry_after)
    await run.write(40, pause=0.1)
    await asyncio.sleep(max(0.0, began + seconds - time.monotonic()))
    ended = time.monotonic()
    times = [r.at for r in run.proxy.select(run.faulted, since=began, until=ended)]
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
    recovery = await run.recovered(0, ended)
    await run.finish("d. 429 Retry-After 2 s for 8 s", began, ended, recovery)
    assert gaps and min(gaps) >= 0.9 * retry_after, f"gaps between requests: {gaps}"


async def test_stalled_body_hits_the_read_timeout(run: FaultRun) -> None:
    """(e) One kind's watch goes silent with the connection open: after watch.read_timeout
    (5 s) the bridge reconnects and catches up; the other kind flows meanwhile."""
    await started(run, read_timeout=5)
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    await run.proxy.stall(run.faulted)
    await run.write(20)
    await run.delivered_within({await run.probe(1)}, 4)
    recovery = await run.recovered(0, began, timeout=30)
    ended = time.monotonic()
    await run.finish("e. stalled body (read_timeout 5 s)", began, ended, recovery)
    assert recovery < 5 + 10, f"recovered {recovery:.1f}s after the stall"


async def test_oversized_line(run: FaultRun) -> None:
    """(f) One watch line longer than the transport accepts: the stream fails (it does not
    buffer without bound or die silently), restarts and catches up."""
    from bridge.kube.transport import MAX_LINE

    await started(run)
    run.work.gap_kinds = frozenset({0})
    began = time.monotonic()
    await run.proxy.oversized_line(run.faulted, MAX_LINE + (1 << 20), timeout=60)
    await run.write(20)
    recovery = await run.recovered(0, began, timeout=40)
    ended = time.monotonic()
    await run.finish("f. oversized line", began, ended, recovery)


async def test_the_proxy_does_what_it_says(endpoints: Endpoints) -> None:
    """The proxy itself, seen by a plain HTTP client (so a bridge failure above is the
    bridge's): each fault as a client meets it, and the request counts."""
    import aiohttp

    path = "/api/v1/namespaces/default/configmaps"
    outcomes: dict[str, str] = {}

    async def watch(proxy: FaultProxy, name: str, read_timeout: float = 2) -> None:
        timeout = aiohttp.ClientTimeout(total=15, sock_read=read_timeout)
        lines = []
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                    proxy.url + path, params={"watch": "1", "allowWatchBookmarks": "true"},
            ) as resp:
                async for line in resp.content:
                    lines.append(line)
            outcomes[name] = f"ended {resp.status} lines={len(lines)}"
        except Exception as exc:
            outcomes[name] = f"{type(exc).__name__} lines={len(lines)} " + \
                ("malformed " if any(b"not JSON" in line for line in lines) else "")

    async with FaultProxy.from_kubeconfig(endpoints.kubeconfig) as proxy:
        for name in ("malformed", "truncate", "stall", "oversized", "cut"):
            async with asyncio.timeout(10):
                while proxy.live():  # the previous client's stream is gone
                    await asyncio.sleep(0.05)
            client = asyncio.create_task(watch(proxy, name))
            async with asyncio.timeout(10):
                while not proxy.live("configmaps"):
                    assert not client.done(), (name, outcomes, proxy.requests[-3:])
                    await asyncio.sleep(0.05)
            if name == "malformed":
                await proxy.malformed_line("configmaps")
                await asyncio.sleep(0.3)
                proxy.cut()
            elif name == "truncate":
                await proxy.truncate("configmaps")
            elif name == "stall":
                await proxy.stall("configmaps")
            elif name == "oversized":
                await proxy.oversized_line("configmaps", 2 << 20)
            else:
                proxy.cut("configmaps")
            await client
        proxy.empty_watches("configmaps", 1)
        await watch(proxy, "empty")
        proxy.fail(429, 1, kind="configmaps", retry_after=3)
        async with aiohttp.ClientSession() as session:
            async with session.get(proxy.url + path) as resp:
                outcomes["429"] = f"{resp.status} Retry-After={resp.headers['Retry-After']}"
            async with session.get(proxy.url + "/api/v1/namespaces") as resp:
                outcomes["other kind"] = str(resp.status)
        counts = proxy.counts()
    assert outcomes["malformed"].startswith("ClientPayloadError") and "malformed" in \
        outcomes["malformed"], outcomes
    assert outcomes["truncate"].startswith("ClientPayloadError"), outcomes
    assert outcomes["stall"].startswith("SocketTimeoutError"), outcomes
    assert outcomes["oversized"].startswith("LineTooLong"), outcomes  # aiohttp's own limit
    assert outcomes["cut"].startswith("ClientPayloadError"), outcomes
    assert outcomes["empty"] == "ended 200 lines=0", outcomes
    assert outcomes["429"] == "429 Retry-After=3" and outcomes["other kind"] == "200", outcomes
    assert counts == {("GET", "configmaps", True): 6, ("GET", "configmaps", False): 1,
                      ("GET", "namespaces", False): 1}, counts
