"""Noise filters: updates of chosen kinds that are recorded but not sent.

A rule names kinds (the globs of ``watch.exclude``) and what does not count as a change:

- ``status_only``: an update that leaves ``metadata.generation`` as it was (the API server
  bumps it for spec changes and when a deletion starts; not for status, labels, annotations
  or finalizers). Objects without a generation (most built-in kinds without a spec, e.g.
  ConfigMaps) have nothing to compare: their updates are sent.
- ``pointers``: an update whose only differences are at these JSON pointers (RFC 6901, plus
  ``*`` for every element of an array or every value of an object). ``/metadata/
  resourceVersion``, ``/metadata/managedFields`` and ``/metadata/generation`` are always
  implied (a CRD without a status subresource bumps the generation for a heartbeat too).

Comparing needs something of the previous state, and the inventory keeps only a small record
per object: for kinds a rule matches, each record carries a *fingerprint*
``{generation}/{digest}``: the generation (``status_only``), and an 8-byte BLAKE2b digest of
the object with the ignored pointers removed (``pointers``; keyed by the pointer list, so a
changed rule never matches an old digest). Kinds without a rule carry none and pay nothing.
An update is suppressed only when the previous record's fingerprint is known and matches;
otherwise (an object the bridge never saw, an uncertain one after a crash) it is sent.
Adds and deletes are never suppressed. A suppressed update is recorded and acknowledged at
once (it advances the checkpoint and the inventory like a delivered one) and counted in
``kube_event_bridge_events_suppressed_total{group,kind,reason}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import orjson

from bridge import metrics
from bridge.kube.resources import Resource
from bridge.watch.inventory import Entry
from bridge.watch.selection import kind_names

# what changes with every write, or follows from changes elsewhere: a CRD without a status
# subresource bumps the generation for any change outside metadata, heartbeats included
IMPLIED = ("/metadata/resourceVersion", "/metadata/managedFields", "/metadata/generation")
STATUS_ONLY = "status_only"
POINTERS = "pointers"

Path = tuple[str, ...]


@dataclass(frozen=True)
class NoiseRule:
    kind: str  # glob over "group/plural" or "group/Kind" (core group: "core")
    status_only: bool = False
    pointers: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoiseRules:
    rules: tuple[NoiseRule, ...] = ()

    def for_resource(self, resource: Resource) -> NoiseFilter | None:
        """Every rule matching ``resource``, merged; None when none does."""
        names = kind_names(resource)
        matching = [r for r in self.rules if any(fnmatchcase(n, r.kind) for n in names)]
        if not matching:
            return None
        pointers = sorted({p for r in matching for p in r.pointers})
        if pointers:
            pointers = sorted({*pointers, *IMPLIED})
        return NoiseFilter(resource, status_only=any(r.status_only for r in matching),
                           pointers=tuple(pointers))


@dataclass
class NoiseFilter:
    """The merged rules of one kind: fingerprints objects, decides suppression, counts it."""

    resource: Resource
    status_only: bool
    pointers: tuple[str, ...]
    _paths: tuple[Path, ...] = field(init=False)
    _key: bytes = field(init=False)
    _counters: dict[str, Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._paths = tuple(split_pointer(p) for p in self.pointers)
        self._key = hashlib.blake2b("\n".join(self.pointers).encode(),
                                    digest_size=16).digest()

    def fingerprint(self, obj: dict[str, Any]) -> str:
        """``{generation}/{digest}``; a part is empty when its rule is off (or, for the
        generation, when the object has none)."""
        generation = ""
        if self.status_only:
            value = (obj.get("metadata") or {}).get("generation")
            generation = "" if value is None else str(value)
        digest = ""
        if self._paths:
            stripped = obj
            for path in self._paths:
                stripped = without(stripped, path)
            digest = hashlib.blake2b(orjson.dumps(stripped, option=orjson.OPT_SORT_KEYS),
                                     digest_size=8, key=self._key).hexdigest()
        return f"{generation}/{digest}"

    def reason(self, previous: Entry | None, current: Entry) -> str | None:
        """Why the update from ``previous`` to ``current`` is noise, or None (send it)."""
        if previous is None or not previous.digest:
            return None
        old_generation, _, old_digest = previous.digest.partition("/")
        generation, _, digest = current.digest.partition("/")
        if digest and digest == old_digest:
            return POINTERS
        if generation and generation == old_generation:
            return STATUS_ONLY
        return None

    def suppressed(self, previous: Entry | None, current: Entry) -> bool:
        """Whether the update is noise; counts it when it is."""
        why = self.reason(previous, current)
        if why is None:
            return False
        counter = self._counters.get(why)
        if counter is None:
            counter = self._counters[why] = metrics.events_suppressed.labels(
                group=self.resource.group or "core", kind=self.resource.kind, reason=why)
        counter.inc()
        return True


def split_pointer(pointer: str) -> Path:
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer (it must start with '/')")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


def without(value: Any, path: Path) -> Any:
    """A copy of ``value`` without what ``path`` points at (copies only along the path, and
    only when something is removed; never mutates). A token is an object key, an array
    index, or ``*`` (every element). An object the removal leaves empty is removed too."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        if head == "*":
            if not rest:
                return {}
            return {k: without(v, rest) for k, v in value.items()}
        if head not in value:
            return value
        if not rest:
            return {k: v for k, v in value.items() if k != head}
        child = without(value[head], rest)
        if child is value[head]:
            return value
        if child == {}:  # emptied by the removal: as if absent (a first heartbeat creates
            return {k: v for k, v in value.items() if k != head}  # its status object)
        return {**value, head: child}
    if isinstance(value, list):
        if head == "*":
            return [] if not rest else [without(v, rest) for v in value]
        if not head.isdigit() or int(head) >= len(value):
            return value
        index = int(head)
        if not rest:
            return value[:index] + value[index + 1:]
        child = without(value[index], rest)
        return value if child is value[index] else [*value[:index], child, *value[index + 1:]]
    return value
