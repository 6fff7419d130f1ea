from __future__ import annotations

from bridge.kube.resources import Resource, preferred_version


def test_preferred_version_follows_kubernetes_priority() -> None:
    assert preferred_version(["v1beta1", "v1", "v1alpha1"]) == "v1"
    assert preferred_version(["v1", "v2beta1"]) == "v1"
    assert preferred_version(["v2", "v10"]) == "v10"
    assert preferred_version(["v1beta2", "v1beta1"]) == "v1beta2"
    assert preferred_version(["foo", "bar", "v1alpha1"]) == "v1alpha1"
    assert preferred_version(["foo", "bar"]) == "bar"


def test_paths_and_identity() -> None:
    crd = Resource("a.b.example.com", "v1", "things", "Thing", True)
    assert crd.collection_path() == "/apis/a.b.example.com/v1/things"
    assert crd.collection_path("ns1") == "/apis/a.b.example.com/v1/namespaces/ns1/things"
    assert crd.group_resource == "things.a.b.example.com"
    core = Resource("", "v1", "configmaps", "ConfigMap", True)
    assert core.collection_path() == "/api/v1/configmaps"
    assert core.api_version == "v1" and str(core) == "core/v1/configmaps"
    cluster = Resource("x.io", "v1", "globals", "Global", False)
    assert cluster.collection_path("ns1") == "/apis/x.io/v1/globals"
