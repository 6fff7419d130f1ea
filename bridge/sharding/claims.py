"""Which shards a replica claims or gives back, from what the shard Leases say.

Each shard ``I`` has a Lease ``<leader_election.name>-shard-I``, held by the replica whose
worker runs that shard (the worker's own ``LeaderElector``, so a shard has at most one
writer: the Lease protocol's guarantee). Every replica also renews a membership Lease
``<leader_election.name>-replica-<hash of its identity>`` (so a replica that holds no shard
yet is counted). A replica counts the *live* replicas as the holders of unexpired
membership and shard Leases plus itself, and claims at most its fair share,
``ceil(shards / live)``:

- fewer than its share: it claims one free shard per round (free: no holder, or a Lease
  that did not change for its duration), preferring the shards it ranks highest
  (rendezvous weight of shard and identity, so replicas starting together prefer different
  shards);
- more than its share (a replica joined): it gives back the extra ones it ranks lowest;
  their workers drain, save their checkpoints and release the Leases, and another replica
  claims them;
- a shard it runs a worker for while another live replica holds the Lease: its worker is
  only standing by, it is stopped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from bridge.sharding.assign import weight


@dataclass(frozen=True)
class Plan:
    claim: list[int]
    release: list[int]


def _rank(shard: int, identity: str) -> int:
    return weight(shard, identity)


def plan(shards: int, me: str, holders: dict[int, str], running: set[int],
         members: set[str] | frozenset[str] = frozenset()) -> Plan:
    """``holders``: shard -> identity holding its unexpired Lease ("" or absent: free);
    ``running``: the shards this replica runs a worker for (leading or standing by);
    ``members``: the holders of unexpired membership Leases."""
    live = {holder for holder in holders.values() if holder} | set(members) | {me}
    fair = math.ceil(shards / len(live))
    standby = sorted(s for s in running if holders.get(s, "") not in ("", me))
    mine = sorted((s for s in running if s not in standby),
                  key=lambda s: _rank(s, me), reverse=True)
    if len(mine) > fair:
        return Plan([], standby + mine[fair:])
    if len(mine) == fair:
        return Plan([], standby)
    free = sorted((s for s in range(shards) if not holders.get(s) and s not in running),
                  key=lambda s: _rank(s, me), reverse=True)
    return Plan(free[:1], standby)


@dataclass
class LeaseObserver:
    """A Lease counts as held while its record changes within its duration, *as observed
    locally* (as the leader election judges it: clock skew between nodes does not
    matter)."""

    clock_seen: dict[str, tuple[str, float]] = field(default_factory=dict)

    def seen(self, name: str) -> str:
        """The observation of Lease ``name`` for a worker's ``OBSERVED_ENV`` ("" unseen)."""
        seen = self.clock_seen.get(name)
        return f"{seen[1]!r} {seen[0]}" if seen is not None else ""

    def holders(self, leases: dict[str, dict[str, object]], now: float) -> dict[str, str]:
        """Lease name -> holder of that unexpired Lease (absent: free); ``leases``: name ->
        the Lease's spec."""
        held: dict[str, str] = {}
        for name, spec in leases.items():
            holder = str(spec.get("holderIdentity") or "")
            fingerprint = f"{holder}|{spec.get('renewTime')}|{spec.get('leaseTransitions')}"
            seen = self.clock_seen.get(name)
            if seen is None or seen[0] != fingerprint:
                seen = self.clock_seen[name] = (fingerprint, now)
            duration = float(str(spec.get("leaseDurationSeconds") or 15))
            if holder and now - seen[1] <= duration:
                held[name] = holder
        return held


OBSERVED_ENV = "KUBE_EVENT_BRIDGE_LEASE_OBSERVED"  # "<monotonic seconds> <fingerprint>"


def observed_lease() -> tuple[str, float] | None:
    """What the claimer that started this worker observed of its shard's Lease (an expiry
    it already waited for need not be waited for again: the monotonic clock is the host's)."""
    seen, _, fingerprint = os.environ.get(OBSERVED_ENV, "").partition(" ")
    try:
        return (fingerprint, float(seen)) if fingerprint else None
    except ValueError:
        return None
