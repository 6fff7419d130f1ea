"""bridge.leader: the Lease algorithm against an in-memory Lease (optimistic concurrency
included), what readiness reports while an instance is not (yet) the leader, and how the
lease keeper ends: within renew_deadline, with LeadershipLost, other errors surfacing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from bridge.app import Bridge
from bridge.config.model import Config
from bridge.errors import ApiError, BridgeError, ConfigError, TransportError
from bridge.leader import LeaderElector, LeadershipLost
from bridge.metrics import REGISTRY
from bridge.supervision import Supervisor

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


class LeaseApi:
    """One Lease object behind the Transport seam, with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0
        self.fault: str | None = None  # "hang", "error" (500), "garbage" (not JSON)

    async def request(self, method: str, path: str, params: Mapping[str, str] | None = None,
                      body: bytes | None = None, content_type: str = "") -> bytes:
        if self.fault == "hang":
            await asyncio.sleep(3600)
        if self.fault == "error":
            raise ApiError(500, "InternalError", "etcd is unhappy", path)
        if self.fault == "broken":
            raise TransportError("connection reset")
        if self.fault == "garbage":
            return b"<html>proxy error</html>"
        if method == "GET":
            if self.lease is None:
                raise ApiError(404, "NotFound", "no lease", path)
            return orjson.dumps(self.lease)
        assert body is not None
        new = orjson.loads(body)
        if method == "POST" and self.lease is not None:
            raise ApiError(409, "AlreadyExists", "exists", path)
        if method == "PUT" and (self.lease is None or new["metadata"].get(
                "resourceVersion") != self.lease["metadata"]["resourceVersion"]):
            raise ApiError(409, "Conflict", "stale", path)
        self.rv += 1
        new["metadata"]["resourceVersion"] = str(self.rv)
        self.lease = new
        return orjson.dumps(new)


def elector(api: LeaseApi, identity: str) -> LeaderElector:
    return LeaderElector(api, "ns", "lease", identity, lease_duration=30)  # type: ignore[arg-type]


async def test_one_candidate_leads_the_other_names_the_holder_until_released() -> None:
    api = LeaseApi()
    first, second = elector(api, "first"), elector(api, "second")
    assert await first.try_acquire_or_renew()
    assert not await second.try_acquire_or_renew()
    assert second.holder == "first"
    assert await first.try_acquire_or_renew()  # renewal
    await first.acquire()
    assert first.leading and first.lost_at is None
    await first.release()
    assert not first.leading and first.lost_at is None  # handed over, not lost
    assert await second.try_acquire_or_renew()
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "second"
    assert api.lease["spec"]["leaseTransitions"] == 1
    transitions = {"lease": "lease"}  # the gauge the leader-flapping alert reads
    assert REGISTRY.get_sample_value("kube_event_bridge_leader_transitions", transitions) == 1


async def test_readiness_waits_for_the_first_lease_answer_then_reports_standby() -> None:
    app = Bridge(Config.model_validate({"sinks": [{"name": "out", "type": "null"}]}))
    api = LeaseApi()
    app.elector = elector(api, "me")
    assert app.ready() == (False, "starting: acquiring the leader lease")
    await elector(api, "other").try_acquire_or_renew()
    assert not await app.elector.try_acquire_or_renew()
    ready, reason = app.ready()
    assert ready and "standby" in reason and "other" in reason



def fast(api: LeaseApi, identity: str) -> LeaderElector:
    return LeaderElector(api, "ns", "lease", identity,  # type: ignore[arg-type]
                         lease_duration=2, renew_deadline=1.0, retry_period=0.2)


@pytest.mark.parametrize("fault", ["hang", "error", "broken"])
async def test_keep_ends_within_renew_deadline_when_renewals_fail(fault: str) -> None:
    """Renewals that hang (an unanswered request) or fail: keep() raises LeadershipLost no
    later than renew_deadline after the last successful renewal started, which is before
    the Lease expires for any other candidate (lease_duration)."""
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    await asyncio.sleep(0.5)  # a couple of good renewals
    assert leader.leading and not keeper.done()
    renewed = api.lease
    api.fault = fault
    failed_at = time.monotonic()
    with pytest.raises(LeadershipLost, match="could not renew it within 1s") as lost:
        await asyncio.wait_for(keeper, timeout=3)  # the old keeper waited for the request
    ended = time.monotonic()
    assert ended - failed_at <= 1.0 + 0.3  # renew_deadline, plus scheduling slack
    assert not leader.leading
    assert leader.lost_at is not None and leader.lost_at <= ended
    assert leader.lost_at == lost.value.lost_at
    assert isinstance(lost.value, BridgeError)
    assert api.lease is renewed  # nothing written after the fault
    assert ended - failed_at < leader.lease_duration


async def test_keep_raises_at_once_when_another_candidate_took_the_lease() -> None:
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    await asyncio.sleep(0.3)
    assert api.lease is not None
    api.lease["spec"]["holderIdentity"] = "usurper"  # e.g. after a long pause of ours
    api.lease["spec"]["renewTime"] = "later"
    with pytest.raises(LeadershipLost, match="taken over by usurper"):
        await asyncio.wait_for(keeper, timeout=1)
    assert not leader.leading and leader.lost_at is not None


async def test_leading_turns_false_at_the_deadline_even_if_keep_cannot_run() -> None:
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    started = time.monotonic()
    time.sleep(1.05)  # noqa: ASYNC251 -- the loop is blocked: keep() could not renew
    assert not leader.leading
    assert leader.lost_at is not None and started <= leader.lost_at <= time.monotonic()
    with pytest.raises(LeadershipLost):
        await leader.keep()


async def test_an_unexpected_error_in_keep_reaches_the_supervisor() -> None:
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    supervisor = Supervisor()
    supervisor.spawn(leader.keep(), name="lease")
    api.fault = "garbage"  # not JSON: a bug or a broken proxy, not a renewal failure
    await asyncio.wait_for(supervisor.failed.wait(), timeout=2)
    assert supervisor.cause is not None and "'lease' failed" in supervisor.cause
    assert "JSONDecodeError" in supervisor.cause
    await supervisor.stop()


async def test_lost_leadership_is_a_supervised_failure_naming_the_cause() -> None:
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    supervisor = Supervisor()
    supervisor.spawn(leader.keep(), name="lease")
    api.fault = "error"
    await asyncio.wait_for(supervisor.failed.wait(), timeout=2)
    assert supervisor.cause is not None and "LeadershipLost" in supervisor.cause
    assert "etcd is unhappy" in supervisor.cause
    await supervisor.stop()


async def test_cancelling_keep_keeps_leadership_for_release() -> None:
    api = LeaseApi()
    leader = fast(api, "me")
    await leader.acquire()
    keeper = asyncio.create_task(leader.keep())
    await asyncio.sleep(0.3)
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    assert leader.leading
    await leader.release()
    assert not leader.leading and leader.lost_at is None
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == ""


def test_renew_deadline_must_be_shorter_than_the_lease() -> None:
    with pytest.raises(ConfigError, match="renew_deadline"):
        LeaderElector(LeaseApi(), "ns", "lease", "me",  # type: ignore[arg-type]
                      lease_duration=10, renew_deadline=10)
