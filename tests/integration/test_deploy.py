"""deploy/: the manifests are accepted by the real API server, and the bridge does its whole
job with exactly the rights they grant (RBAC on), and nothing more."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.daemon import bridge
from tests.env import builds
from tests.env.world import Endpoints, World
from tests.rig import kafka_report
from tests.workload import Workload

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "kube-event-bridge"
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding")


@pytest.fixture(scope="module")
def kubectl() -> Path:
    return builds.kubectl()


def run(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *args], input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("overlay", ["base", "overlays/kafka", "overlays/nats"])
def test_manifests_pass_server_side_dry_run(kubectl: Path, endpoints: Endpoints,
                                            overlay: str) -> None:
    rendered = run(kubectl, endpoints.kubeconfig, "kustomize", str(ROOT / "deploy" / overlay))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "ConfigMap", "ClusterRole", "Service"}
    # a dry-run does not create the namespace the other objects live in
    run(kubectl, endpoints.kubeconfig, "create", "namespace", NAMESPACE, "--dry-run=client",
        "-o", "yaml")
    namespace = yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": NAMESPACE}})
    run(kubectl, endpoints.kubeconfig, "apply", "-f", "-", stdin=namespace)
    out = run(kubectl, endpoints.kubeconfig, "apply", "--dry-run=server", "-f", "-",
              stdin=rendered)
    assert "deployment.apps/kube-event-bridge" in out and "(server dry run)" in out


async def test_bridge_runs_with_the_deployed_service_account_only(
        kubectl: Path, endpoints: Endpoints, kube: k8s.ApiClient, world: World,
        tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    rendered = run(kubectl, endpoints.kubeconfig, "kustomize", str(ROOT / "deploy" / "base"))
    docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] in RBAC_KINDS]
    for doc in docs:  # the operator's edit: the test's CRD groups are the watched kinds
        if doc["kind"] == "ClusterRole" and doc["metadata"]["name"].endswith("watched-kinds"):
            doc["rules"] = [{"apiGroups": [k.group for k in work.kinds], "resources": ["*"],
                             "verbs": ["get", "list", "watch"]}]
    run(kubectl, endpoints.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(docs))
    sa_kubeconfig = world.service_account_kubeconfig(kube, NAMESPACE, "kube-event-bridge")
    prefix = f"dep{uuid.uuid4().hex[:8]}"
    process = bridge(
        tmp_path, kubeconfig=str(sa_kubeconfig), watch={"include": [work.include]},
        sinks=[{"name": "bus", "type": "kafka",
                "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                "topic": prefix + ".{plural}"}],
        checkpoint={"store": "configmap", "namespace": NAMESPACE,
                    "id": f"t{uuid.uuid4().hex[:6]}", "interval": 0.5},
        leader_election={"enabled": True, "namespace": NAMESPACE, "name": "kube-event-bridge",
                         "lease_duration": 4, "renew_deadline": 3, "retry_period": 0.5})
    process.start()
    await asyncio.to_thread(process.wait_ready, 60)
    await work.run(60)
    assert await asyncio.to_thread(process.sigterm) == 0
    await work.run(20)
    process.start()
    await asyncio.to_thread(process.wait_ready, 60)
    report = await kafka_report(endpoints.kafka_bootstrap_servers, prefix, work.truth)
    assert await asyncio.to_thread(process.sigterm) == 0
    assert report.ok and report.duplicates == 0, report.line()
    assert "forbidden" not in process.log.read_text().lower()

    # ... and it can write nothing but its Lease and its ConfigMaps
    sa = k8s_config.new_client_from_config(config_file=str(sa_kubeconfig))
    core, objs = k8s.CoreV1Api(sa), k8s.CustomObjectsApi(sa)
    coordination = k8s.CoordinationV1Api(sa)
    refused = [
        lambda: core.create_namespaced_config_map(
            "default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="x"))),
        lambda: core.list_namespaced_secret(NAMESPACE),
        lambda: objs.patch_namespaced_custom_object(
            work.kinds[0].group, "v1", work.namespace, work.kinds[0].plural, "o0",
            {"spec": {"n": -1}}),
        lambda: coordination.patch_namespaced_lease("someone-elses-lease", NAMESPACE,
                                                    {"spec": {}}),
        lambda: core.create_namespaced_service_account(
            NAMESPACE, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="x"))),
    ]
    for attempt in refused:
        with pytest.raises(ApiException) as denied:
            await asyncio.to_thread(attempt)
        assert denied.value.status == 403
