"""Per-object order: is an event newer than the state the view holds for its object?

The order key is the object's resourceVersion, compared as Kubernetes 1.35 defines it
(KEP-5504, "comparable resource versions", GA in 1.35: for objects of one type, a
resourceVersion is a decimal integer without leading zeros and a larger one is newer). Every
etcd-backed kind has had such resourceVersions in every release; for an API server whose
resourceVersions do not have that form (an aggregated API), the bridge's ``sequence``
(per stream, increasing, persisted in its checkpoint) decides instead.

Why not the sequence alone: the bridge re-sends the changes in flight at a crash with the
ids (and resourceVersions) they had but new sequence numbers, and a stream whose checkpoint
is reset (or whose key changes, e.g. when namespaces are selected) numbers from 1 again; the
resourceVersion orders both correctly. The sequence still classifies what is not newer:
sent *after* the state held (a higher sequence, or its own), it is a re-send, i.e. a
duplicate; sent before it, the bus delivered it out of order.

A deletion is final: nothing after it applies to the same uid (uids are never reused).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from kube_event_consumer.event import ChangeType, Event


class Verdict(enum.Enum):
    NEWER = "newer"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"


class Stamp(NamedTuple):
    """What the view remembers of an object's last applied change."""

    id: str
    resource_version: str
    sequence: int
    deleted: bool

    @classmethod
    def of(cls, event: Event) -> Stamp:
        return cls(event.id, event.resource_version, event.sequence,
                   event.type is ChangeType.DELETED)


def comparable(resource_version: str) -> bool:
    """KEP-5504's form: a decimal integer without leading zeros."""
    return resource_version.isdigit() and resource_version.isascii() and (
        resource_version[0] != "0" or resource_version == "0")


def compare_resource_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older, equal or newer than ``b`` (both ``comparable``)."""
    if len(a) != len(b):
        return -1 if len(a) < len(b) else 1
    return (a > b) - (a < b)


def judge(event: Event, held: Stamp) -> Verdict:
    """``event`` (of the object ``held`` describes) against what the view holds."""
    if event.id == held.id:
        return Verdict.DUPLICATE
    if held.deleted:
        newer = False
    elif event.type is ChangeType.DELETED:
        newer = True
    elif comparable(event.resource_version) and comparable(held.resource_version):
        newer = compare_resource_versions(event.resource_version, held.resource_version) > 0
    else:
        newer = event.sequence > held.sequence
    if newer:
        return Verdict.NEWER
    return Verdict.DUPLICATE if event.sequence >= held.sequence else Verdict.OUT_OF_ORDER
