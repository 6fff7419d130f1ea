"""bridge.leader: the Lease algorithm against an in-memory Lease (optimistic concurrency
included), and what readiness reports while an instance is not (yet) the leader."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from bridge.app import Bridge
from bridge.config.model import Config
from bridge.errors import ApiError
from bridge.leader import LeaderElector

PATH = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"


class LeaseApi:
    """One Lease object behind the Transport seam, with resourceVersion conflicts."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.rv = 0

    async def request(self, method: str, path: str, params: Mapping[str, str] | None = None,
                      body: bytes | None = None, content_type: str = "") -> bytes:
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
    first.leading = True
    await first.release()
    assert not first.leading
    assert await second.try_acquire_or_renew()
    assert api.lease is not None and api.lease["spec"]["holderIdentity"] == "second"
    assert api.lease["spec"]["leaseTransitions"] == 1


async def test_readiness_waits_for_the_first_lease_answer_then_reports_standby() -> None:
    app = Bridge(Config.model_validate({"sinks": [{"name": "out", "type": "null"}]}))
    api = LeaseApi()
    app.elector = elector(api, "me")
    assert app.ready() == (False, "starting: acquiring the leader lease")
    await elector(api, "other").try_acquire_or_renew()
    assert not await app.elector.try_acquire_or_renew()
    ready, reason = app.ready()
    assert ready and "standby" in reason and "other" in reason

