"""The size policy: an event above the limit loses configured fields, then becomes a
reference event (metadata only plus ``dataref``) or is dead-lettered. Never a crash, never a
stalled stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import orjson

from bridge import metrics
from bridge.events.event import Event
from bridge.events.redact import RedactionRule, Redactor

ATTRIBUTES_BOUND = 8192  # attributes are far smaller than this: skip measuring them


@dataclass(frozen=True)
class SizePolicy:
    max_bytes: int = 1_000_000
    drop_fields: tuple[str, ...] = (
        "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    )
    oversize: Literal["reference", "dead-letter"] = "reference"

    def apply(self, event: Event) -> tuple[Event, str | None]:
        """The event to send, and a dead-letter reason when it must not be sent."""
        if len(event.data or b"") + ATTRIBUTES_BOUND <= self.max_bytes:  # the usual case
            return event, None
        if event.size() <= self.max_bytes:
            return event, None
        obj = orjson.loads(event.data or b"{}")
        if self.drop_fields:
            trimmed = Redactor((RedactionRule("*", self.drop_fields),)).apply("", "", obj)
            data = orjson.dumps(trimmed)
            if len(data) + event.size() - len(event.data or b"") <= self.max_bytes:
                metrics.oversized.labels(outcome="trimmed").inc()
                return Event({**event.attributes, "truncated": "fields"}, data,
                             event.delta), None
        if self.oversize == "dead-letter":
            metrics.oversized.labels(outcome="dead-letter").inc()
            return event, f"event of {event.size()} bytes exceeds max_bytes={self.max_bytes}"
        metrics.oversized.labels(outcome="reference").inc()
        meta = obj.get("metadata") or {}
        keep = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                     "generation", "labels", "creationTimestamp",
                                     "deletionTimestamp") if k in meta}
        stub = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": keep}
        attributes = {**event.attributes, "truncated": "reference",
                      "dataref": f"{event.attributes['source']}/{meta.get('name', '')}"}
        return Event(attributes, orjson.dumps(stub), event.delta), None
