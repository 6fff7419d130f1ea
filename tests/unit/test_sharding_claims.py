"""bridge.sharding.claims: a replica claims at most its fair share of the shard Leases."""

from __future__ import annotations

from bridge.sharding.claims import LeaseObserver, Plan, plan


def converge(replicas: list[str], shards: int, holders: dict[int, str],
             rounds: int = 50) -> dict[int, str]:
    """Replicas taking turns, each shard claimed or given back at once (as when the worker
    acquires or releases the Lease)."""
    for _ in range(rounds):
        for me in replicas:
            running = {s for s, h in holders.items() if h == me}
            decided = plan(shards, me, holders, running, set(replicas))
            for shard in decided.release:
                holders.pop(shard, None)
            for shard in decided.claim:
                assert shard not in holders
                holders[shard] = me
    return holders


def shares(holders: dict[int, str]) -> list[int]:
    counts: dict[str, int] = {}
    for holder in holders.values():
        counts[holder] = counts.get(holder, 0) + 1
    return sorted(counts.values())


def test_a_lone_replica_claims_one_shard_per_round_up_to_all() -> None:
    first = plan(4, "a", {}, set())
    assert len(first.claim) == 1 and not first.release
    assert len(converge(["a"], 4, {})) == 4


def test_replicas_share_fairly_and_a_new_one_gets_its_share() -> None:
    holders = converge(["a", "b", "c"], 6, {})
    assert len(holders) == 6 and shares(holders) == [2, 2, 2]
    del_a = {s: h for s, h in holders.items() if h != "a"}  # a dies: its Leases expire
    holders = converge(["b", "c"], 6, del_a)
    assert len(holders) == 6 and shares(holders) == [3, 3]
    holders = converge(["b", "c", "d"], 6, holders)  # d joins (its membership Lease): b and
    # c each give one back
    assert len(holders) == 6 and shares(holders) == [2, 2, 2]


def test_a_standby_worker_for_a_shard_held_elsewhere_is_stopped() -> None:
    assert plan(2, "a", {0: "b"}, {0}) == Plan([1], [0])


def test_leases_expire_as_observed_locally() -> None:
    observer = LeaseObserver()
    spec: dict[str, object] = {"holderIdentity": "b", "renewTime": "t1",
                               "leaseDurationSeconds": 10}
    assert observer.holders({"s-0": spec}, now=100.0) == {"s-0": "b"}
    assert observer.holders({"s-0": spec}, now=109.0) == {"s-0": "b"}
    assert observer.holders({"s-0": spec}, now=111.0) == {}  # not renewed for 10 s: expired
    assert observer.holders({"s-0": {**spec, "renewTime": "t2"}}, now=112.0) == {"s-0": "b"}
    assert observer.holders({"s-0": {**spec, "holderIdentity": ""}}, now=113.0) == {}
