"""Sinks that break the protocol and dead-letter destinations that fail (issue 12, findings 4
and 5): nothing is acknowledged that no sink and no dead-letter destination holds, and a
sink that stops says so (readiness, metrics, a log line naming it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from bridge.delivery.pipeline import Delivery
from bridge.delivery.worker import SinkWorker
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.metrics import REGISTRY
from sinks.base import SinkError
from tests.unit.test_delivery import FakeSink, Source, make_deltas

FAST = {"retry_initial": 0.001, "retry_max": 0.005}


def sample(metric: str, sink: str) -> float:
    return REGISTRY.get_sample_value("kube_event_bridge_" + metric, {"sink": sink}) or 0.0


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


class ScriptedSink(FakeSink):
    """``send`` answers what ``reply(events)`` returns (or raises)."""

    def __init__(self, name: str, reply: Callable[[Sequence[Event]], Any],
                 types: list[str] | None = None) -> None:
        super().__init__(name, types=types)
        self.reply = reply
        self.sends = 0

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        self.sends += 1
        results: list[SinkError | None] = self.reply(events)
        return results


def events(n: int, first: int = 0) -> list[tuple[Event, str | None]]:
    builder = EventBuilder()
    return [(builder.build(d), None) for d in make_deltas(first + n)[first:]]


# ---- finding 4: sink results are validated ---------------------------------------------------

def too_few(evs: Sequence[Event]) -> Any:
    return [None] * (len(evs) - 1)


def bools(evs: Sequence[Event]) -> Any:
    return [None, *([True] * (len(evs) - 1))]


def nothing(evs: Sequence[Event]) -> Any:
    return None


def junk(evs: Sequence[Event]) -> Any:
    return [None, "ok", None, ValueError("x")]


@pytest.mark.parametrize("reply, shown", [
    pytest.param(too_few, "3 results for 4 events", id="few"),
    pytest.param(bools, "True", id="bools"),
    pytest.param(nothing, "None", id="none"),
    pytest.param(junk, "'ok'", id="junk"),
])
async def test_a_sink_breaking_the_protocol_stops_loudly_and_acks_nothing(
        reply: Callable[[Sequence[Event]], Any], shown: str,
        caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> None:
    name = f"plug-{request.node.callspec.id}"
    sink = ScriptedSink(name, reply)
    acked: list[str] = []
    worker = SinkWorker(sink, lambda evs: acked.extend(e.id for e in evs), **FAST)
    caplog.set_level(logging.INFO, logger="bridge.delivery")
    worker.submit(events(4))
    task = asyncio.create_task(worker.run())
    await until(lambda: sink.sends == 1)
    await asyncio.sleep(0.02)
    assert not task.done()  # the worker parks; it does not die (and so is no fatal end)
    worker.submit(events(4, first=4))  # later events are not sent to a broken sink
    await asyncio.sleep(0.02)
    assert acked == [] and sink.sends == 1
    assert worker.down and "protocol violation" in (worker.down_reason or "")
    assert sample("sink_protocol_errors_total", name) == 1
    assert sample("sink_up", name) == 0
    line = next(r.getMessage() for r in caplog.records if "protocol" in r.getMessage())
    assert name in line and shown in line
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def no_results(evs: Sequence[Event]) -> Any:
    return []


async def test_a_broken_sink_holds_the_checkpoint_back_and_the_other_sinks_go_on() -> None:
    broken = ScriptedSink("broken-added", no_results, types=["added"])  # gets delta 1 only
    good = FakeSink("good-all")
    source = Source(make_deltas(5))
    delivery = Delivery(source, EventBuilder(), [broken, good])
    await delivery.start()
    await until(lambda: len(source.acked) == 4)
    await asyncio.sleep(0.02)
    assert good.accepted == ["u/0", "u/1", "u/2", "u/3", "u/4"]
    assert sorted(source.acked) == [2, 3, 4, 5]  # delta 1 was routed to the broken sink too
    assert delivery.sinks_down() == ["broken-added"]
    assert delivery.in_flight == 1
    await delivery.stop()


async def test_an_unexpected_exception_from_send_is_a_transient_failure() -> None:
    calls = {"n": 0}

    def flaky(evs: Sequence[Event]) -> list[SinkError | None]:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise ConnectionResetError("peer went away")  # a plugin that forgot to wrap it
        return [None] * len(evs)

    sink = ScriptedSink("flaky-raiser", flaky)
    acked: list[str] = []
    worker = SinkWorker(sink, lambda evs: acked.extend(e.id for e in evs), **FAST)
    worker.submit(events(3))
    task = asyncio.create_task(worker.run())
    await until(lambda: len(acked) == 3)
    assert acked == ["u/0", "u/1", "u/2"] and worker.protocol_error is None
    assert not worker.down and sample("sink_protocol_errors_total", "flaky-raiser") == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ---- finding 5: a failing dead-letter destination stalls the sink ------------------------

class DeadLetterFails(FakeSink):
    def __init__(self, name: str, permanent: set[str]) -> None:
        super().__init__(name, permanent=permanent)
        self.dead_letter_ok = False
        self.attempts = 0

    async def dead_letter(self, event: Event, reason: str) -> None:
        self.attempts += 1
        if not self.dead_letter_ok:
            raise OSError("dead-letter file system full")
        self.dead.append(event.id)


async def test_a_failing_dead_letter_is_retried_and_stalls_the_sink_until_it_holds(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bridge.delivery")
    sink = DeadLetterFails("dlq-fails", permanent={"u/1"})
    source = Source(make_deltas(5))  # dispatched as [1, 2] then [3, 4, 5]
    delivery = Delivery(source, EventBuilder(), [sink])
    for worker in delivery.workers:
        worker._retry = (0.001, 0.005)
    await delivery.start()
    await until(lambda: sink.attempts >= 8)  # far beyond the 5 attempts that used to give up
    assert source.acked == [1]  # u/1 is held by no one: neither it nor anything after is acked
    # events sent in u/1's batch (batch_size 4) may be in the sink, unacknowledged; the next
    # batch waits (backpressure)
    assert sink.accepted[0] == "u/0" and "u/4" not in sink.accepted
    assert delivery.sinks_down() == ["dlq-fails"]
    assert sample("sink_up", "dlq-fails") == 0
    assert sample("dead_letter_failures_total", "dlq-fails") >= 8
    line = next(r.getMessage() for r in caplog.records if "dead-letter" in r.getMessage()
                and "u/1" in r.getMessage())
    assert "Thing" in line and "ns/x" in line and "dlq-fails" in line
    assert not any("GAVE UP" in r.getMessage() for r in caplog.records)

    sink.dead_letter_ok = True
    await until(lambda: len(source.acked) == 5)
    assert source.acked == [1, 2, 3, 4, 5] and sink.dead == ["u/1"]
    assert sink.accepted == ["u/0", "u/2", "u/3", "u/4"]
    assert delivery.sinks_down() == [] and sample("sink_up", "dlq-fails") == 1
    await delivery.stop()
