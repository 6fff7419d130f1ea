"""deploy/helm/kube-event-bridge: the chart lints, renders what the real API server accepts
(server-side dry-run), grants the same least privilege as the kustomize base, rolls the pods
when the config changes, and the bridge does its whole job with the chart's ServiceAccount,
RBAC and rendered config, through a workload and a restart."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests.env import builds
from tests.env.procs import free_port
from tests.env.world import Endpoints, World
from tests.integration.deployed import (
    Identity,
    assert_writes_refused,
    bridge_with_config,
    ensure_namespace,
    kubectl,
    rbac_for,
    run_through_restart,
)
from tests.kubetools import crd_manifest, create_crd
from tests.workload import Workload

# The first test builds helm from the Go module proxy when it is not cached (minutes, once
# per machine): more than the default per-test timeout allows.
pytestmark = [pytest.mark.world, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kube-event-bridge"
NAMESPACE = "keb-helm"


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return builds.helm()


@pytest.fixture(scope="module")
def kubectl_bin() -> Path:
    return builds.kubectl()


def helm(binary: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120)
    if ok:
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def render(binary: Path, *values: dict[str, Any], release: str = "keb") -> str:
    args = ["template", release, str(CHART), "--namespace", NAMESPACE]
    for value in values:
        for key, item in value.items():
            args += ["--set-json", f"{key}={json.dumps(item)}"]
    return helm(binary, *args).stdout


def objects(rendered: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == kind]


MONITORING = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}


def test_chart_lints(helm_bin: Path) -> None:
    for values in ({}, MONITORING):
        sets = [f"--set-json={k}={json.dumps(v)}" for k, v in values.items()]
        out = helm(helm_bin, "lint", "--strict", str(CHART), *sets).stdout
        assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_values_are_checked_against_the_schema(helm_bin: Path) -> None:
    """values.schema.json (its config part generated from the config model) refuses what the
    bridge would refuse at start, and what would break least privilege."""
    refused = {
        "config.sinks": ([{"name": "out", "type": "jsonl", "pathh": "-"}], "pathh"),
        "config.checkpoint": ({"store": "etcd"}, "/config/checkpoint/store"),
        "rbac.watchedKinds": ([{"apiGroups": ["*"], "resources": ["*"]}], "apiGroups"),
        "replicaCount": ("two", "replicaCount"),
    }
    for key, (value, named) in refused.items():
        done = helm(helm_bin, "template", "t", str(CHART), "--set-json",
                    f"{key}={json.dumps(value)}", ok=False)
        assert done.returncode != 0 and "schema" in done.stderr and named in done.stderr, \
            (key, done.stderr)
    plugin = [{"name": "mine", "type": "my-plugin", "anything": 1}]  # validated by the plugin
    helm(helm_bin, "template", "t", str(CHART), "--set-json", f"config.sinks={json.dumps(plugin)}")
    done = helm(helm_bin, "template", "t", str(CHART), "--set", "replicaCount=2",
                "--set", "config.leader_election.enabled=false", ok=False)
    assert "needs config.leader_election.enabled" in done.stderr


def test_rbac_is_the_kustomize_base_s(helm_bin: Path, kubectl_bin: Path,
                                      endpoints: Endpoints) -> None:
    chart = render(helm_bin)
    base = kubectl(kubectl_bin, endpoints.kubeconfig, "kustomize", str(ROOT / "deploy" / "base"))

    def rules(rendered: str) -> dict[str, Any]:
        roles = objects(rendered, "ClusterRole") + objects(rendered, "Role")
        return {(r["kind"], r["metadata"]["name"].endswith("watched-kinds")): r["rules"]
                for r in roles}

    chart_rules, base_rules = rules(chart), rules(base)
    # the only difference: the Lease is named after the release
    ((lease_rule, *_),) = [r for (kind, _), r in chart_rules.items() if kind == "Role"]
    assert lease_rule["resourceNames"] == ["keb-kube-event-bridge"]
    lease_rule["resourceNames"] = ["kube-event-bridge"]
    assert chart_rules == base_rules
    # ... and a bridge without leader election or configmap checkpoints gets no Role at all
    lean = render(helm_bin, {"replicaCount": 1, "config.leader_election.enabled": False,
                             "config.checkpoint": {"store": "file", "path": "/tmp/cp"}})
    assert objects(lean, "Role") == [] and objects(lean, "RoleBinding") == []


def test_a_changed_config_rolls_the_pods(helm_bin: Path) -> None:
    def checksum(*values: dict[str, Any]) -> str:
        (deployment,) = objects(render(helm_bin, *values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() == checksum()
    assert checksum() != checksum({"config.cluster": "prod"})
    assert checksum() == checksum({"replicaCount": 3})


def test_rendered_chart_passes_server_side_dry_run(helm_bin: Path, kubectl_bin: Path,
                                                   endpoints: Endpoints,
                                                   kube: k8s.ApiClient) -> None:
    # prometheus-operator is not installed here: stand-in CRDs (any spec) for its two kinds,
    # so that the dry-run checks their apiVersion, kind and metadata
    for plural, kind in (("servicemonitors", "ServiceMonitor"),
                         ("prometheusrules", "PrometheusRule")):
        create_crd(kube, crd_manifest("monitoring.coreos.com", plural, kind))
    ensure_namespace(kubectl_bin, endpoints, NAMESPACE)
    rendered = render(helm_bin, MONITORING)
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                     "RoleBinding", "ConfigMap", "Deployment", "Service",
                     "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule"}
    out = kubectl(kubectl_bin, endpoints.kubeconfig, "apply", "--dry-run=server", "-f", "-",
                  stdin=rendered)
    assert "deployment.apps/keb-kube-event-bridge created (server dry run)" in out
    assert "poddisruptionbudget.policy/keb-kube-event-bridge created (server dry run)" in out


async def test_bridge_runs_with_the_chart_s_service_account_rbac_and_config(
        helm_bin: Path, kubectl_bin: Path, endpoints: Endpoints, kube: k8s.ApiClient,
        world: World, tmp_path: Path) -> None:
    work = Workload(kube)
    work.setup()
    ensure_namespace(kubectl_bin, endpoints, NAMESPACE)
    release = f"r{uuid.uuid4().hex[:6]}"
    sa_name = f"{release}-kube-event-bridge"
    # the ServiceAccount's token, for the bridge running here as the pod would
    sa_kubeconfig = world.service_account_kubeconfig(kube, NAMESPACE, sa_name)
    prefix = f"helm{uuid.uuid4().hex[:8]}"
    port = free_port(set())
    # everything in the bridge's config goes through the chart; a pod would get its
    # namespace, credentials and address from Kubernetes, this local process from here
    config = {
        "kubeconfig": str(sa_kubeconfig),
        "http": {"port": port, "address": "127.0.0.1"},
        "watch": {"crds": "all", "include": [work.include]},
        "sinks": [{"name": "bus", "type": "kafka",
                   "bootstrap_servers": endpoints.kafka_bootstrap_servers,
                   "topic": prefix + ".{plural}"}],
        "checkpoint": {"store": "configmap", "namespace": NAMESPACE, "id": release,
                       "interval": 0.5},
        "leader_election": {"enabled": True, "namespace": NAMESPACE, "lease_duration": 4,
                            "renew_deadline": 3, "retry_period": 0.5},
    }
    rendered = render(helm_bin, {"config": config}, release=release)
    kubectl(kubectl_bin, endpoints.kubeconfig, "apply", "-n", NAMESPACE, "-f", "-",
            stdin=yaml.safe_dump_all(rbac_for(rendered, work)))
    (configmap,) = objects(rendered, "ConfigMap")
    chart_config = yaml.safe_load(configmap["data"]["config.yaml"])
    lease = chart_config["leader_election"]["name"]
    assert lease == sa_name  # named after the release by the chart
    process = bridge_with_config(tmp_path, chart_config, port)
    await run_through_restart(process, work, bootstrap=endpoints.kafka_bootstrap_servers,
                              prefix=prefix, changes=60)
    holder = k8s.CoordinationV1Api(kube).read_namespaced_lease(lease, NAMESPACE)
    assert holder.spec.lease_transitions >= 1  # the Lease the chart's Role grants was used
    await assert_writes_refused(Identity(NAMESPACE, lease, sa_kubeconfig), work)
