"""The checkpoint blob: a small JSON header and the packed inventories after it.

    b"KEBCP2\\n" + JSON {"streams": [{key, rv, seq, version, kind, crd, bytes}], "saved_at"}
    + b"\\n"
    + the inventories, concatenated in header order

``KEBCP1`` (uids packed to 16 bytes in the inventories) is still read.
"""

from __future__ import annotations

import time

import orjson

from bridge.errors import BridgeError
from bridge.watch.inventory import Inventory
from bridge.watch.tracker import StreamCheckpoint

MAGIC = b"KEBCP2\n"
LEGACY_MAGIC = b"KEBCP1\n"  # same layout; inventory keys packed (Inventory.loads legacy)


class CheckpointError(BridgeError):
    pass


def encode(checkpoints: dict[str, StreamCheckpoint]) -> bytes:
    streams = []
    blobs = []
    for key, cp in sorted(checkpoints.items()):
        blob = cp.inventory.dumps()
        blobs.append(blob)
        streams.append({"key": key, "rv": cp.resource_version, "seq": cp.sequence,
                        "version": cp.version, "kind": cp.kind, "crd": cp.crd,
                        "bytes": len(blob)})
    header = orjson.dumps({"streams": streams, "saved_at": time.time()})
    return b"".join([MAGIC, header, b"\n", *blobs])


def decode(data: bytes) -> dict[str, StreamCheckpoint]:
    if not data:
        return {}
    legacy = data.startswith(LEGACY_MAGIC)
    if not (legacy or data.startswith(MAGIC)):
        raise CheckpointError("not a kube-event-bridge checkpoint (bad magic)")
    end = data.index(b"\n", len(MAGIC))
    header = orjson.loads(data[len(MAGIC):end])
    pos = end + 1
    result: dict[str, StreamCheckpoint] = {}
    for stream in header["streams"]:
        size = int(stream["bytes"])
        blob = data[pos:pos + size]
        if len(blob) != size:
            raise CheckpointError(f"checkpoint truncated in stream {stream['key']}")
        pos += size
        result[stream["key"]] = StreamCheckpoint(
            stream["rv"], int(stream["seq"]), Inventory.loads(blob, legacy),
            stream.get("version", ""), stream.get("kind", ""), bool(stream.get("crd")))
    return result


def fingerprint(checkpoints: dict[str, StreamCheckpoint]) -> tuple[tuple[str, str | None, int],
                                                                   ...]:
    """Cheap change detection: a save is skipped when nothing advanced."""
    return tuple(sorted((k, cp.resource_version, cp.sequence) for k, cp in checkpoints.items()))
