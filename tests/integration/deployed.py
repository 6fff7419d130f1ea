"""What test_deploy.py (kustomize) and test_helm.py (the chart) share: kubectl against the real
API server, the operator's RBAC edit, and the bridge run with nothing but a ServiceAccount's
rights through a workload and a restart."""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.daemon import BridgeProcess, write_config
from tests.env.world import Endpoints
from tests.rig import kafka_report
from tests.workload import Workload

RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding")


def kubectl(binary: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(binary), f"--kubeconfig={kubeconfig}", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stderr}"
    return done.stdout


def rbac_for(rendered: str, work: Workload) -> list[dict[str, Any]]:
    """The rendered identity and RBAC objects, with the operator's edit: the workload's CRD
    groups are the watched kinds."""
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    for doc in docs:
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("watched-kinds"):
            doc["rules"] = [{"apiGroups": [k.group for k in work.kinds], "resources": ["*"],
                             "verbs": ["get", "list", "watch"]}]
    return docs


@dataclass
class Identity:
    """Where the deployed bridge lives and what it may write."""

    namespace: str
    lease: str
    kubeconfig: Path  # a token of its ServiceAccount


async def run_through_restart(process: BridgeProcess, work: Workload, *, bootstrap: str,
                              prefix: str, changes: int) -> None:
    """Workload, clean restart, more workload: every change reaches Kafka once."""
    process.start()
    await asyncio.to_thread(process.wait_ready, 60)
    await work.run(changes)
    assert await asyncio.to_thread(process.sigterm) == 0
    await work.run(changes // 3)
    process.start()
    await asyncio.to_thread(process.wait_ready, 60)
    report = await kafka_report(bootstrap, prefix, work.truth)
    assert await asyncio.to_thread(process.sigterm) == 0
    assert report.ok and report.duplicates == 0, report.line()
    assert "forbidden" not in process.log.read_text().lower()


async def assert_writes_refused(identity: Identity, work: Workload) -> None:
    """The identity can write nothing but its Lease and its ConfigMaps."""
    sa = k8s_config.new_client_from_config(config_file=str(identity.kubeconfig))
    core, objs = k8s.CoreV1Api(sa), k8s.CustomObjectsApi(sa)
    coordination = k8s.CoordinationV1Api(sa)
    namespace = identity.namespace
    refused = [
        lambda: core.create_namespaced_config_map(
            "default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="x"))),
        lambda: core.list_namespaced_secret(namespace),
        lambda: objs.patch_namespaced_custom_object(
            work.kinds[0].group, "v1", work.namespace, work.kinds[0].plural, "o0",
            {"spec": {"n": -1}}),
        lambda: coordination.patch_namespaced_lease(f"not-{identity.lease}", namespace,
                                                    {"spec": {}}),
        lambda: core.create_namespaced_service_account(
            namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="x"))),
    ]
    for attempt in refused:
        with pytest.raises(ApiException) as denied:
            await asyncio.to_thread(attempt)
        assert denied.value.status == 403


def bridge_with_config(tmp: Path, config: dict[str, Any], port: int) -> BridgeProcess:
    """A bridge process reading ``config`` exactly as given (as a pod reads its ConfigMap)."""
    path = write_config(tmp / "bridge.yaml", **config)
    return BridgeProcess(path, port, tmp / "bridge.log")


def ensure_namespace(binary: Path, endpoints: Endpoints, namespace: str) -> None:
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                               "metadata": {"name": namespace}})
    kubectl(binary, endpoints.kubeconfig, "apply", "-f", "-", stdin=manifest)
