"""Active/standby through a ``coordination.k8s.io/v1`` Lease (the client-go algorithm).

A candidate takes the Lease when it does not exist, or when its record has not changed for
``lease_duration`` seconds *as observed locally* (so clock skew between nodes does not
matter). Writes use the Lease's resourceVersion, so two candidates can never both win. The
leader renews every ``retry_period``; if it cannot renew within ``renew_deadline`` it gives
up leadership (and the daemon stops, so a standby continues from the shared checkpoint).

Leadership is bounded in time, not only by what ``keep()`` noticed: ``leading`` turns false
``renew_deadline`` after the start of the last successful acquire/renew attempt, even when
the event loop was too busy to run ``keep()``. Each attempt is time-boxed to that deadline
(a hung request cannot stretch it), and ``renew_deadline`` must be shorter than the
``leaseDurationSeconds`` written into the Lease, so this instance stops leading before any
other candidate can see the Lease as expired. ``keep()`` raises ``LeadershipLost`` at that
moment (or at once when another candidate took the Lease); any other exception in it
propagates unchanged to whoever owns the task (the daemon's ``Supervisor``).
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
from bridge.errors import ApiError, BridgeError, ConfigError, TransportError
from bridge.kube.transport import Transport, get_object

log = logging.getLogger(__name__)


class LeadershipLost(BridgeError):
    """This instance no longer holds the leader Lease (``reason`` says why, ``lost_at`` is
    the ``time.monotonic()`` moment it stopped leading). Stop reading and sending at once;
    do not save a checkpoint: the new leader owns it."""

    def __init__(self, lease: str, reason: str, lost_at: float) -> None:
        super().__init__(f"lost the leader lease {lease}: {reason}")
        self.reason = reason
        self.lost_at = lost_at


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}-" \
        f"{uuid.uuid4().hex[:6]}"


class LeaderElector:
    def __init__(self, transport: Transport, namespace: str, name: str, identity: str,
                 lease_duration: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, *,
                 observed: tuple[str, float] | None = None) -> None:
        """``observed``: the Lease's record fingerprint and the ``time.monotonic()`` moment
        it was first seen unchanged by this host (e.g. by a shard claimer that started
        this process), so an expiry already observed need not be waited for again."""
        self.transport = transport
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        if renew_deadline >= self._lease_seconds():
            raise ConfigError(
                f"leader_election.renew_deadline ({renew_deadline:g}s) must be shorter than "
                f"leader_election.lease_duration ({self._lease_seconds()}s as written into the "
                "Lease): otherwise another instance may take over while this one still leads")
        self.holder: str | None = None  # who held the Lease when this candidate last lost
        self._observed = observed  # (record fingerprint, monotonic)
        self._lease: dict[str, Any] | None = None
        self._leading = False  # acquired and neither lost nor released
        self._renew_by = 0.0  # monotonic: leadership ends here unless renewed before
        self._lost_at: float | None = None

    @property
    def leading(self) -> bool:
        """True while this instance holds the Lease: acquired, and renewed less than
        ``renew_deadline`` ago (by the clock, even if ``keep()`` could not run meanwhile)."""
        return self._leading and time.monotonic() < self._renew_by

    @property
    def lost_at(self) -> float | None:
        """``time.monotonic()`` when leadership was lost (None: never lost, or released)."""
        if self._lost_at is None and self._leading and time.monotonic() >= self._renew_by:
            return self._renew_by  # overdue, keep() has not run yet to notice
        return self._lost_at

    def _lease_seconds(self) -> int:
        return max(1, round(self.lease_duration))

    async def _get(self) -> dict[str, Any] | None:
        return await get_object(self.transport, f"{self.path}/{self.name}")

    def _spec(self, transitions: int, acquire: str | None) -> dict[str, Any]:
        now = _now()
        return {"holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds(),
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
        transitions = int(spec.get("leaseTransitions") or 0)
        metrics.leader_transitions.labels(lease=self.name).set(transitions)  # standbys too
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
        metrics.leader_transitions.labels(lease=self.name).set(transitions)
        return True

    async def _attempt(self) -> tuple[bool, float]:
        """One acquire/renew attempt, time-boxed to ``renew_deadline``: (held, started)."""
        started = time.monotonic()
        box = asyncio.timeout(self.renew_deadline)
        try:
            async with box:
                return await self.try_acquire_or_renew(), started
        except TimeoutError as exc:
            if not box.expired():
                raise
            raise TransportError(f"lease {self.name}: no answer within "
                                 f"{self.renew_deadline:g}s") from exc

    async def acquire(self) -> None:
        """Wait until this candidate is the leader."""
        announced = False
        while True:
            try:
                held, started = await self._attempt()
                if held:
                    self._renew_by = started + self.renew_deadline
                    self._set_leading(True)
                    return
            except (ApiError, TransportError) as exc:
                log.warning("leader election: %s", exc)
            if not announced:
                log.info("standby: lease %s is held by another instance; waiting", self.name)
                announced = True
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew every ``retry_period`` while leading; it never returns.

        Raises ``LeadershipLost`` when another candidate took the Lease, or as soon as no
        renewal succeeded within ``renew_deadline`` (failed attempts are retried until
        then, each time-boxed to what is left). Any other exception propagates unchanged.
        Cancelling it keeps the leadership (``release()`` hands it over)."""
        if not self.leading:
            raise self._lose("not leading when keep() started")
        last_error: Exception | None = None
        while True:
            await asyncio.sleep(max(0.0, min(self.retry_period,
                                             self._renew_by - time.monotonic())))
            started = time.monotonic()
            budget = self._renew_by - started
            if budget <= 0:
                raise self._lose(f"could not renew it within {self.renew_deadline:g}s "
                                 f"(last error: {last_error or 'none'})")
            box = asyncio.timeout(budget)
            try:
                async with box:
                    renewed = await self.try_acquire_or_renew()
            except TimeoutError as exc:
                if not box.expired():
                    raise
                raise self._lose(f"could not renew it within {self.renew_deadline:g}s "
                                 f"(the last attempt did not answer; before it: "
                                 f"{last_error or 'none'})") from exc
            except (ApiError, TransportError) as exc:
                last_error = exc
                log.warning("leader election: renewal failed (%.1fs left to renew lease "
                            "%s): %s", self._renew_by - time.monotonic(), self.name, exc)
                continue
            if not renewed:
                raise self._lose(f"it was taken over by {self.holder}")
            self._renew_by = started + self.renew_deadline

    def _lose(self, reason: str) -> LeadershipLost:
        lost_at = min(time.monotonic(), self._renew_by) if self._leading else time.monotonic()
        self._lost_at = lost_at
        self._set_leading(False)
        error = LeadershipLost(self.name, reason, lost_at)
        log.error("leader election: %s", error)
        return error

    async def release(self) -> None:
        """Hand the Lease over at once on a clean shutdown (standbys need not wait)."""
        if not self.leading or self._lease is None:
            if self._leading and not self.leading:  # overdue: lost, not handed over
                self._lose(f"not renewed within {self.renew_deadline:g}s")
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
        if leading and not self._leading:
            log.info("leader election: %s is now the leader (lease %s)", self.identity,
                     self.name)
        if leading:
            self._lost_at = None
        self._leading = leading
        metrics.is_leader.set(1 if leading else 0)
