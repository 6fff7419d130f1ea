"""Arrange cluster state for tests with the official client (never the bridge's own code)."""

from __future__ import annotations

import time
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


def crd_manifest(
    group: str,
    plural: str,
    kind: str,
    scope: str = "Namespaced",
    versions: tuple[str, ...] = ("v1",),
    storage: str | None = None,
) -> dict[str, Any]:
    storage = storage or versions[0]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind,
                      "listKind": f"{kind}List"},
            "versions": [
                {
                    "name": v, "served": True, "storage": v == storage,
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
                for v in versions
            ],
        },
    }


def create_crd(api: k8s.ApiClient, manifest: dict[str, Any], timeout: float = 30.0) -> None:
    """Create (or keep) a CRD and wait until it is Established and its REST path is served."""
    ext = k8s.ApiextensionsV1Api(api)
    name = manifest["metadata"]["name"]
    try:
        ext.create_custom_resource_definition(cast(Any, manifest))
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise TimeoutError(f"CRD {name} not Established after {timeout}s")


def delete_crd(api: k8s.ApiClient, name: str, timeout: float = 60.0) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    try:
        ext.delete_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.2)
    raise TimeoutError(f"CRD {name} still present after {timeout}s")


def ensure_namespace(api: k8s.ApiClient, name: str) -> None:
    try:
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(
            metadata=k8s.V1ObjectMeta(name=name)))
    except ApiException as exc:
        if exc.status != 409:
            raise
