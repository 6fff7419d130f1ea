"""Delta -> Event, per the event contract (README, *The event format*).

Ids are deterministic: ``{uid}/{resourceVersion}`` for added/updated and ``{uid}/deleted``
for a deletion, so a re-delivered change always carries the id it had the first time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import orjson

from bridge.events.event import Event
from bridge.events.redact import Redactor
from bridge.watch.delta import Delta, DeltaType

DEFAULT_TYPE_PREFIX = "io.k8s.resource"


@dataclass(frozen=True)
class EventOptions:
    """``previous``: for updates, also carry the previous state (``state``) or an RFC 6902
    patch from it (``patch``); ``data`` then becomes ``{"object": ..., "previous": ...}`` or
    ``{"object": ..., "patch": [...]}``. The previous state is what this process last
    delivered (kept in memory, so the first update after a start has none)."""

    cluster: str = "local"
    previous: str = "none"  # none | state | patch
    type_prefix: str = DEFAULT_TYPE_PREFIX
    partition_key: str = "uid"  # or "namespace/name"
    strip_managed_fields: bool = True
    redactor: Redactor = field(default_factory=Redactor)


_SECOND: list[object] = [None, ""]  # (whole second, its "YYYY-MM-DDTHH:MM:SS" text)


def _rfc3339(epoch: float) -> str:
    second = int(epoch)
    if _SECOND[0] != second:
        _SECOND[0] = second
        _SECOND[1] = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_SECOND[1]}.{int((epoch - second) * 1000):03d}Z"


class EventBuilder:
    def __init__(self, options: EventOptions | None = None) -> None:
        self.options = options or EventOptions()
        self._sources: dict[tuple[str, str, str, str], str] = {}
        self._types = {t: f"{self.options.type_prefix}.{t.value}" for t in DeltaType}
        self._by_uid = self.options.partition_key == "uid"
        self._last: dict[str, dict[str, Any]] = {}  # uid -> last payload (previous != none)

    def source(self, group: str, version: str, plural: str, namespace: str) -> str:
        key = (group, version, plural, namespace)
        found = self._sources.get(key)
        if found is None:
            api = f"/apis/{group}/{version}" if group else f"/api/{version}"
            ns = f"/namespaces/{namespace}" if namespace else ""
            found = self._sources[key] = f"k8s://{self.options.cluster}{api}{ns}/{plural}"
        return found

    def build(self, delta: Delta) -> Event:
        obj = delta.obj
        meta: dict[str, Any] = obj.get("metadata") or {}
        namespace, name, uid = delta.namespace, delta.name, delta.uid
        resource = delta.resource
        change = delta.type
        if change is DeltaType.DELETED:
            event_id = f"{uid}/deleted"
            when = meta.get("deletionTimestamp")
        else:
            event_id = f"{uid}/{delta.resource_version}"
            when = meta.get("creationTimestamp") if change is DeltaType.ADDED else None
        subject = f"{namespace}/{name}" if namespace else name
        attributes = {
            "specversion": "1.0",
            "id": event_id,
            "source": self.source(resource.group, resource.version, resource.plural,
                                  namespace),
            "type": self._types[change],
            "subject": subject,
            "time": str(when) if when and not delta.synthetic else _rfc3339(delta.observed_at),
            "datacontenttype": "application/json",
            "partitionkey": uid if self._by_uid else subject,
            "kind": resource.kind,
            "apiversion": str(obj.get("apiVersion") or resource.api_version),
            "namespace": namespace,
            "name": name,
            "uid": uid,
            "resourceversion": delta.resource_version,
            "synthetic": "true" if delta.synthetic else "false",
            "sequence": f"{delta.sequence:020d}",
        }
        return Event(attributes, self._data(delta), delta)

    def _payload(self, delta: Delta) -> dict[str, Any]:
        obj = delta.obj
        meta = obj.get("metadata")
        if self.options.strip_managed_fields and isinstance(meta, dict) and (
                "managedFields" in meta):
            meta = dict(meta)  # shallow copies: the delta's object is left as it is
            del meta["managedFields"]
            obj = dict(obj)
            obj["metadata"] = meta
        return self.options.redactor.apply(delta.resource.group, delta.resource.kind, obj)

    def _data(self, delta: Delta) -> bytes:
        obj = self._payload(delta)
        mode = self.options.previous
        if mode == "none":
            return orjson.dumps(obj)
        if delta.type is DeltaType.DELETED:
            self._last.pop(delta.uid, None)
            return orjson.dumps({"object": obj})
        before = self._last.get(delta.uid)
        self._last[delta.uid] = obj
        if delta.type is DeltaType.ADDED or before is None:
            return orjson.dumps({"object": obj})
        if mode == "state":
            return orjson.dumps({"object": obj, "previous": before})
        return orjson.dumps({"object": obj,
                             "patch": jsonpatch.make_patch(before, obj).patch})
