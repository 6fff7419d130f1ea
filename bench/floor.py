"""Where the floor is: the replayed watch stream only read over HTTP and parsed (what any
bridge must do before the null sink); the same plus building each change's CloudEvent with
our builder (the least a bridge honouring the event contract does, without tracking,
checkpoints or delivery); and each broker client alone sending pre-built CloudEvent-sized
messages as fast as it can (same settings as our sinks)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.stream import GROUP, KINDS, watch_lines
from bridge.events.builder import EventBuilder
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType

_DELTA_TYPES = {"ADDED": DeltaType.ADDED, "MODIFIED": DeltaType.UPDATED,
                "DELETED": DeltaType.DELETED}


def _builds(plural: str, kind: str) -> Callable[[dict[str, Any]], object]:
    """Watch event -> our CloudEvent, and nothing else."""
    resource = Resource(GROUP, "v1", plural, kind, True)
    build = EventBuilder().build

    def handle(event: dict[str, Any]) -> object:
        obj = event["object"]
        meta = obj["metadata"]
        return build(Delta(_DELTA_TYPES[event["type"]], resource, obj, meta["uid"],
                           meta["resourceVersion"], False, plural, 1, time.time(),
                           meta.get("namespace", ""), meta["name"]))
    return handle


async def read_and_parse(port: int, events: int, build: bool = False) -> float:
    """Events/s for reading the replay server's streams (all kinds at once, as the bridge
    does), splitting lines and ``orjson.loads`` of each (``build``: and building its
    CloudEvent)."""
    import aiohttp
    import orjson

    count = 0

    async def one(session: aiohttp.ClientSession, plural: str, kind: str) -> None:
        nonlocal count
        url = f"http://127.0.0.1:{port}/apis/{GROUP}/v1/{plural}"
        handle = _builds(plural, kind) if build else None
        async with session.get(url, params={"watch": "1"}) as response:
            tail = b""
            async for chunk in response.content.iter_any():
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    event = orjson.loads(line)
                    if handle is not None:
                        handle(event)
                count += len(lines)
                if count >= events:
                    return

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        tasks = [asyncio.create_task(one(session, plural, kind)) for plural, kind in KINDS]
        while count < events:
            await asyncio.sleep(0.005)
        rate = count / (time.perf_counter() - started)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return rate


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
