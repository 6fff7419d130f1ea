"""Where the floor is: each broker client alone, sending pre-built CloudEvent-sized messages
as fast as it can (same settings as our sinks), with nothing of ours in the loop."""

from __future__ import annotations

import asyncio
import time
import uuid

from bench.stream import watch_lines


def _messages(count: int) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    lines = [line for group in watch_lines(count).values() for line in group][:count]
    headers = [(f"ce_attr{i}", b"x" * 24) for i in range(15)]
    return [(line, headers) for line in lines]


async def kafka(bootstrap: str, count: int) -> float:
    from aiokafka import AIOKafkaProducer

    messages = _messages(count)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                linger_ms=5, max_batch_size=1_048_576)
    await producer.start()
    topic = f"floor{uuid.uuid4().hex[:8]}"
    await producer.send_and_wait(topic, b"warm-up")
    started = time.perf_counter()
    futures = [await producer.send(topic, value, key=str(i % 500).encode(), headers=headers)
               for i, (value, headers) in enumerate(messages)]
    await asyncio.gather(*futures)
    rate = count / (time.perf_counter() - started)
    await producer.stop()
    return rate


async def nats(url: str, count: int) -> float:
    import nats as nats_client

    messages = _messages(count)
    nc = await nats_client.connect(url)
    js = nc.jetstream(publish_async_max_pending=8000)
    stream = f"FLOOR{uuid.uuid4().hex[:8].upper()}"
    await js.add_stream(name=stream, subjects=[f"{stream}.>"])
    started = time.perf_counter()
    futures = []
    for i, (value, headers) in enumerate(messages):
        futures.append(await js.publish_async(
            f"{stream}.s{i % 20}", value,
            headers={"Nats-Msg-Id": f"m{i}", **{k: "x" * 24 for k, _ in headers}}))
    await asyncio.wait_for(asyncio.gather(*futures), 120)
    rate = count / (time.perf_counter() - started)
    await nc.close()
    return rate
