"""The consumer decodes what the bridge's sinks really produce (their own encoders)."""

from __future__ import annotations

import orjson
import pytest

from bridge.events.builder import EventBuilder, EventOptions
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType
from kube_event_consumer import ChangeType, DecodeError, Tombstone, decode_kafka, decode_nats
from sinks.kafka import binary_headers as kafka_headers
from sinks.nats import binary_headers as nats_headers

DB = Resource("demo.example.com", "v1", "databases", "Database", True)
CM = Resource("", "v1", "configmaps", "ConfigMap", True)


def delta(change: DeltaType = DeltaType.UPDATED, resource: Resource = DB,
          rv: str = "2832", seq: int = 3) -> Delta:
    obj = {"apiVersion": resource.api_version, "kind": resource.kind,
           "metadata": {"name": "orders", "namespace": "demo", "uid": "u-1",
                        "resourceVersion": rv}, "spec": {"sizeGi": 20}}
    return Delta(change, resource, obj, "u-1", rv, False, "demo.example.com/databases", seq,
                 1_700_000_000.0, "demo", "orders")


@pytest.mark.parametrize("change", list(DeltaType))
def test_kafka_binary_mode(change: DeltaType) -> None:
    event = EventBuilder().build(delta(change))
    got = decode_kafka("t", event.key, event.data, kafka_headers(event))
    assert not isinstance(got, Tombstone)
    assert (got.type, got.id, got.uid, got.kind, got.namespace, got.name) == (
        ChangeType(change.value), event.id, "u-1", "Database.demo.example.com", "demo",
        "orders")
    assert (got.resource_version, got.sequence, got.synthetic) == ("2832", 3, False)
    assert got.object["spec"] == {"sizeGi": 20}
    assert got.key == ("Database.demo.example.com", "demo", "orders")


def test_kafka_structured_mode_and_core_kinds() -> None:
    event = EventBuilder().build(delta(resource=CM))
    got = decode_kafka("t", event.key, event.structured(),
                       [("content-type", b"application/cloudevents+json")])
    assert not isinstance(got, Tombstone)
    assert got.kind == "ConfigMap" and got.apiversion == "v1" and got.id == event.id


def test_kafka_tombstone() -> None:
    assert decode_kafka("t", b"u-1", None, []) == Tombstone("t", "u-1")
    with pytest.raises(DecodeError):
        decode_kafka("t", None, None, [])


def test_nats_binary_mode_is_percent_decoded_and_structured_mode() -> None:
    event = EventBuilder(EventOptions(cluster="prod-ü 100%")).build(delta())
    headers = nats_headers(event)
    assert "%" in headers["ce-source"]  # the sink really encoded it
    got = decode_nats(headers, event.data or b"")
    assert got.source == event.attributes["source"] and got.id == event.id
    got = decode_nats({"content-type": "application/cloudevents+json"}, event.structured())
    assert got.source == event.attributes["source"]


@pytest.mark.parametrize("previous", ["state", "patch"])
def test_previous_state_is_unwrapped(previous: str) -> None:
    builder = EventBuilder(EventOptions(previous=previous))
    builder.build(delta(DeltaType.ADDED, rv="1"))
    event = builder.build(delta(rv="2"))
    got = decode_nats(nats_headers(event), event.data or b"")
    assert got.object["metadata"]["resourceVersion"] == "2"
    assert (got.previous is not None) == (previous == "state")
    assert (got.patch is not None) == (previous == "patch")


@pytest.mark.parametrize("headers,data", [
    ({}, b"not json"),
    ({}, b"[1]"),
    ({"ce-id": "x"}, b"{}"),  # attributes missing
    ({"ce-id": "u/1", "ce-type": "io.k8s.resource.moved"}, b"{}"),
])
def test_what_is_not_a_bridge_event(headers: dict[str, str], data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_nats(headers, data)


def test_data_that_is_not_an_object() -> None:
    event = EventBuilder().build(delta())
    with pytest.raises(DecodeError):
        decode_nats(nats_headers(event), orjson.dumps([1]))
