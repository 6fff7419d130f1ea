"""Exactly-once (Kafka transactions) vs at-least-once (the idempotent producer), same stream.

Both run as the daemon runs them, on the same replayed watch stream, into the world's Kafka:

- ``at-least-once``: the Kafka sink's idempotent producer; the write-ahead journal on a file
  store, awaited before each dispatch.
- ``exactly-once (N events / T s)``: the sink sends through the Kafka checkpoint store's
  transactional producer; each transaction (at most N events, open at most T s) is committed
  by the checkpoint flush inside it.

Latency is per event, from the moment its change was read to the moment a consumer can see
it: the sink's acknowledgement for at-least-once, the transaction's commit for exactly-once
(``read_committed``). The replay is flat out, so these are latencies under saturation.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from bench.pipeline import ReplayServer, replay_engine
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.store import CheckpointStore
from bridge.checkpoint.writer import CheckpointWriter
from bridge.delivery.pipeline import Delivery
from bridge.delivery.transactional import TransactionPlan
from bridge.events.builder import EventBuilder
from bridge.watch.delta import Delta
from bridge.watch.engine import WatchEngine
from sinks.kafka import KafkaSettings, KafkaSink, TransactionSettings, producer_options


@dataclass(frozen=True)
class Mode:
    name: str
    transaction: TransactionSettings | None = None  # None: at-least-once


MODES = (Mode("at-least-once"),
         Mode("exactly-once (1,000 events / 0.05 s)", TransactionSettings(max_events=1000,
                                                                         max_wait=0.05)),
         Mode("exactly-once (10,000 events / 0.5 s)", TransactionSettings(max_events=10_000,
                                                                         max_wait=0.5)))


@dataclass
class Outcome:
    name: str
    events: int
    seconds: float
    p50: float
    p99: float
    transactions: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class Visible:
    """The engine as delivery's source, timing when acknowledged changes become visible."""

    def __init__(self, engine: WatchEngine, *, at_commit: bool) -> None:
        self.engine = engine
        self.at_commit = at_commit
        self.waiting: list[float] = []  # observed_at of changes acked, not yet committed
        self.latencies: list[float] = []
        self.commits = 0

    def __aiter__(self):  # type: ignore[no-untyped-def]
        return self.engine.__aiter__()

    def ack(self, deltas: Sequence[Delta]) -> None:
        now = time.time()
        if self.at_commit:
            self.waiting.extend(d.observed_at for d in deltas)
        else:
            self.latencies.extend(now - d.observed_at for d in deltas)
        self.engine.ack(deltas)

    def committed(self) -> None:
        now = time.time()
        self.commits += 1
        self.latencies.extend(now - observed for observed in self.waiting)
        self.waiting = []


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def one(server: ReplayServer, mode: Mode, kafka: str) -> Outcome:
    run = uuid.uuid4().hex[:8]
    transport, engine = replay_engine(server, journal=True)
    eo = mode.transaction is not None
    settings = KafkaSettings(
        name="bus", bootstrap_servers=kafka, topic=f"eo{run}" + ".{plural}", batch_size=5000,
        delivery="exactly-once" if eo else "at-least-once",
        transaction=mode.transaction or TransactionSettings())
    directory = tempfile.mkdtemp(prefix="keb-bench-eo-")
    store: CheckpointStore
    if eo:
        kafka_store = KafkaStore(kafka, f"eo{run}-checkpoints", run,
                                 producer_options=producer_options(settings, 1_000_000))
        store = kafka_store
        sink = KafkaSink(settings, transactions=kafka_store)
    else:
        store = FileStore(directory, "default.checkpoint")
        sink = KafkaSink(settings)
    await store.load()
    await sink.connect()
    writer = CheckpointWriter(store, engine.trackers,
                              exclusive=kafka_store.exclusive if eo else None)
    await writer.flush()
    source = Visible(engine, at_commit=eo)
    plans = {}
    if mode.transaction is not None:
        async def commit() -> None:
            await writer.flush(commit=True)
            source.committed()
        plans["bus"] = TransactionPlan(transactions=kafka_store, commit=commit,
                                       max_events=mode.transaction.max_events,
                                       max_wait=mode.transaction.max_wait)
    delivery = Delivery(source, EventBuilder(), [sink],
                        durable=None if eo else writer.durable, exactly_once=plans)
    wall = time.perf_counter()
    writing = asyncio.create_task(writer.run())
    await delivery.start()
    await engine.start()
    while len(source.latencies) < server.events:
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - wall
    await engine.stop()
    await delivery.stop()
    writing.cancel()
    await asyncio.gather(writing, return_exceptions=True)
    await store.close()
    shutil.rmtree(directory, ignore_errors=True)
    await transport.close()
    return Outcome(mode.name, server.events, seconds, _percentile(source.latencies, 0.5),
                   _percentile(source.latencies, 0.99), source.commits)


def run(events: int, kafka: str) -> list[Outcome]:
    outcomes = []
    with ReplayServer(events) as server:
        for mode in MODES:
            outcomes.append(asyncio.run(one(server, mode, kafka)))
            o = outcomes[-1]
            print(f"  {o.name}: {o.rate:,.0f} events/s, latency p50 {o.p50 * 1000:.0f} ms "
                  f"p99 {o.p99 * 1000:.0f} ms ({o.transactions} transactions; "
                  f"{o.rate / outcomes[0].rate:.2f}x at-least-once)", flush=True)
    return outcomes
