"""Typed events: one bridge CloudEvent, decoded, with the object it carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, NamedTuple


class ChangeType(enum.StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    DELETED = "deleted"


class ObjectKey(NamedTuple):
    """Where an object lives in the view: ``kind`` is ``Kind.group`` (``Kind`` alone for the
    core group, as kubectl spells it); ``namespace`` is ``""`` for cluster-scoped objects."""

    kind: str
    namespace: str
    name: str


def kind_key(kind: str, apiversion: str) -> str:
    """``Database`` + ``demo.example.com/v1`` -> ``Database.demo.example.com``."""
    group = apiversion.rpartition("/")[0]
    return f"{kind}.{group}" if group else kind


@dataclass(slots=True, frozen=True, eq=False)
class Event:
    """One change as the bridge sent it. ``object`` is the object's state after the change
    (its last state for a deletion); ``previous``/``patch`` only with the bridge's
    ``events.previous``. ``sequence`` is the bridge's per-stream counter (increasing, not
    contiguous); ``synthetic`` says the change came from a snapshot or re-list diff."""

    id: str
    type: ChangeType
    uid: str
    kind: str  # ``Kind.group``
    apiversion: str
    namespace: str
    name: str
    resource_version: str
    sequence: int
    synthetic: bool
    source: str
    subject: str
    time: str
    partitionkey: str
    object: dict[str, Any]
    truncated: str = ""  # "", "fields" or "reference" (then ``object`` is metadata only)
    previous: dict[str, Any] | None = None
    patch: list[Any] | None = None

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.kind, self.namespace, self.name)


class Tombstone(NamedTuple):
    """A Kafka record with a null value after a deletion (compacted topics): the object
    whose partition key is ``key`` in ``topic`` is gone."""

    topic: str
    key: str
