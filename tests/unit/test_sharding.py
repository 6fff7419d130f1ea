"""bridge.sharding: stable assignment of streams to shards, and a shard's engine watching
only its streams (and, for a split kind, only its namespaces' objects)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

import pytest

from bridge.config.model import Config
from bridge.sharding.assign import ShardFilter, owner, parse_shard, weight
from bridge.sharding.view import for_shard, shard_filter
from bridge.watch.engine import WatchEngine
from bridge.watch.selection import Selection
from tests.unit.fakeapi import FakeApi
from tests.unit.test_engine import FAST, Consumer, add_crd

KEYS = [f"kind{i}.group{i % 37}.example.com" for i in range(5000)]


def assignment(shards: int) -> dict[str, int]:
    return {key: owner(key, shards) for key in KEYS}


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 8])
def test_adding_a_shard_moves_only_its_share_and_only_to_it(shards: int) -> None:
    before, after = assignment(shards), assignment(shards + 1)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == shards for key in moved)  # every move goes to the new shard
    share = len(KEYS) / (shards + 1)
    assert 0.85 * share <= len(moved) <= 1.15 * share


@pytest.mark.parametrize("shards", [2, 3, 5, 8])
def test_removing_a_shard_moves_only_its_streams(shards: int) -> None:
    before, after = assignment(shards), assignment(shards - 1)
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == shards - 1}


@pytest.mark.parametrize("shards", [2, 4, 8, 16])
def test_streams_are_balanced(shards: int) -> None:
    counts = Counter(assignment(shards).values())
    assert set(counts) == set(range(shards))
    mean = len(KEYS) / shards
    assert max(counts.values()) <= 1.15 * mean and min(counts.values()) >= 0.85 * mean


def test_weights_are_stable_across_processes() -> None:
    """Pinned values: blake2b, not the per-process salted ``hash()``, so every worker and
    replica agrees."""
    assert weight(0, "things.x.example.com") == 0x1e8d23d1e322a4bc
    assert [owner(f"k{i}", 4) for i in range(8)] == [0, 2, 0, 3, 3, 0, 0, 0]
    assert owner("things.x.example.com", 1) == 0


def test_parse_shard() -> None:
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard("3/4") == (3, 4)
    for bad in ("4/4", "1", "a/2", "0/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_split_kinds_and_namespaces() -> None:
    shards = [ShardFilter(i, 3, ("x.example.com/things",)) for i in range(3)]
    assert shards[0].splits(("x.example.com/things", "x.example.com/Thing"))
    assert not shards[0].splits(("x.example.com/others", "x.example.com/Other"))
    for namespace in ("", "a", "b", "team-7"):
        assert sum(s.owns_namespace(namespace) for s in shards) == 1


def test_a_shards_config_has_its_own_checkpoint_and_filter() -> None:
    config = Config.model_validate({"sinks": [{"name": "n", "type": "null"}],
                                    "checkpoint": {"id": "prod"},
                                    "sharding": {"workers": 2, "split": ["*/things"]}})
    assert shard_filter(config) is None  # the supervisor's view: not a shard
    shard = for_shard(config, 1, 2)
    assert shard.checkpoint.id == "prod-shard-1-of-2"
    assert shard.sharding.worker_count() == 1
    assert shard_filter(shard) == ShardFilter(1, 2, ("*/things",))
    assert shard_filter(Config.model_validate({"sinks": [{"name": "n", "type": "null"}]})) \
        is None


def test_shards_must_match_workers() -> None:
    with pytest.raises(ValueError, match="must equal the number of workers"):
        Config.model_validate({"sinks": [{"name": "n", "type": "null"}],
                               "sharding": {"workers": 2, "shards": 3}})
    with pytest.raises(ValueError, match="not below the number of shards"):
        Config.model_validate({"sinks": [{"name": "n", "type": "null"}],
                               "sharding": {"shards": 2, "index": 2}})


async def run_shards(api: FakeApi, shards: int, split: tuple[str, ...],
                     expected: int) -> list[Consumer]:
    engines = [WatchEngine(api, Selection(), dataclasses.replace(
        FAST, shard=ShardFilter(i, shards, split))) for i in range(shards)]
    for engine in engines:
        await engine.start()
    consumers = [Consumer(engine) for engine in engines]
    async with asyncio.timeout(5):
        while sum(len(c.deltas) for c in consumers) < expected:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # nothing more arrives
    return consumers


async def stop(consumers: list[Consumer]) -> None:
    for consumer in consumers:
        await consumer.close()
        await consumer.engine.stop()


async def test_each_stream_is_watched_by_exactly_one_shard() -> None:
    api = FakeApi()
    kinds = [(f"p{i}s", f"P{i}") for i in range(12)]
    for plural, kind in kinds:
        path = await add_crd(api, plural, kind)
        await api.create(path, "obj", "ns")
    consumers = await run_shards(api, 3, (), len(kinds))
    try:
        watched = [set(c.engine.stream_keys()) for c in consumers]
        assert sorted(k for keys in watched for k in keys) == sorted(
            f"{plural}.x.example.com" for plural, _ in kinds)
        for index, keys in enumerate(watched):
            assert all(owner(key, 3) == index for key in keys)
            assert {d.stream for d in consumers[index].deltas} == keys
            assert set(consumers[index].engine.checkpoints()) == keys
    finally:
        await stop(consumers)


async def test_a_split_kind_spreads_its_objects_by_namespace() -> None:
    api = FakeApi()
    path = await add_crd(api, "things", "Thing")
    namespaces = [f"ns{i}" for i in range(10)]
    for namespace in namespaces:
        await api.create(path, "a", namespace)
    consumers = await run_shards(api, 2, ("x.example.com/things",), len(namespaces))
    try:
        things = await api.create(path, "b", "ns3")  # live: one shard records it
        await api.update(path, things["metadata"]["uid"])
        async with asyncio.timeout(5):
            while sum(len(c.deltas) for c in consumers) < len(namespaces) + 2:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        owners = [ShardFilter(i, 2) for i in range(2)]
        for index, consumer in enumerate(consumers):
            assert consumer.engine.stream_keys() == ["things.x.example.com"]  # both watch
            mine = {d.namespace for d in consumer.deltas}
            assert mine == {ns for ns in namespaces if owners[index].owns_namespace(ns)}
            inventory = consumer.engine.checkpoints()["things.x.example.com"].inventory
            assert {e.namespace for _, e in inventory.items()} == mine  # only its objects
        b = [d for c in consumers for d in c.deltas if d.name == "b"]
        assert [d.type.value for d in b] == ["added", "updated"]
        assert sum(any(d.name == "b" for d in c.deltas) for c in consumers) == 1
    finally:
        await stop(consumers)
