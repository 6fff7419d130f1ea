"""``kafka``: a compacted topic. Chunks ``{id}/{generation}-{token}/{i}`` are written first,
then the manifest under key ``{id}``; the previous generation's chunks get tombstones. Loading reads
the topic from the beginning to its end offsets and keeps the newest value per key."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bridge.checkpoint.chunks import Manifest, digest, join, split

CHUNK = 512 * 1024


class KafkaStore:
    def __init__(self, bootstrap_servers: str, topic: str, checkpoint_id: str) -> None:
        self.bootstrap = bootstrap_servers
        self.topic = topic
        self.id = checkpoint_id
        self.description = f"kafka topic {topic} key {checkpoint_id} at {bootstrap_servers}"
        self._producer: AIOKafkaProducer | None = None
        self._current: Manifest | None = None

    async def _ensure_topic(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(
                self.topic, num_partitions=1, replication_factor=1,
                topic_configs={"cleanup.policy": "compact", "max.message.bytes": "2097152"})])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def _get_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                        enable_idempotence=True,
                                        max_request_size=2 * 1024 * 1024)
            await producer.start()
            self._producer = producer
        return self._producer

    async def load(self) -> bytes:
        await self._ensure_topic()
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    isolation_level="read_committed")
        await consumer.start()
        latest: dict[bytes, bytes | None] = {}
        try:
            partition = TopicPartition(self.topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            end = (await consumer.end_offsets([partition]))[partition]
            while await consumer.position(partition) < end:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                for record in batch.get(partition, []):
                    if record.key is not None:
                        latest[record.key] = record.value
        finally:
            await consumer.stop()
        raw = latest.get(self.id.encode())
        if not raw:
            return b""
        manifest = self._current = Manifest.loads(raw)
        chunks = [latest.get(f"{self.id}/{manifest.prefix}/{i}".encode()) or b""
                  for i in range(manifest.chunks)]
        return join(manifest, chunks)

    async def save(self, blob: bytes) -> None:
        producer = await self._get_producer()
        parts = split(blob, CHUNK)
        manifest = Manifest((self._current.generation if self._current else 0) + 1,
                            len(parts), digest(blob))
        sends = [await producer.send(self.topic, part,
                                     key=f"{self.id}/{manifest.prefix}/{i}".encode())
                 for i, part in enumerate(parts)]
        for sent in sends:
            await sent
        await producer.send_and_wait(self.topic, manifest.dumps(), key=self.id.encode())
        old, self._current = self._current, manifest
        if old is not None:
            for index in range(old.chunks):
                await producer.send(self.topic, None,
                                    key=f"{self.id}/{old.prefix}/{index}".encode())

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        self._producer = None
