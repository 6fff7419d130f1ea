"""The bridge's CloudEvent: string attributes (incl. extensions) plus JSON data bytes.

Kept as plain data so every sink binds it cheaply (Kafka ``ce_`` headers, NATS ``ce-``
headers, structured JSON); ``to_sdk()`` gives the official SDK's object for consumers and
tests that want it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.watch.delta import Delta


@dataclass(slots=True, eq=False)
class Event:
    attributes: dict[str, str]
    data: bytes | None  # JSON; None only for a Kafka tombstone-style reference
    delta: Delta

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def type(self) -> str:
        return self.attributes["type"]

    @property
    def key(self) -> bytes:
        return self.attributes["partitionkey"].encode()

    def structured(self) -> bytes:
        """The JSON event format (``application/cloudevents+json``)."""
        doc: dict[str, Any] = dict(self.attributes)
        if self.data is not None:
            doc["data"] = orjson.Fragment(self.data)
        return orjson.dumps(doc)

    def size(self) -> int:
        return len(self.data or b"") + sum(len(k) + len(v) for k, v in self.attributes.items())

    def to_sdk(self) -> Any:
        """The official SDK's CloudEvent (time as a datetime, as the SDK requires)."""
        import datetime as dt

        from cloudevents.core.v1.event import CloudEvent

        attributes: dict[str, Any] = dict(self.attributes)
        attributes["time"] = dt.datetime.fromisoformat(attributes["time"].replace("Z",
                                                                                  "+00:00"))
        return CloudEvent(attributes, orjson.loads(self.data) if self.data is not None
                          else None)
