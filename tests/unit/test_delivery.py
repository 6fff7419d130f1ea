from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from bridge.delivery.pipeline import Delivery
from bridge.delivery.size import SizePolicy
from bridge.delivery.worker import SinkWorker
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.watch.delta import Delta, DeltaType
from sinks.base import RouteFilter, SinkError, SinkSettings
from tests.unit.test_events import THING


class FakeSink:
    """Fails the first ``fail`` sends from event index ``at`` on; records what it accepted."""

    def __init__(self, name: str, fail: int = 0, at: int = 0, permanent: set[str] | None = None,
                 types: list[str] | None = None) -> None:
        self.settings = SinkSettings(name=name, type="fake", batch_size=4,
                                     filter=RouteFilter(types=types or []))  # type: ignore[arg-type]
        self.fail, self.at = fail, at
        self.permanent = permanent or set()
        self.accepted: list[str] = []
        self.dead: list[str] = []

    async def connect(self) -> None:
        return None

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        results: list[SinkError | None] = []
        for index, event in enumerate(events):
            if event.id in self.permanent:
                results.append(SinkError("rejected", transient=False))
            elif self.fail and index >= self.at:
                results.append(SinkError("broker away"))
            else:
                self.accepted.append(event.id)
                results.append(None)
        if self.fail:
            self.fail -= 1
        return results

    async def dead_letter(self, event: Event, reason: str) -> None:
        self.dead.append(event.id)

    async def close(self) -> None:
        return None

    @property
    def healthy(self) -> bool:
        return True


def make_deltas(n: int) -> list[Delta]:
    return [Delta(DeltaType.UPDATED if i else DeltaType.ADDED, THING,
                  {"metadata": {"name": "x", "namespace": "ns", "uid": "u"}}, "u", str(i),
                  False, "s", i + 1, 0.0, "ns", "x") for i in range(n)]


async def test_retries_resend_from_the_first_failure_in_order() -> None:
    sink = FakeSink("a", fail=2, at=1)
    acked: list[str] = []
    worker = SinkWorker(sink, lambda events: acked.extend(e.id for e in events),
                        retry_initial=0.001, retry_max=0.002)
    builder = EventBuilder()
    worker.submit([(builder.build(d), None) for d in make_deltas(4)])
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(5):
        while len(acked) < 4:
            await asyncio.sleep(0.001)
    task.cancel()
    assert acked == ["u/0", "u/1", "u/2", "u/3"]  # each acked once, in order
    assert sink.accepted == ["u/0", "u/1", "u/2", "u/3"]


async def test_permanent_failures_are_dead_lettered_and_acked() -> None:
    sink = FakeSink("a", permanent={"u/1"})
    acked: list[str] = []
    worker = SinkWorker(sink, lambda events: acked.extend(e.id for e in events))
    builder = EventBuilder()
    worker.submit([(builder.build(d), None) for d in make_deltas(3)])
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(5):
        while len(acked) < 3:
            await asyncio.sleep(0.001)
    task.cancel()
    assert sink.dead == ["u/1"] and acked == ["u/0", "u/1", "u/2"]


class Source:
    def __init__(self, deltas: list[Delta]) -> None:
        self.deltas = deltas
        self.acked: list[int] = []

    def __aiter__(self) -> AsyncIterator[list[Delta]]:
        return self._gen()

    async def _gen(self) -> AsyncIterator[list[Delta]]:
        yield self.deltas[:2]
        yield self.deltas[2:]
        await asyncio.Event().wait()

    def ack(self, deltas: Sequence[Delta]) -> None:
        self.acked.extend(delta.sequence for delta in deltas)


async def test_a_delta_is_acked_only_when_every_routed_sink_has_it() -> None:
    slow = FakeSink("slow", fail=3)
    fast = FakeSink("fast")
    deletes_only = FakeSink("deletes", types=["deleted"])
    source = Source(make_deltas(5))
    delivery = Delivery(source, EventBuilder(), [slow, fast, deletes_only])
    for worker in delivery.workers:
        worker._retry = (0.01, 0.02)
    await delivery.start()
    async with asyncio.timeout(5):
        while len(fast.accepted) < 5:
            await asyncio.sleep(0.001)
    assert source.acked == []  # the slow sink has not acknowledged yet
    async with asyncio.timeout(5):
        while len(source.acked) < 5:
            await asyncio.sleep(0.005)
    await delivery.stop()
    assert source.acked == [1, 2, 3, 4, 5]
    assert deletes_only.accepted == []
    assert delivery.in_flight == 0


def test_size_policy_trims_then_references_or_dead_letters() -> None:
    builder = EventBuilder()
    d = make_deltas(1)[0]
    d.obj["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration":
                                        "x" * 5000}
    event = builder.build(d)
    trimmed, reason = SizePolicy(max_bytes=3000).apply(event)
    assert reason is None and trimmed.attributes["truncated"] == "fields"
    d.obj["spec"] = {"blob": "y" * 5000}
    big = builder.build(d)
    ref, reason = SizePolicy(max_bytes=3000).apply(big)
    assert reason is None and ref.attributes["truncated"] == "reference"
    assert ref.attributes["dataref"].endswith("/things/x") and ref.size() < 3000
    same, reason = SizePolicy(max_bytes=3000, oversize="dead-letter").apply(big)
    assert same is big and reason is not None and "exceeds" in reason
