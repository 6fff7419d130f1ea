"""Reading the bridge's Kafka topics (aiokafka): every partition of every matching topic.

A view needs every partition, so partitions are *assigned*, not balanced by a group; the
``group_id`` only stores the committed offsets (one group per informer: two informers in
one group would commit over each other). At start every partition is read from its
beginning (a compacted topic holds each object's last record; tombstones are honoured):
records before the committed offset rebuild the view and reach the handlers as
``replayed``, the rest is new. Topics that appear later (a CRD created at run time) are
found every ``discovery_interval`` seconds and read from their beginning.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from kube_event_consumer.decode import decode_kafka
from kube_event_consumer.errors import DecodeError, SourceError
from kube_event_consumer.event import Event, Tombstone
from kube_event_consumer.source import Batch, Commit, Message


@dataclass(kw_only=True)
class KafkaSource:
    """``topics``: a regular expression a topic name must match in full (e.g.
    ``k8s\\..*``). ``isolation_level``: ``read_committed`` (the default) sees only committed
    transactions, so each change of an exactly-once sink once. ``options``: more
    ``AIOKafkaConsumer`` arguments (security, client id, ...)."""

    bootstrap_servers: str
    topics: str
    group_id: str | None = None
    isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed"
    batch_size: int = 2000
    discovery_interval: float = 2.0
    options: dict[str, Any] = field(default_factory=dict)
    _consumer: AIOKafkaConsumer | None = field(default=None, init=False, repr=False)
    _positions: dict[TopicPartition, int] = field(default_factory=dict, init=False, repr=False)
    _replay_until: dict[TopicPartition, int] = field(default_factory=dict, init=False,
                                                     repr=False)
    _targets: dict[TopicPartition, int] | None = field(default=None, init=False, repr=False)
    _discovered_at: float = field(default=0.0, init=False, repr=False)

    async def start(self) -> None:
        consumer = self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers, group_id=self.group_id,
            enable_auto_commit=False, isolation_level=self.isolation_level,
            auto_offset_reset="earliest", **self.options)
        try:
            await consumer.start()
            await self._discover()
            self._targets = await consumer.end_offsets(list(self._positions))
        except KafkaError as exc:
            raise SourceError(f"kafka {self.bootstrap_servers}: {exc!r}") from exc

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def next_batch(self) -> Batch:
        consumer = self._consumer
        if consumer is None:
            raise SourceError("KafkaSource.next_batch before start")
        try:
            if time.monotonic() - self._discovered_at > self.discovery_interval:
                await self._discover()
            if not self._positions:
                return Batch()
            fetched = await consumer.getmany(timeout_ms=200, max_records=self.batch_size)
            messages: list[Message] = []
            offsets: dict[TopicPartition, int] = {}
            for tp, records in fetched.items():
                until = self._replay_until.get(tp, 0)
                for record in records:
                    payload: Event | Tombstone | DecodeError
                    try:
                        payload = decode_kafka(tp.topic, record.key, record.value,
                                               record.headers)
                    except DecodeError as exc:
                        payload = exc
                    messages.append(Message(payload, record.offset < until, tp.topic))
                if records and records[-1].offset + 1 > until:
                    offsets[tp] = records[-1].offset + 1
            for tp in self._positions:
                self._positions[tp] = await consumer.position(tp)
        except KafkaError as exc:
            raise SourceError(f"kafka {self.bootstrap_servers}: {exc!r}") from exc
        return Batch(messages, self._caught_up(), self._committer(offsets))

    def _caught_up(self) -> bool:
        targets = self._targets
        if targets is None:
            return False
        if all(self._positions.get(tp, 0) >= end for tp, end in targets.items()):
            self._targets = None  # from now on always caught up
            return True
        return False

    def _committer(self, offsets: dict[TopicPartition, int]) -> Commit | None:
        consumer = self._consumer
        if self.group_id is None or not offsets or consumer is None:
            return None

        async def commit() -> None:
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:
                raise SourceError(f"kafka commit: {exc!r}") from exc
        return commit

    async def _discover(self) -> None:
        """Assign the partitions of matching topics not yet assigned (every earlier one
        keeps its position)."""
        consumer = self._consumer
        assert consumer is not None
        self._discovered_at = time.monotonic()
        pattern = re.compile(self.topics)
        # the metadata of every topic, with partitions (``consumer.topics()`` gives only
        # names, and ``partitions_for_topic`` knows only topics already assigned)
        cluster = await consumer._client.fetch_all_metadata()
        found = [TopicPartition(topic, partition)
                 for topic in sorted(cluster.topics()) if pattern.fullmatch(topic)
                 for partition in sorted(cluster.partitions_for_topic(topic) or ())]
        new = [tp for tp in found if tp not in self._positions]
        if not new:
            return
        consumer.assign([*self._positions, *new])
        for tp, position in self._positions.items():
            consumer.seek(tp, position)
        for tp in new:
            committed = await consumer.committed(tp) if self.group_id else None
            self._replay_until[tp] = committed or 0
        await consumer.seek_to_beginning(*new)
        for tp in new:
            self._positions[tp] = await consumer.position(tp)
