"""Retry pacing of a stream (finding 2): very short watches, backoff reset, Retry-After.

Time is virtual (``VirtualTime``): rates are asserted over simulated seconds, so the tests
are exact and fast whatever the machine does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise

import orjson
import pytest

from bridge.errors import ApiError
from bridge.kube.transport import api_error
from bridge.watch.backoff import Pacing
from bridge.watch.reflector import Reflector
from bridge.watch.supervisor import keep_running
from bridge.watch.tracker import StreamCheckpoint, StreamTracker
from tests.unit.fakeapi import FakeApi, VirtualTime
from tests.unit.test_reflector import PATH, Collect, reflector_for, restarts


def watches(api: FakeApi) -> list[float]:
    return [at for at, verb, path in api.stamps if verb == "WATCH" and path == PATH]


@asynccontextmanager
async def stream(api: FakeApi, vt: VirtualTime, *, resume: bool = True,
                 **opts: object) -> AsyncIterator[Reflector]:
    """One supervised stream on virtual time (``resume``: from a checkpoint position, so
    its attempts are plain watches)."""
    api.clock = vt.clock
    checkpoint = StreamCheckpoint(resource_version=str(api.rv)) if resume else None
    tracker = StreamTracker(checkpoint or StreamCheckpoint())
    pacing = Pacing(clock=vt.clock, sleep=vt.sleep)
    reflector = reflector_for(api, tracker, Collect(tracker), pacing, **opts)
    task = asyncio.create_task(keep_running(reflector))
    try:
        yield reflector
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.mark.parametrize("resume", [True, False])
async def test_a_watch_closed_at_once_is_retried_a_few_times_a_minute(resume: bool) -> None:
    """A server (or proxy) answering every watch with an empty 200: each is a very short
    watch (an error), retried with exponential backoff capped at 30 s: a handful of requests
    a minute, not thousands a second."""
    api = FakeApi(watch_list=resume)  # fresh: paginated list once, then watches
    api.objects[PATH] = {}
    api.empty_watches.add(PATH)
    vt = VirtualTime()
    before = restarts("very_short_watch")
    async with stream(api, vt, resume=resume) as reflector:
        await until(lambda: vt.now >= 600)
        assert not reflector.health.up
        assert reflector.health.reason == "very_short_watch"
    attempts = watches(api)
    late = [at for at in attempts if at >= 60]  # once the backoff reached its cap
    assert 6 <= len(attempts) <= 60  # 10 minutes: ~8 to reach the cap, then one per 15-30 s
    assert len(late) <= (vt.now - 60) / 15 + 1
    assert all(b - a >= 15 for a, b in pairwise(late))
    # each attempt counted (but a watch-list probe, and the last one still under way)
    assert len(attempts) - 2 <= restarts("very_short_watch") - before <= len(attempts)


async def test_the_backoff_resets_only_after_a_healthy_period() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    vt = VirtualTime()
    api.fail_next_watches = 4
    async with stream(api, vt) as reflector:
        await until(lambda: len(vt.sleeps) == 4 and reflector.health.healthy(0) is False
                    and len(watches(api)) == 5)
        assert vt.sleeps[3] >= 3.2  # 0.8 doubling, jitter in [ceiling/2, ceiling]
        await api.create(PATH, "a")  # the fifth watch connects and flows
        await until(lambda: reflector.health.up)
        vt.advance(2.0)  # ... for 2 s only: not a healthy period
        api.fail_next_watches = 1
        await api.drop_watches()
        await until(lambda: len(vt.sleeps) == 6)
        assert vt.sleeps[4] >= 6.4  # the early end waits, and the backoff did not reset
        assert vt.sleeps[5] >= 12.8  # nor did the refused connection after it
        await until(lambda: len(watches(api)) == 7)
        await api.create(PATH, "b")  # the seventh watch flows ...
        await until(lambda: reflector.health.up)
        vt.advance(11.0)  # ... for longer than healthy_after (10 s)
        api.fail_next_watches = 1
        await api.drop_watches()
        await until(lambda: len(vt.sleeps) == 7)
        seventh, eighth = watches(api)[6:8]
        assert eighth - seventh == 11.0  # re-opened at once after a healthy watch's end ...
        assert vt.sleeps[6] <= 0.8  # ... and its failure started the backoff over


async def test_retry_after_is_honoured() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    api.errors[PATH] = [ApiError(429, "TooManyRequests", "slow down", PATH, retry_after=7.0)]
    vt = VirtualTime()
    async with stream(api, vt):
        await until(lambda: len(watches(api)) == 2)
    first, second = watches(api)
    assert second - first >= 7.0
    assert vt.sleeps == [pytest.approx(7.0)]


async def test_retry_after_from_a_watch_error_event_is_honoured() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    vt = VirtualTime()
    async with stream(api, vt, resume=False) as reflector:
        await until(lambda: reflector.synced)
        api.history.append((api.rv + 1, PATH, "ERROR", {
            "kind": "Status", "code": 429, "reason": "TooManyRequests",
            "details": {"retryAfterSeconds": 5}}))
        api.rv += 1
        await api.drop_watches()  # the reconnect replays history: the error event
        await until(lambda: len(vt.sleeps) >= 2)
    assert max(vt.sleeps) >= 5.0


async def test_failing_lists_back_off_too() -> None:
    api = FakeApi(watch_list=False)
    api.objects[PATH] = {}
    api.errors[PATH] = [ApiError(500, "InternalError", "etcd", PATH) for _ in range(6)]
    vt = VirtualTime()
    async with stream(api, vt, resume=False) as reflector:
        await until(lambda: reflector.synced)
    ceilings = [0.8 * 2 ** n for n in range(6)]
    assert [round(s / c, 2) >= 0.5 for s, c in zip(vt.sleeps, ceilings, strict=True)] == [
        True] * 6


def test_the_transport_reads_retry_after() -> None:
    assert api_error(429, b"Too many requests", "/x", "7").retry_after == 7.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (api_error(503, b"", "/x", later).retry_after or 0) <= 30
    status = orjson.dumps({"kind": "Status", "code": 429, "reason": "TooManyRequests",
                           "details": {"retryAfterSeconds": 3}})
    assert api_error(429, status, "/x").retry_after == 3.0
    assert api_error(500, b"oops", "/x").retry_after is None
