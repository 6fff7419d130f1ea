"""The NATS sink's own PubAck matching against a real server: every way an acknowledgement
can fail (no stream, an API error, a lost ack, a lost connection) ends as a failed result,
promptly, and never as a hang; ``max_pending`` bounds what is unacknowledged."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from bridge.events.builder import EventBuilder
from bridge.events.event import Event
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from sinks.base import SinkError
from sinks.nats import NatsSettings, NatsSink
from tests.env.world import Endpoints
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.world

THINGS = Resource("acks.keb.example.com", "v1", "things", "Thing", True)


def events(count: int, blob: int = 100) -> list[Event]:
    builder = EventBuilder()
    out = []
    for n in range(count):
        uid = str(uuid.uuid4())
        obj = {"apiVersion": "acks.keb.example.com/v1", "kind": "Thing",
               "metadata": {"name": f"t{n}", "namespace": "ns", "uid": uid,
                            "resourceVersion": str(n + 1)},
               "spec": {"blob": "x" * blob}}
        out.append(builder.build(Delta(DeltaType.ADDED, THINGS, obj, uid, str(n + 1), False,
                                       "things", n + 1, 1_700_000_000.0, "ns", f"t{n}")))
    return out


def sink(url: str, prefix: str, **settings: object) -> NatsSink:
    return NatsSink(NatsSettings(name="n", url=url, stream=prefix.upper(),
                                 subject=prefix + ".{plural}.{name}", **settings))


def failures(results: list[SinkError | None]) -> list[SinkError]:
    assert all(r is not None for r in results), results
    return [r for r in results if r is not None]


@pytest.fixture
def prefix() -> str:
    return f"acks{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def client(endpoints: Endpoints) -> AsyncIterator[Client]:
    nc = await nats.connect(endpoints.nats_url)
    yield nc
    await nc.close()


async def test_no_stream_for_the_subject_fails_fast(endpoints: Endpoints, prefix: str) -> None:
    s = sink(endpoints.nats_url, prefix, ack_timeout=30)
    try:
        started = time.monotonic()
        errors = failures(await s.send(events(3)))
    finally:
        await s.close()
    assert time.monotonic() - started < 5  # the 503 status answers at once
    assert all(e.transient and "503" in str(e) for e in errors)


async def test_api_error_400_is_permanent(endpoints: Endpoints, prefix: str,
                                          client: Client) -> None:
    js = client.jetstream()
    await js.add_stream(StreamConfig(name=prefix.upper(), subjects=[f"{prefix}.>"],
                                     max_msg_size=2048))
    s = sink(endpoints.nats_url, prefix)
    try:
        small, big, other = events(3, blob=100)[0], events(1, blob=4000)[0], events(1)[0]
        results = await s.send([small, big, other])
    finally:
        await s.close()
        await js.delete_stream(prefix.upper())
    assert results[0] is None and results[2] is None
    assert results[1] is not None and not results[1].transient and "400" in str(results[1])


async def test_lost_acks_time_out_and_max_pending_bounds_publishes(
        endpoints: Endpoints, prefix: str, client: Client) -> None:
    seen: list[Msg] = []

    async def swallow(msg: Msg) -> None:  # a responder that never acknowledges
        seen.append(msg)
    await client.subscribe(f"{prefix}.>", cb=swallow)
    await client.flush()
    s = sink(endpoints.nats_url, prefix, ack_timeout=0.5, max_pending=2)
    try:
        started = time.monotonic()
        errors = failures(await s.send(events(5)))
        elapsed = time.monotonic() - started
        await client.flush()
    finally:
        await s.close()
    assert 0.5 <= elapsed < 3
    assert all(e.transient for e in errors)
    assert len(seen) == 2, "max_pending=2: the third publish waits for an ack that never comes"


async def test_replies_are_matched_to_their_events(endpoints: Endpoints, prefix: str,
                                                   client: Client) -> None:
    """A stand-in for JetStream answers each publish by its name: a PubAck, a duplicate's
    PubAck, API errors, garbage, or a late PubAck after the sink gave up."""
    replies = {
        "t0": b'{"stream":"S","seq":1}',
        "t1": b'{"stream":"S","seq":1,"duplicate":true}',
        "t2": b'{"error":{"code":503,"err_code":10077,"description":"unavailable"}}',
        "t3": b'{"stream":"S","seq":0,"error":{"code":400,"err_code":10054,'
              b'"description":"message size exceeds maximum allowed"}}',
        "t4": b"not json",
    }

    async def respond(msg: Msg) -> None:
        name = msg.subject.rsplit(".", 1)[1]
        if name in replies:
            await msg.respond(replies[name])
        else:
            await asyncio.sleep(1)  # after the sink's ack_timeout
            await msg.respond(b'{"stream":"S","seq":9}')
    await client.subscribe(f"{prefix}.>", cb=respond)
    await client.flush()
    s = sink(endpoints.nats_url, prefix, ack_timeout=0.5)
    try:
        results = await s.send(events(6))
        await asyncio.sleep(1)  # the late ack arrives and must change nothing
        again = await s.send(events(2))
    finally:
        await s.close()
    assert results[0] is None and results[1] is None
    transient = [r is not None and r.transient for r in results[2:]]
    assert transient == [True, False, True, True]
    assert "no PubAck" in str(results[5])
    assert again == [None, None]


async def test_disconnect_mid_batch_fails_fast_and_resend_stores_once(
        endpoints: Endpoints, prefix: str, client: Client) -> None:
    port = int(endpoints.nats_url.rsplit(":", 1)[1])
    js = client.jetstream()
    sent = events(5000, blob=1500)
    async with TcpProxy("127.0.0.1", port) as proxy:
        s = sink(f"nats://127.0.0.1:{proxy.port}", prefix, create_stream=True,
                 ack_timeout=60, max_pending=8000)
        await s.connect()
        try:
            started = time.monotonic()
            sending = asyncio.create_task(s.send(sent))
            while (await js.stream_info(prefix.upper())).state.messages == 0:
                await asyncio.sleep(0.001)
            await proxy.cut()
            results = await sending
            assert time.monotonic() - started < 30, "waited for acks of a lost connection"
            assert any(r is not None for r in results), "cut after the last ack"
            assert all(r is None or r.transient for r in results)
            retry = [e for e, r in zip(sent, results, strict=True) if r is not None]
            for _ in range(50):  # as delivery does, until the client has reconnected
                results = await s.send(retry)
                retry = [e for e, r in zip(retry, results, strict=True) if r is not None]
                if not retry:
                    break
                await asyncio.sleep(0.2)
            assert not retry
        finally:
            await s.close()
    info = await js.stream_info(prefix.upper())
    await js.delete_stream(prefix.upper())
    assert info.state.messages == len(sent)  # every event stored, re-sends de-duplicated


async def test_frames_carry_what_nats_py_publish_would(endpoints: Endpoints, prefix: str,
                                                       client: Client,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The sink writes HPUB frames itself; with nats-py's own publish() (used where a release
    lacks the internals) the server must see the very same messages."""
    seen: list[tuple[str, dict[str, str] | None, bytes]] = []

    async def record(msg: Msg) -> None:
        seen.append((msg.subject, msg.headers, msg.data))
        await msg.respond(b'{"stream":"S","seq":1}')
    await client.subscribe(f"{prefix}.>", cb=record)
    await client.flush()
    sent = events(3)
    sent[1].attributes["subject"] = "ns/ünïcode %value"  # percent-encoded on the wire
    for frames in (True, False):
        monkeypatch.setattr("sinks.nats._FRAMES", frames)
        s = sink(endpoints.nats_url, prefix)
        try:
            assert await s.send(sent) == [None, None, None]
        finally:
            await s.close()
    assert len(seen) == 6
    assert seen[:3] == seen[3:]
    assert seen[1][1] is not None and seen[1][1]["ce-subject"] == "ns/%C3%BCn%C3%AFcode %25value"
