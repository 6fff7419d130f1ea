"""Active/standby through a ``coordination.k8s.io/v1`` Lease (the client-go algorithm).

A candidate takes the Lease when it does not exist, or when its record has not changed for
``lease_duration`` seconds *as observed locally* (so clock skew between nodes does not
matter). Writes use the Lease's resourceVersion, so two candidates can never both win. The
leader renews every ``retry_period``; if it cannot renew within ``renew_deadline`` it gives
up leadership (and the daemon stops, so a standby continues from the shared checkpoint).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson

from bridge import metrics
from bridge.errors import ApiError, TransportError
from bridge.kube.transport import Transport, get_object

log = logging.getLogger(__name__)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}-" \
        f"{uuid.uuid4().hex[:6]}"


class LeaderElector:
    def __init__(self, transport: Transport, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0) -> None:
        self.transport = transport
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = False
        self.holder: str | None = None  # who held the Lease when this candidate last lost
        self._observed: tuple[str, float] | None = None  # (record fingerprint, monotonic)
        self._lease: dict[str, Any] | None = None

    async def _get(self) -> dict[str, Any] | None:
        return await get_object(self.transport, f"{self.path}/{self.name}")

    def _spec(self, transitions: int, acquire: str | None) -> dict[str, Any]:
        now = _now()
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_duration)),
                "acquireTime": acquire or now, "renewTime": now,
                "leaseTransitions": transitions}

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards."""
        lease = await self._get()
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name}, "spec": self._spec(0, None)}
            try:
                self._lease = orjson.loads(await self.transport.request(
                    "POST", self.path, body=orjson.dumps(body)))
            except ApiError as exc:
                if exc.status == 409:
                    self.holder = "(another candidate)"
                    return False
                raise
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        fingerprint = f"{holder}|{spec.get('renewTime')}|{spec.get('leaseTransitions')}"
        now = time.monotonic()
        if self._observed is None or self._observed[0] != fingerprint:
            self._observed = (fingerprint, now)
        expired = now - self._observed[1] > float(
            spec.get("leaseDurationSeconds") or self.lease_duration)
        if holder and holder != self.identity and not expired:
            self.holder = holder
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.identity:
            transitions += 1
        lease["spec"] = self._spec(transitions, spec.get("acquireTime")
                                   if holder == self.identity else None)
        try:
            self._lease = orjson.loads(await self.transport.request(
                "PUT", f"{self.path}/{self.name}", body=orjson.dumps(lease)))
        except ApiError as exc:
            if exc.status == 409:  # someone else wrote first
                self.holder = "(another candidate)"
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this candidate is the leader."""
        announced = False
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self._set_leading(True)
                    return
            except (ApiError, TransportError) as exc:
                log.warning("leader election: %s", exc)
            if not announced:
                log.info("standby: lease %s is held by another instance; waiting", self.name)
                announced = True
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew until renewal fails for ``renew_deadline``; then return (leadership lost)."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    last_ok = time.monotonic()
                    continue
                log.error("leader election: lease %s was taken over", self.name)
                break
            except (ApiError, TransportError) as exc:
                log.warning("leader election: renewal failed: %s", exc)
            if time.monotonic() - last_ok > self.renew_deadline:
                log.error("leader election: could not renew lease %s for %.0fs", self.name,
                          self.renew_deadline)
                break
        self._set_leading(False)

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown (standbys need not wait)."""
        if not self.leading or self._lease is None:
            return
        lease = dict(self._lease)
        lease["spec"] = {**lease.get("spec", {}), "holderIdentity": "",
                         "leaseDurationSeconds": 1, "renewTime": _now()}
        try:
            await self.transport.request("PUT", f"{self.path}/{self.name}",
                                         body=orjson.dumps(lease))
        except (ApiError, TransportError) as exc:
            log.warning("leader election: could not release lease %s: %s", self.name, exc)
        self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        if leading and not self.leading:
            log.info("leader election: %s is now the leader (lease %s)", self.identity,
                     self.name)
        self.leading = leading
        metrics.is_leader.set(1 if leading else 0)
