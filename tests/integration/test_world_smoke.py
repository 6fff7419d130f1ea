"""Proof that each server of the test world is the real thing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from tests.env.world import Endpoints, World
from tests.kubetools import crd_manifest, create_crd

GROUP = "smoke.world.keb.example.com"


def _raw_watch(api: k8s.ApiClient, plural: str, rv: str, timeout: int = 5) -> list[dict[str, Any]]:
    resp = k8s.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, "v1", "default", plural, watch=True, resource_version=rv,
        timeout_seconds=timeout, _preload_content=False,
    )
    events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    resp.release_conn()
    return events


def test_custom_resource_lifecycle_on_a_raw_watch(kube: k8s.ApiClient) -> None:
    create_crd(kube, crd_manifest(GROUP, "widgets", "Widget"))
    objs = k8s.CustomObjectsApi(kube)
    start_rv = objs.list_namespaced_custom_object(GROUP, "v1", "default", "widgets")[
        "metadata"]["resourceVersion"]
    name = f"w-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": 1}}
    created = objs.create_namespaced_custom_object(GROUP, "v1", "default", "widgets", body)
    created["spec"]["size"] = 2
    updated = objs.replace_namespaced_custom_object(GROUP, "v1", "default", "widgets", name,
                                                    created)
    objs.delete_namespaced_custom_object(GROUP, "v1", "default", "widgets", name)

    events = [e for e in _raw_watch(kube, "widgets", start_rv)
              if e["object"]["metadata"]["name"] == name]
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[0]["object"]["metadata"]["resourceVersion"] == created["metadata"][
        "resourceVersion"]
    assert events[1]["object"]["metadata"]["resourceVersion"] == updated["metadata"][
        "resourceVersion"]
    assert events[1]["object"]["spec"]["size"] == 2


def test_gap_makes_old_resource_versions_gone(kube: k8s.ApiClient, world: World) -> None:
    create_crd(kube, crd_manifest(GROUP, "gadgets", "Gadget"))
    objs = k8s.CustomObjectsApi(kube)
    body = {"apiVersion": f"{GROUP}/v1", "kind": "Gadget",
            "metadata": {"name": f"g-{uuid.uuid4().hex[:8]}"}}
    old_rv = objs.create_namespaced_custom_object(GROUP, "v1", "default", "gadgets", body)[
        "metadata"]["resourceVersion"]
    objs.create_namespaced_custom_object(
        GROUP, "v1", "default", "gadgets",
        {**body, "metadata": {"name": f"g-{uuid.uuid4().hex[:8]}"}})
    world.gap()
    try:
        events = _raw_watch(kube, "gadgets", old_rv, timeout=3)
    except ApiException as exc:  # some servers answer the HTTP request itself with 410
        assert exc.status == 410
        return
    assert events and events[0]["type"] == "ERROR", events
    assert events[0]["object"]["code"] == 410


def test_restricted_identity_is_subject_to_rbac(kube: k8s.ApiClient, world: World) -> None:
    user = f"keb-restricted-{uuid.uuid4().hex[:6]}"
    restricted = k8s_config.new_client_from_config(config_file=str(world.user_kubeconfig(user)))
    with pytest.raises(ApiException) as denied:
        k8s.ApiextensionsV1Api(restricted).list_custom_resource_definition()
    assert denied.value.status == 403
    rbac = k8s.RbacAuthorizationV1Api(kube)
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["list"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    deadline = time.monotonic() + 10  # the authorizer sees a new binding after its cache
    while True:  # syncs (milliseconds, more on a loaded machine; one CI run lost the race)
        try:
            k8s.ApiextensionsV1Api(restricted).list_custom_resource_definition()
            return
        except ApiException as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_service_account_token_identity(kube: k8s.ApiClient, world: World) -> None:
    name = f"keb-sa-{uuid.uuid4().hex[:6]}"
    sa_client = k8s_config.new_client_from_config(
        config_file=str(world.service_account_kubeconfig(kube, "default", name)))
    review = k8s.AuthenticationV1Api(sa_client).create_self_subject_review({})
    assert review.status.user_info.username == f"system:serviceaccount:default:{name}"


async def test_kafka_idempotent_produce_and_consume_with_headers(endpoints: Endpoints) -> None:
    topic = f"keb-smoke-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap_servers,
                                enable_idempotence=True)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"value", key=b"key",
                                            headers=[("ce_id", b"abc/1")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=endpoints.kafka_bootstrap_servers,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"key", b"value", meta.offset)
    assert list(record.headers) == [("ce_id", b"abc/1")]


async def test_nats_jetstream_puback_and_duplicate_detection(endpoints: Endpoints) -> None:
    import nats

    stream = f"KEBSMOKE{uuid.uuid4().hex[:6].upper()}"
    nc = await nats.connect(endpoints.nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        first = await js.publish(f"{stream}.a", b"x", headers={"Nats-Msg-Id": "id-1"},
                                 timeout=5)
        second = await js.publish(f"{stream}.a", b"x", headers={"Nats-Msg-Id": "id-1"},
                                  timeout=5)
        assert first.stream == stream and not first.duplicate
        assert second.duplicate and second.seq == first.seq
        await js.delete_stream(stream)
    finally:
        await nc.close()
