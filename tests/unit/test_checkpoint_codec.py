from __future__ import annotations

import struct
import uuid

import orjson
import pytest

from bridge.checkpoint.chunks import Manifest, digest, join, split
from bridge.checkpoint.codec import MAGIC, CheckpointError, encode
from bridge.checkpoint.replay import decode
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import StreamCheckpoint


def sample() -> dict[str, StreamCheckpoint]:
    inv = Inventory()
    inv.put("6f1c2d8e-0000-4000-8000-000000000001", Entry("10", "ns", "a"))
    return {"things.x.io": StreamCheckpoint("12", 3, inv, "v1", "Thing", crd=True),
            "empty.x.io": StreamCheckpoint(None, 0, Inventory(), "v2")}


def test_codec_roundtrip() -> None:
    back = decode(encode(sample()))
    assert back["things.x.io"].resource_version == "12"
    assert back["things.x.io"].sequence == 3 and back["things.x.io"].version == "v1"
    assert len(back["things.x.io"].inventory) == 1
    assert back["empty.x.io"].resource_version is None
    assert decode(b"") == {}


def test_corrupt_blobs_are_errors() -> None:
    with pytest.raises(CheckpointError):
        decode(b"garbage")
    with pytest.raises(CheckpointError):
        decode(encode(sample())[:-3])


def test_chunks_verify_their_digest() -> None:
    blob = bytes(range(256)) * 100
    parts = split(blob, 1000)
    manifest = Manifest(3, len(parts), digest(blob))
    assert join(Manifest.loads(manifest.dumps()), parts) == blob
    with pytest.raises(CheckpointError):
        join(manifest, parts[:-1])


def test_version_1_checkpoints_are_still_read() -> None:
    """KEBCP1 packed UUID uids into 16 raw bytes (other uids: a 0xff marker + the text)."""
    u = uuid.uuid4()
    entries = [(u.bytes, b"5\0ns\0a"), (b"\xffplain-uid", b"6\0\0b")]
    blob = b"".join(struct.pack(">BH", len(k), len(v)) + k + v for k, v in entries)
    header = orjson.dumps({"streams": [{"key": "s", "rv": "9", "seq": 2, "version": "v1",
                                        "bytes": len(blob)}]})
    cp = decode(b"KEBCP1\n" + header + b"\n" + blob)["s"]
    assert cp.inventory.get(str(u)) == Entry("5", "ns", "a")
    assert cp.inventory.get("plain-uid") == Entry("6", "", "b")
    assert encode({"s": cp}).startswith(MAGIC)
