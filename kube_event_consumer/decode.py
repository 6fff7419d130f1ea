"""Bridge CloudEvents from Kafka records and NATS messages (binary or structured mode)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from kube_event_consumer import _json
from kube_event_consumer.errors import DecodeError
from kube_event_consumer.event import ChangeType, Event, Tombstone, kind_key

STRUCTURED = "application/cloudevents+json"
_TYPES = {t.value: t for t in ChangeType}
_intern = sys.intern  # the few kinds, versions, sources and namespaces: one copy each in a view


def decode_kafka(topic: str, key: bytes | None, value: bytes | None,
                 headers: Iterable[tuple[str, bytes]]) -> Event | Tombstone:
    """A record of a bridge Kafka sink: ``ce_*`` headers (binary mode), the JSON event format
    (structured mode), or a tombstone (null value)."""
    if value is None:
        if key is None:
            raise DecodeError(f"{topic}: a record with neither key nor value")
        return Tombstone(topic, key.decode())
    attributes: dict[str, str] = {}
    content_type = ""
    for name, raw in headers:
        if name.startswith("ce_"):
            attributes[name[3:]] = raw.decode()
        elif name == "content-type":
            content_type = raw.decode()
    if content_type == STRUCTURED or not attributes:
        return _structured(value)
    return from_attributes(attributes, value)


def decode_nats(headers: Mapping[str, str] | None, data: bytes) -> Event:
    """A message of a bridge NATS sink: ``ce-*`` headers percent-encoded (binary mode) or the
    JSON event format (structured mode)."""
    attributes = {name[3:]: unquote(value) for name, value in (headers or {}).items()
                  if name.startswith("ce-")}
    if not attributes:
        return _structured(data)
    return from_attributes(attributes, data)


def _structured(value: bytes) -> Event:
    try:
        doc = _json.loads(value)
    except ValueError as exc:
        raise DecodeError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DecodeError("a structured event must be a JSON object")
    data = doc.pop("data", None)
    return _event({k: str(v) for k, v in doc.items()}, data)


def from_attributes(attributes: Mapping[str, str], data: bytes) -> Event:
    """An event from its CloudEvents attributes and its JSON ``data``."""
    try:
        parsed = _json.loads(data) if data else None
    except ValueError as exc:
        raise DecodeError(f"{attributes.get('id')}: data is not JSON: {exc}") from exc
    return _event(attributes, parsed)


def _event(attributes: Mapping[str, str], data: Any) -> Event:
    try:
        type_ = _TYPES[attributes["type"].rpartition(".")[2]]
        previous: dict[str, Any] | None = None
        patch: list[Any] | None = None
        obj = data
        if isinstance(data, dict) and "object" in data and "metadata" not in data:
            obj, previous, patch = data["object"], data.get("previous"), data.get("patch")
        if not isinstance(obj, dict):
            raise DecodeError(f"{attributes.get('id')}: data is not an object")
        uid = attributes["uid"]
        partitionkey = attributes.get("partitionkey", uid)
        apiversion = _intern(attributes["apiversion"])
        return Event(
            id=attributes["id"], type=type_, uid=uid,
            kind=_intern(kind_key(attributes["kind"], apiversion)), apiversion=apiversion,
            namespace=_intern(attributes.get("namespace", "")), name=attributes["name"],
            resource_version=attributes["resourceversion"],
            sequence=int(attributes.get("sequence") or 0),
            synthetic=attributes.get("synthetic") == "true",
            source=_intern(attributes["source"]), subject=attributes["subject"],
            time=attributes.get("time", ""),
            partitionkey=uid if partitionkey == uid else partitionkey, object=obj,
            truncated=attributes.get("truncated", ""), previous=previous, patch=patch)
    except KeyError as exc:
        raise DecodeError(f"{attributes.get('id')}: not a bridge event: no {exc}") from exc
    except ValueError as exc:
        raise DecodeError(f"{attributes.get('id')}: {exc}") from exc
