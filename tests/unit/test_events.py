from __future__ import annotations

import orjson
import pytest

from bridge.events.builder import EventBuilder, EventOptions
from bridge.events.redact import RedactionRule, Redactor
from bridge.kube.resources import Resource
from bridge.watch.delta import Delta, DeltaType

THING = Resource("a.b.example.com", "v1", "things", "Thing", True)
GLOBAL = Resource("a.b.example.com", "v1", "globals", "Global", False)
SECRET = Resource("", "v1", "secrets", "Secret", True)


def delta(kind: DeltaType = DeltaType.ADDED, resource: Resource = THING, ns: str = "ns",
          synthetic: bool = False, **extra: object) -> Delta:
    meta: dict[str, object] = {"name": "n1", "uid": "u-1", "resourceVersion": "42",
                               "creationTimestamp": "2026-01-02T03:04:05Z",
                               "managedFields": [{"manager": "kubectl"}]}
    if ns:
        meta["namespace"] = ns
    obj = {"apiVersion": resource.api_version, "kind": resource.kind, "metadata": meta,
           **extra}
    return Delta(kind, resource, obj, "u-1", "42", synthetic, "things", 7, 1_700_000_000.5,
                 ns, "n1")


def test_attributes_follow_the_contract() -> None:
    event = EventBuilder(EventOptions(cluster="prod")).build(delta())
    a = event.attributes
    assert a["id"] == "u-1/42"
    assert a["source"] == "k8s://prod/apis/a.b.example.com/v1/namespaces/ns/things"
    assert a["type"] == "io.k8s.resource.added"
    assert a["subject"] == "ns/n1"
    assert a["time"] == "2026-01-02T03:04:05Z"  # creation timestamp for a live add
    assert a["partitionkey"] == "u-1"
    assert a["sequence"] == "00000000000000000007"
    assert (a["kind"], a["apiversion"], a["synthetic"]) == ("Thing", "a.b.example.com/v1",
                                                           "false")
    data = orjson.loads(event.data or b"")
    assert "managedFields" not in data["metadata"] and data["metadata"]["uid"] == "u-1"


def test_delete_ids_and_cluster_scoped_subjects() -> None:
    builder = EventBuilder(EventOptions(partition_key="namespace/name", type_prefix="x.y"))
    event = builder.build(delta(DeltaType.DELETED, GLOBAL, ns="", synthetic=True))
    a = event.attributes
    assert a["id"] == "u-1/deleted" and a["type"] == "x.y.deleted"
    assert a["subject"] == "n1" and a["partitionkey"] == "n1" and a["namespace"] == ""
    assert a["source"] == "k8s://local/apis/a.b.example.com/v1/globals"
    assert a["time"] == "2023-11-14T22:13:20.500Z"  # synthetic: when it was observed
    assert a["synthetic"] == "true"


def test_same_state_same_id() -> None:
    builder = EventBuilder()
    assert builder.build(delta(DeltaType.UPDATED)).id == builder.build(
        delta(DeltaType.UPDATED)).id


def test_secret_data_is_removed_unless_allowed() -> None:
    d = delta(resource=SECRET, data={"k": "c2VjcmV0"}, stringData={"p": "x"}, type="Opaque")
    out = orjson.loads(EventBuilder().build(d).data or b"")
    assert "data" not in out and "stringData" not in out and out["type"] == "Opaque"
    allowed = EventBuilder(EventOptions(redactor=Redactor(allow_secret_data=True)))
    assert orjson.loads(allowed.build(d).data or b"")["data"] == {"k": "c2VjcmV0"}


def test_redaction_rules_by_kind_glob_and_pointer() -> None:
    redactor = Redactor((RedactionRule("*.example.com/Thing", ("/spec/password",
                                                             "/metadata/annotations/a~1b")),))
    d = delta(spec={"password": "p", "user": "u"})
    d.obj["metadata"]["annotations"] = {"a/b": "x", "c": "y"}
    out = orjson.loads(EventBuilder(EventOptions(redactor=redactor)).build(d).data or b"")
    assert out["spec"] == {"user": "u"}
    assert out["metadata"]["annotations"] == {"c": "y"}
    assert d.obj["spec"]["password"] == "p"  # the delta itself is untouched


def test_structured_mode_and_sdk_view() -> None:
    event = EventBuilder().build(delta())
    doc = orjson.loads(event.structured())
    assert doc["id"] == "u-1/42" and doc["data"]["metadata"]["name"] == "n1"
    sdk = event.to_sdk()
    assert sdk.get_id() == "u-1/42" and sdk.get_extension("kind") == "Thing"


def test_bad_pointer_is_rejected() -> None:
    with pytest.raises(ValueError):
        Redactor((RedactionRule("*", ("spec/x",)),)).apply("g", "K", {"spec": {}})


def test_previous_state_and_patch_options() -> None:
    for mode in ("state", "patch"):
        builder = EventBuilder(EventOptions(previous=mode))
        first = orjson.loads(builder.build(delta(DeltaType.ADDED, spec={"n": 1})).data or b"")
        assert set(first) == {"object"} and first["object"]["spec"] == {"n": 1}
        second = orjson.loads(builder.build(delta(DeltaType.UPDATED, spec={"n": 2})).data
                              or b"")
        assert second["object"]["spec"] == {"n": 2}
        if mode == "state":
            assert second["previous"]["spec"] == {"n": 1}
        else:
            assert second["patch"] == [{"op": "replace", "path": "/spec/n", "value": 2}]
        gone = orjson.loads(builder.build(delta(DeltaType.DELETED, spec={"n": 2})).data or b"")
        assert set(gone) == {"object"}
