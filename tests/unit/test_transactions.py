"""Exactly-once delivery (bridge.delivery.transactional): transaction sizing, the abort and
retry path, commits in doubt, fencing, and the gate behind other sinks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import pytest
from pydantic import ValidationError

from bridge.checkpoint.tasklock import TaskLock
from bridge.config.model import Config
from bridge.delivery.pipeline import Delivery
from bridge.delivery.transactional import TransactionalWorker, TransactionPlan
from bridge.errors import FencedError
from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from sinks.base import SinkError, SinkSettings
from sinks.kafka import KafkaSettings
from tests.unit.test_delivery import FakeSink, Source, make_deltas


class Broker:
    """A transactional topic: what is sent goes into the open transaction; a commit makes
    it visible (``committed``), an abort drops it."""

    def __init__(self) -> None:
        self.lock = TaskLock()
        self.open: list[str] | None = None
        self.committed: list[list[str]] = []
        self.aborts = 0
        self.fail_commits = 0  # the next commits fail ...
        self.landed = False  # ... after landing (True) or not
        self.doubt = False
        self.fenced = False

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        return self.lock.hold()

    async def begin(self) -> bool:
        if self.fenced:
            raise FencedError("a newer producer took the transactional id")
        assert self.open is None, "a transaction is already open"
        self.open = []
        landed, self.doubt = self.doubt and self.landed, False
        return landed

    async def abort(self) -> None:
        self.aborts += 1
        self.open = None

    async def commit(self) -> None:
        assert self.open is not None, "commit outside a transaction"
        if self.fail_commits:
            self.fail_commits -= 1
            if self.landed:
                self.committed.append(self.open)
            self.open, self.doubt = None, True
            raise TimeoutError("commit: no answer")
        self.committed.append(self.open)
        self.open = None

    def events(self) -> list[str]:
        return [event for txn in self.committed for event in txn]


class TxnSink(FakeSink):
    def __init__(self, broker: Broker, *, fail_sends: int = 0) -> None:
        super().__init__("bus")
        self.settings = SinkSettings(name="bus", type="fake", batch_size=2)
        self.broker = broker
        self.fail_sends = fail_sends

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        assert self.broker.open is not None, "sent outside a transaction"
        if self.fail_sends:
            self.fail_sends -= 1
            self.broker.open.append(events[0].id)  # one landed in the transaction
            return [None] + [SinkError("not enough replicas")] * (len(events) - 1)
        self.broker.open.extend(event.id for event in events)
        return [None] * len(events)


def worker(broker: Broker, sink: TxnSink, acked: list[str], *, max_events: int = 100,
           max_wait: float = 0.0) -> TransactionalWorker:
    plan = TransactionPlan(transactions=broker, commit=broker.commit,
                           max_events=max_events, max_wait=max_wait)
    w = TransactionalWorker(sink, lambda events: acked.extend(e.id for e in events),
                            plan=plan, ready=lambda event: True)
    w._retry = (0.001, 0.002)
    return w


async def run_until(w: TransactionalWorker, done: object, timeout: float = 5) -> None:
    task = asyncio.create_task(w.run())
    try:
        async with asyncio.timeout(timeout):
            while not done():  # type: ignore[operator]
                await asyncio.sleep(0.001)
                if task.done():
                    task.result()
    finally:
        task.cancel()


def submit(w: TransactionalWorker, n: int) -> list[str]:
    builder = EventBuilder()
    events = [builder.build(d) for d in make_deltas(n)]
    w.submit([(event, None) for event in events])
    return [event.id for event in events]


async def test_a_transaction_holds_at_most_max_events() -> None:
    broker, acked = Broker(), []
    w = worker(broker, TxnSink(broker), acked, max_events=3, max_wait=0.05)
    ids = submit(w, 7)
    await run_until(w, lambda: len(broker.events()) == 7)
    assert [len(txn) for txn in broker.committed] == [3, 3, 1]
    assert broker.events() == ids and acked == ids


async def test_a_transaction_commits_after_max_wait_with_what_arrived() -> None:
    broker, acked = Broker(), []
    w = worker(broker, TxnSink(broker), acked, max_events=1000, max_wait=0.2)
    first = submit(w, 2)
    task = asyncio.create_task(w.run())
    await asyncio.sleep(0.05)
    assert broker.committed == []  # still collecting
    more = submit(w, 1)
    async with asyncio.timeout(5):
        while not broker.committed:
            await asyncio.sleep(0.005)
    task.cancel()
    assert broker.committed == [first + more]


async def test_a_failed_send_aborts_and_the_retry_sends_each_event_once() -> None:
    broker, acked = Broker(), []
    w = worker(broker, TxnSink(broker, fail_sends=2), acked)
    ids = submit(w, 5)
    await run_until(w, lambda: len(broker.events()) == 5)
    assert broker.aborts == 2
    assert broker.events() == ids  # the aborted partial sends are not visible
    assert acked == ids  # each acknowledged once


async def test_a_commit_that_did_not_land_is_resent_but_not_acknowledged_twice() -> None:
    broker, acked = Broker(), []
    broker.fail_commits = 2
    w = worker(broker, TxnSink(broker), acked)
    ids = submit(w, 3)
    await run_until(w, lambda: len(broker.events()) == 3)
    assert broker.events() == ids and acked == ids
    assert len(broker.committed) == 1


async def test_a_commit_in_doubt_that_landed_is_not_resent() -> None:
    broker, acked = Broker(), []
    broker.fail_commits, broker.landed = 1, True
    w = worker(broker, TxnSink(broker), acked)
    ids = submit(w, 3)
    await run_until(w, lambda: len(broker.events()) == 3)
    more = submit(w, 1)
    await run_until(w, lambda: len(broker.events()) == 4)
    assert broker.events() == ids + more  # no duplicate of the landed transaction


async def test_a_fenced_producer_ends_the_worker() -> None:
    broker, acked = Broker(), []
    broker.fenced = True
    w = worker(broker, TxnSink(broker), acked)
    submit(w, 1)
    with pytest.raises(FencedError):
        await asyncio.wait_for(w.run(), 5)
    assert broker.committed == [] and acked == []


async def test_events_enter_a_transaction_only_after_the_other_sinks_have_them() -> None:
    broker = Broker()
    nats = FakeSink("nats", fail=3)  # acknowledges late
    bus = TxnSink(broker)
    source = Source(make_deltas(5))
    plan = TransactionPlan(transactions=broker, commit=broker.commit, max_wait=0.0)
    delivery = Delivery(source, EventBuilder(), [nats, bus], exactly_once={"bus": plan})
    for w in delivery.workers:
        w._retry = (0.01, 0.02)
    await delivery.start()
    seen_before: list[tuple[int, int]] = []
    async with asyncio.timeout(5):
        while len(broker.events()) < 5:
            seen_before.append((len(broker.events()), len(nats.accepted)))
            await asyncio.sleep(0.001)
    await delivery.stop()
    assert all(committed <= accepted for committed, accepted in seen_before)
    assert broker.events() == nats.accepted == [f"u/{i}" for i in range(5)]
    assert source.acked == [1, 2, 3, 4, 5]


def eo_config(**checkpoint: object) -> dict[str, object]:
    return {"sinks": [{"name": "bus", "type": "kafka", "bootstrap_servers": "k1:9092,k2:9092",
                       "delivery": "exactly-once",
                       "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"}}],
            "checkpoint": {"store": "kafka", "bootstrap_servers": "k2:9092, k1:9092",
                           **checkpoint}}


def test_exactly_once_checkpoint_security_defaults_to_the_sinks() -> None:
    config = Config.model_validate(eo_config())
    sink = config.sinks[0]
    assert isinstance(sink, KafkaSettings) and config.checkpoint.sasl == sink.sasl


SINK = eo_config()["sinks"][0]  # type: ignore[index]


@pytest.mark.parametrize("document", [
    {"sinks": [SINK], "checkpoint": {"store": "file"}},  # not a kafka store
    eo_config(bootstrap_servers="k3:9092"),  # another cluster
    eo_config(sasl={"mechanism": "PLAIN", "username": "v", "password": "p"}),  # other creds
    {**eo_config(), "sinks": [SINK, {**SINK, "name": "bus2"}]},  # two exactly-once sinks
], ids=["store", "cluster", "security", "two-sinks"])
def test_exactly_once_config_is_refused_unless_paired_with_the_kafka_checkpoint(
        document: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly-once"):
        Config.model_validate(document)
