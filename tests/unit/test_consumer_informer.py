"""The informer over a fake source: handlers, commits after them, synced, anomalies, kinds;
and the package importing with nothing of the daemon installed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from kube_event_consumer import (
    Anomaly,
    Batch,
    Change,
    DecodeError,
    HandlerError,
    Informer,
    Message,
    Tombstone,
)
from tests.unit.test_consumer_view import KIND, ev


class FakeSource:
    """Hands out scripted batches, then waits forever; records commits."""

    def __init__(self, *batches: Batch) -> None:
        self.batches = list(batches)
        self.log: list[str] = []
        self.closed = False

    def batch(self, *messages: Message, caught_up: bool = False) -> Batch:
        n = len(self.batches)

        async def commit() -> None:
            self.log.append(f"commit {n}")
        batch = Batch(list(messages), caught_up, commit)
        self.batches.append(batch)
        return batch

    async def start(self) -> None:
        self.log.append("start")

    async def next_batch(self) -> Batch:
        if self.batches:
            return self.batches.pop(0)
        await asyncio.sleep(3600)
        return Batch()

    async def close(self) -> None:
        self.closed = True


async def test_handlers_see_transitions_then_the_batch_is_committed() -> None:
    source = FakeSource()
    source.batch(Message(ev("added", "5", 1), replayed=True), Message(ev("updated", "6", 2)))
    source.batch(Message(ev("updated", "6", 3)), Message(ev("deleted", "6", 4)),
                 caught_up=True)
    informer = Informer(source)
    seen: list[tuple[str, str, bool, str | None]] = []

    def record(change: Change) -> None:
        previous = change.previous.resource_version if change.previous else None
        seen.append((change.type.value, change.event.resource_version, change.replayed,
                     previous))
        source.log.append(f"handle {change.type.value}")

    async def deleted(change: Change) -> None:  # async handlers are awaited
        await asyncio.sleep(0)
        record(change)

    informer.on_added(record)
    informer.on_updated(record)
    informer.on_deleted(deleted)
    async with informer:
        await informer.wait_synced(5)
    assert seen == [("added", "5", True, None), ("updated", "6", False, "5"),
                    ("deleted", "6", False, "6")]
    assert source.log == ["start", "handle added", "handle updated", "commit 0",
                          "handle deleted", "commit 1"]
    assert (informer.stats.applied, informer.stats.duplicates) == (3, 1)
    assert len(informer.view) == 0 and source.closed


async def test_a_failing_handler_stops_the_informer_before_the_commit() -> None:
    source = FakeSource()
    source.batch(Message(ev("added", "5", 1)), caught_up=True)
    informer = Informer(source)

    @informer.on_added
    def fail(change: Change) -> None:
        raise RuntimeError("downstream is down")

    with pytest.raises(HandlerError) as raised:
        await informer.run()
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert source.log == ["start"] and source.closed and not informer.synced.is_set()


async def test_anomalies_are_reported_and_counted() -> None:
    anomalies: list[Anomaly] = []
    source = FakeSource()
    source.batch(Message(ev("updated", "7", 5)), caught_up=True)
    source.batch(Message(ev("updated", "6", 4)),  # sent before rv 7: out of order
                 Message(ev("updated", "9", 9, uid="u2", name="other")),  # never seen: gap
                 Message(DecodeError("garbage")))
    informer = Informer(source, on_anomaly=anomalies.append)
    async with informer:
        await informer.wait_synced(5)
        while informer.stats.received < 4:
            await asyncio.sleep(0.01)
    assert [a.kind for a in anomalies] == ["out_of_order", "gap", "undecodable"]
    stats = informer.stats
    assert (stats.out_of_order, stats.gaps, stats.undecodable, stats.applied) == (1, 1, 1, 2)
    assert informer.view.get(KIND, "demo", "orders")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]


async def test_kinds_filter_and_tombstones() -> None:
    source = FakeSource()
    other = ev("added", "3", 1, uid="cm")
    object.__setattr__(other, "kind", "ConfigMap")
    source.batch(Message(ev("added", "5", 1), topic="t"), Message(other, topic="t"),
                 Message(Tombstone("t", "u1"), topic="t"), caught_up=True)
    informer = Informer(source, kinds=["Database"])
    deleted: list[str] = []
    informer.on_deleted(lambda change: deleted.append(change.event.uid))
    async with informer:
        await informer.wait_synced(5)
    assert deleted == ["u1"] and len(informer.view) == 0
    assert (informer.stats.skipped, informer.stats.tombstones) == (1, 1)


async def test_wait_synced_times_out_and_reraises_a_stopped_run() -> None:
    informer = Informer(FakeSource())
    async with informer:
        with pytest.raises(TimeoutError):
            await informer.wait_synced(0.05)
    source = FakeSource()
    source.batch(Message(ev("added", "5", 1)))
    failing = Informer(source)
    failing.on_added(lambda change: 1 / 0)
    with pytest.raises(HandlerError):  # raised by wait_synced, and by the exit
        async with failing:
            with pytest.raises(HandlerError):
                await failing.wait_synced(5)


BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED}:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
import kube_event_consumer, kube_event_consumer.{module}
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED}))
"""


@pytest.mark.parametrize("module,without", [
    ("kafka", ["nats", "orjson"]), ("nats", ["aiokafka"]),
])
def test_importable_with_only_its_broker_client(module: str, without: list[str]) -> None:
    blocked = {"bridge", "sinks", "kubernetes", "prometheus_client", "pydantic", "aiohttp",
               "cloudevents", "yaml", *without}
    code = textwrap.dedent(BLOCKER.format(BLOCKED=sorted(blocked), module=module))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok []", out.stderr
