"""The inventory: what the bridge last delivered per object, packed to stay small.

uid -> (resourceVersion, namespace, name). Keys are the uid's ASCII bytes, values one bytes
object ``rv \\0 namespace \\0 name``; about 200 bytes per object in CPython (measured by
``bench``), so 100k objects cost ~20 MB. (Packing a UUID into its 16 raw bytes would save
~20 bytes per object but cost the hot path a hex conversion per lookup; version-1
checkpoints, which did that, are still read.) A content hash is deliberately not kept: every
persisted write changes the resourceVersion, so the resourceVersion alone decides "changed".
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import NamedTuple


class Entry(NamedTuple):
    resource_version: str
    namespace: str
    name: str


def _legacy_key(key: bytes) -> bytes:
    """A version-1 key (a UUID's 16 raw bytes, or ``\\xff`` + any other uid) as a key."""
    return str(uuid.UUID(bytes=key)).encode() if len(key) == 16 else key[1:]


def _pack(entry: Entry) -> bytes:
    return f"{entry.resource_version}\0{entry.namespace}\0{entry.name}".encode()


def _unpack(value: bytes) -> Entry:
    rv, ns, name = value.split(b"\0", 2)
    return Entry(rv.decode(), ns.decode(), name.decode())


_LEN = struct.Struct(">BH")


class Inventory:
    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[bytes, bytes] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, uid: str) -> Entry | None:
        value = self._entries.get(uid.encode())
        return None if value is None else _unpack(value)

    def put(self, uid: str, entry: Entry) -> None:
        self._entries[uid.encode()] = _pack(entry)

    def remove(self, uid: str) -> None:
        self._entries.pop(uid.encode(), None)

    def copy(self) -> Inventory:
        """A snapshot (the packed entries are immutable: a shallow copy suffices)."""
        inv = Inventory()
        inv._entries = dict(self._entries)
        return inv

    def items(self) -> Iterator[tuple[str, Entry]]:
        for key, value in list(self._entries.items()):
            yield key.decode(), _unpack(value)

    def dumps(self) -> bytes:
        parts = []
        for key, value in self._entries.items():
            parts.append(_LEN.pack(len(key), len(value)))
            parts.append(key)
            parts.append(value)
        return b"".join(parts)

    @classmethod
    def loads(cls, data: bytes, legacy: bool = False) -> Inventory:
        """From ``dumps``; ``legacy``: from a version-1 checkpoint (packed UUID keys)."""
        inv = cls()
        pos, size = 0, len(data)
        while pos < size:
            klen, vlen = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            key = data[pos:pos + klen]
            if legacy:
                key = _legacy_key(key)
            pos += klen
            inv._entries[key] = data[pos:pos + vlen]
            pos += vlen
        return inv
