from __future__ import annotations

import uuid

from bridge.watch.inventory import Entry, Inventory


def test_roundtrip_and_lookup() -> None:
    inv = Inventory()
    uids = [str(uuid.uuid4()) for _ in range(3)]
    for i, uid in enumerate(uids):
        inv.put(uid, Entry(str(100 + i), "ns" if i else "", f"name-{i}"))
    inv.put("not-a-uuid", Entry("7", "a", "b"))
    inv.remove(uids[0])
    copy = Inventory.loads(inv.dumps())
    assert len(copy) == 3
    assert copy.get(uids[1]) == Entry("101", "ns", "name-1")
    assert copy.get(uids[2]) == Entry("102", "ns", "name-2")
    assert copy.get("not-a-uuid") == Entry("7", "a", "b")
    assert copy.get(uids[0]) is None
    assert dict(copy.items()) == dict(inv.items())


def test_empty_roundtrip() -> None:
    assert len(Inventory.loads(Inventory().dumps())) == 0
