"""The checkpoint's two formats: the base, and the journal segments appended after it.

The base: a small JSON header and the packed inventories after it.

    b"KEBCP3\\n" + JSON {"streams": [{key, rv, seq, version, kind, crd, bytes, uncertain,
                                      pending}], "saved_at"} + b"\\n"
    + the inventories, concatenated in header order

``uncertain`` lists the uids whose last change may or may not have reached a sink;
``pending`` the changes recorded but not yet acknowledged when the base was cut, as journal
records (``bridge.checkpoint.journal``): both come back as uncertain objects on load.
``KEBCP2`` (0.1.0) and ``KEBCP1`` (uids packed to 16 bytes) are still read.

A journal segment is one JSON document, written whole (a store never exposes half of one):

    {"j": 1, "s": [[stream key, header or null, [[seq, uid, rv, namespace, name(, digest)] |
                                                 [seq, uid], ...]], ...]}

Per stream, the *intents* (changes recorded, made durable before any of them is handed to a
sink) come first, then the stream's committed *header* ``[rv, seq, version, kind, crd,
listed]`` at the moment the segment was cut, when it moved. ``bridge.checkpoint.replay``
turns a base and its segments back into checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.errors import BridgeError, FencedError
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.tracker import Header, Record, StreamCheckpoint

MAGIC = b"KEBCP3\n"
READABLE = (b"KEBCP1\n", b"KEBCP2\n", MAGIC)  # KEBCP1: inventory keys packed (legacy)

SEGMENT_VERSION = 1
Intent = tuple[int, str, Entry | None]  # seq, uid, entry (None: a deletion)
StreamOps = tuple[str, Header | None, list[Record]]  # key, header if it moved, intents
SegmentStream = tuple[str, Header | None, list[Intent]]


class CheckpointError(BridgeError):
    """A checkpoint cannot be read or written."""


class CheckpointFenced(CheckpointError, FencedError):
    """Another writer owns the checkpoint now: this instance must stop (exit 1)."""


@dataclass
class StreamState:
    """One stream as a base holds it: the committed checkpoint and the changes that were
    recorded, and possibly sent, but not acknowledged."""

    checkpoint: StreamCheckpoint
    pending: list[Intent] = field(default_factory=list)


def _row(seq: int, uid: str, entry: Entry | None) -> list[object]:
    if entry is None:
        return [seq, uid]
    return [seq, uid, *entry] if entry.digest else [seq, uid, *entry[:3]]


def _intent(row: list[Any]) -> Intent:
    if len(row) == 2:
        return int(row[0]), str(row[1]), None
    seq, uid, rv, ns, name, *digest = row  # a digest: kinds with a noise filter only
    return int(seq), str(uid), Entry(str(rv), str(ns), str(name), *map(str, digest))


def encode_base(states: Iterable[tuple[str, StreamState]]) -> bytes:
    streams = []
    blobs = []
    for key, state in sorted(states, key=lambda item: item[0]):
        cp = state.checkpoint
        blob = cp.inventory.dumps()
        blobs.append(blob)
        streams.append({"key": key, "rv": cp.resource_version, "seq": cp.sequence,
                        "version": cp.version, "kind": cp.kind, "crd": cp.crd,
                        "listed": cp.listed,
                        "bytes": len(blob), "uncertain": sorted(cp.uncertain),
                        "pending": [_row(*i) for i in state.pending]})
    header = orjson.dumps({"streams": streams, "saved_at": time.time()})
    return b"".join([MAGIC, header, b"\n", *blobs])


def decode_base(data: bytes) -> dict[str, StreamState]:
    if not data:
        return {}
    if not data.startswith(READABLE):
        raise CheckpointError("not a kube-event-bridge checkpoint (bad magic)")
    legacy = data.startswith(READABLE[0])
    try:
        end = data.index(b"\n", len(MAGIC))
        header = orjson.loads(data[len(MAGIC):end])
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint header unreadable: {exc}") from exc
    pos = end + 1
    result: dict[str, StreamState] = {}
    for stream in header["streams"]:
        size = int(stream["bytes"])
        blob = data[pos:pos + size]
        if len(blob) != size:
            raise CheckpointError(f"checkpoint truncated in stream {stream['key']}")
        pos += size
        checkpoint = StreamCheckpoint(
            stream["rv"], int(stream["seq"]), Inventory.loads(blob, legacy),
            stream.get("version", ""), stream.get("kind", ""), bool(stream.get("crd")),
            set(stream.get("uncertain") or ()), stream.get("listed"))
        pending = [_intent(row) for row in stream.get("pending") or ()]
        result[stream["key"]] = StreamState(checkpoint, pending)
    return result


def encode(checkpoints: dict[str, StreamCheckpoint]) -> bytes:
    """A base of committed checkpoints only (nothing pending)."""
    return encode_base((key, StreamState(cp)) for key, cp in checkpoints.items())


_ROW_OVERHEAD = 24  # brackets, commas, quotes and a sequence number, roughly


def encode_segments(ops: Iterable[StreamOps], limit: int) -> list[bytes]:
    """Segments of about ``limit`` bytes at most (a stream's intents may be split over
    several; its header goes with its last intents)."""
    segments: list[bytes] = []
    current: list[list[object]] = []
    size = 0
    for key, header, records in ops:
        rows: list[list[object]] = []
        for record in records:
            if size >= limit and (rows or current):
                current.append([key, None, rows])
                segments.append(orjson.dumps({"j": SEGMENT_VERSION, "s": current}))
                current, rows, size = [], [], 0
            entry = record.entry
            rows.append(_row(record.seq, record.uid, entry))
            size += _ROW_OVERHEAD + len(record.uid) + (0 if entry is None else len(
                entry.resource_version) + len(entry.namespace) + len(entry.name) + len(
                entry.digest))
        if rows or header is not None:
            current.append([key, None if header is None else list(header), rows])
            size += _ROW_OVERHEAD + len(key)
    if current:
        segments.append(orjson.dumps({"j": SEGMENT_VERSION, "s": current}))
    return segments


def decode_segment(segment: bytes) -> Iterator[SegmentStream]:
    try:
        doc = orjson.loads(segment)
        if doc.get("j") != SEGMENT_VERSION:
            raise CheckpointError(f"journal segment version {doc.get('j')!r} unknown")
        streams = [(str(key), None if header is None else _header(header),
                    [_intent(row) for row in rows]) for key, header, rows in doc["s"]]
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"journal segment unreadable: {exc!r}") from exc
    return iter(streams)


def _header(row: list[Any]) -> Header:
    rv, seq, version, kind, crd, listed = row
    return (_text(rv), int(seq), str(version), str(kind), bool(crd), _text(listed))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
