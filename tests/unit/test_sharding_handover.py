"""bridge.sharding.handover: new shards adopt their streams from the previous checkpoints."""

from __future__ import annotations

from bridge.sharding.assign import ShardFilter, owner
from bridge.sharding.handover import adopt, previous_ids
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import StreamCheckpoint

KEYS = [f"kind{i}.x.example.com" for i in range(40)]


def checkpoint(rv: str, *objects: tuple[str, str], kind: str = "Kind") -> StreamCheckpoint:
    inventory = Inventory()
    for uid, namespace in objects:
        inventory.put(uid, Entry("7", namespace, uid))
    return StreamCheckpoint(rv, 5, inventory, "v1", kind, True)


def test_previous_ids() -> None:
    assert previous_ids("prod", 1) == ["prod"]
    assert previous_ids("prod", 2) == ["prod-shard-0-of-2", "prod-shard-1-of-2"]


def test_every_stream_goes_to_exactly_one_new_shard_with_its_position() -> None:
    old = [{key: checkpoint(f"rv-{key}", (f"u-{key}", "ns")) for key in KEYS
            if owner(key, 2) == j} for j in range(2)]
    new = [adopt(old, ShardFilter(i, 3)) for i in range(3)]
    assert sorted(k for shard in new for k in shard) == sorted(KEYS)
    for i, shard in enumerate(new):
        for key, cp in shard.items():
            assert owner(key, 3) == i
            assert cp.resource_version == f"rv-{key}"  # resumes where it stopped
            assert [uid for uid, _ in cp.inventory.items()] == [f"u-{key}"]


def test_a_split_kind_merges_its_namespaces_and_re_lists() -> None:
    key = "things.x.example.com"
    namespaces = [f"ns{i}" for i in range(12)]
    old = [{key: checkpoint(f"rv{j}", *[(f"u-{ns}", ns) for ns in namespaces
                                        if ShardFilter(j, 2).owns_namespace(ns)],
                            kind="Thing")} for j in range(2)]
    new = [adopt(old, ShardFilter(i, 3, ("x.example.com/things",))) for i in range(3)]
    seen: list[str] = []
    for i, shard in enumerate(new):
        cp = shard[key]
        assert cp.resource_version is None and cp.sequence == 5  # re-lists and diffs
        mine = [entry.namespace for _, entry in cp.inventory.items()]
        assert all(ShardFilter(i, 3).owns_namespace(ns) for ns in mine)
        seen += mine
    assert sorted(seen) == sorted(namespaces)


def test_from_unsharded() -> None:
    old = [{key: checkpoint("rv", ("u", "ns")) for key in KEYS}]
    new = [adopt(old, ShardFilter(i, 2)) for i in range(2)]
    assert sorted(k for shard in new for k in shard) == sorted(KEYS)
