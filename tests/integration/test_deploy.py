"""deploy/: the manifests are accepted by the real API server, and the bridge does its whole
job with exactly the rights they grant (RBAC on), and nothing more."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.daemon import bridge
from tests.env import builds
from tests.env.world import Endpoints, World
from tests.integration.deployed import (
    Identity,
    assert_writes_refused,
    ensure_namespace,
    kubectl,
    rbac_for,
    run_through_restart,
)
from tests.workload import Workload

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "kube-event-bridge"


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    return builds.kubectl()


@pytest.mark.parametrize("overlay", ["base", "overlays/kafka", "overlays/nats",
                                     "overlays/sharded"])
def test_manifests_pass_server_side_dry_run(kubectl_bin: Path, endpoints: Endpoints,
                                            overlay: str) -> None:
    rendered = kubectl(kubectl_bin, endpoints.kubeconfig, "kustomize",
                       str(ROOT / "deploy" / overlay))
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "ConfigMap", "ClusterRole", "Service"}
    # the config comes from the overlay's config.yaml, under a name that changes with it
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    config_file = ROOT / "deploy" / overlay / "config.yaml"
    assert configmap["data"]["config.yaml"] == config_file.read_text()
    assert configmap["metadata"]["name"].startswith("kube-event-bridge-config-")
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in volumes
    # a dry-run does not create the namespace the other objects live in
    ensure_namespace(kubectl_bin, endpoints, NAMESPACE)
    out = kubectl(kubectl_bin, endpoints.kubeconfig, "apply", "--dry-run=server", "-f", "-",
                  stdin=rendered)
    assert "deployment.apps/kube-event-bridge" in out and "(server dry run)" in out


def test_a_changed_config_rolls_the_pods(kubectl_bin: Path, endpoints: Endpoints,
                                         tmp_path: Path) -> None:
    """configMapGenerator: another config.yaml is another ConfigMap name in the pod
    template, so `kubectl apply -k` rolls the Deployment."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "config.yaml").write_text(
        (ROOT / "deploy" / "base" / "config.yaml").read_text().replace("kubernetes", "prod"))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(ROOT / "deploy" / "base", overlay)],
        "configMapGenerator": [{"name": "kube-event-bridge-config", "behavior": "replace",
                                "files": ["config.yaml"]}]}))

    def config_map_name(path: Path) -> str:
        rendered = kubectl(kubectl_bin, endpoints.kubeconfig, "kustomize", str(path))
        (deployment,) = [d for d in yaml.safe_load_all(rendered)
                         if d and d["kind"] == "Deployment"]
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        return str(next(v["configMap"]["name"] for v in volumes if v["name"] == "config"))

    assert config_map_name(overlay) != config_map_name(ROOT / "deploy" / "base")


async def test_bridge_runs_with_the_deployed_service_account_only(
        kubectl_bin: Path, endpoints: Endpoints, kube: k8s.ApiClient, world: World,
        tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    rendered = kubectl(kubectl_bin, endpoints.kubeconfig, "kustomize",
                       str(ROOT / "deploy" / "base"))
    kubectl(kubectl_bin, endpoints.kubeconfig, "apply", "-f", "-",
            stdin=yaml.safe_dump_all(rbac_for(rendered, work)))
    identity = Identity(NAMESPACE, "kube-event-bridge",
                        world.service_account_kubeconfig(kube, NAMESPACE, "kube-event-bridge"))
    prefix = f"dep{uuid.uuid4().hex[:8]}"
    process = bridge(
        tmp_path, kubeconfig=str(identity.kubeconfig), watch={"include": [work.include]},
        sinks=[{"name": "bus", "type": "kafka",
                "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                "topic": prefix + ".{plural}"}],
        checkpoint={"store": "configmap", "namespace": NAMESPACE,
                    "id": f"t{uuid.uuid4().hex[:6]}", "interval": 0.5},
        leader_election={"enabled": True, "namespace": NAMESPACE, "name": identity.lease,
                         "lease_duration": 4, "renew_deadline": 3, "retry_period": 0.5})
    await run_through_restart(process, work, bootstrap=endpoints.kafka_bootstrap_servers,
                              prefix=prefix, changes=60)
    await assert_writes_refused(identity, work)
