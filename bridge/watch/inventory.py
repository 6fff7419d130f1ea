"""The inventory: what the bridge last delivered per object, packed to stay small.

uid -> (resourceVersion, namespace, name). Keys are the uid's 16 raw bytes, values one bytes
object ``rv \\0 namespace \\0 name``; about 150-200 bytes per object in CPython (measured
by ``bench``), so 100k objects cost ~20 MB. A content hash is deliberately not kept: every
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


def _key(uid: str) -> bytes:
    if len(uid) == 36 and uid[8] == uid[13] == uid[18] == uid[23] == "-":
        try:
            return bytes.fromhex(uid.replace("-", ""))  # 16 raw bytes, 5x faster than UUID()
        except ValueError:
            pass
    return b"\xff" + uid.encode()  # not a UUID: keep it verbatim, marked


def _uid(key: bytes) -> str:
    if len(key) == 16:
        return str(uuid.UUID(bytes=key))
    return key[1:].decode()


def _pack(entry: Entry) -> bytes:
    return b"\0".join((entry.resource_version.encode(), entry.namespace.encode(),
                       entry.name.encode()))


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
        value = self._entries.get(_key(uid))
        return None if value is None else _unpack(value)

    def put(self, uid: str, entry: Entry) -> None:
        self._entries[_key(uid)] = _pack(entry)

    def remove(self, uid: str) -> None:
        self._entries.pop(_key(uid), None)

    def items(self) -> Iterator[tuple[str, Entry]]:
        for key, value in list(self._entries.items()):
            yield _uid(key), _unpack(value)

    def dumps(self) -> bytes:
        parts = []
        for key, value in self._entries.items():
            parts.append(_LEN.pack(len(key), len(value)))
            parts.append(key)
            parts.append(value)
        return b"".join(parts)

    @classmethod
    def loads(cls, data: bytes) -> Inventory:
        inv = cls()
        pos, size = 0, len(data)
        while pos < size:
            klen, vlen = _LEN.unpack_from(data, pos)
            pos += _LEN.size
            key = data[pos:pos + klen]
            pos += klen
            inv._entries[key] = data[pos:pos + vlen]
            pos += vlen
        return inv
