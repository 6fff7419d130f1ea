"""The container image, built from the Dockerfile (on the local base image) and run as the
Deployment runs it: non-root, read-only root filesystem, the entrypoint with the default
command, the kafka overlay's config mounted at /etc/kube-event-bridge, and the credentials a
pod gets (ServiceAccount token, CA, namespace, KUBERNETES_SERVICE_HOST/PORT) with the deploy
RBAC. Host networking, so the container reaches the test world on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from tests import readback
from tests.env import builds, docker, images
from tests.env.procs import free_port
from tests.env.world import Endpoints
from tests.kubetools import crd_manifest, create_crd, ensure_namespace

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "kube-event-bridge"
SERVICE_ACCOUNT = "kube-event-bridge"
CONFIG_DIR = "/etc/kube-event-bridge"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCHED_GROUP = "example.com"  # what deploy/base's watched-kinds ClusterRole grants
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
              "RoleBinding")
HARDENED = ("--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges")  # the Deployment's securityContext


@pytest.fixture(scope="module")
def engine() -> docker.Engine:
    try:
        return docker.engine()
    except docker.DockerError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def image(engine: docker.Engine) -> str:
    return images.bridge(engine)


def kustomize(directory: str) -> list[dict[str, Any]]:
    rendered = subprocess.run([str(builds.kubectl()), "kustomize", str(ROOT / directory)],
                              capture_output=True, text=True, check=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def overlay_config(overlay: str) -> dict[str, Any]:
    """The config.yaml of the ConfigMap an overlay renders."""
    (configmap,) = [d for d in kustomize(f"deploy/overlays/{overlay}")
                    if d["kind"] == "ConfigMap"]
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["config.yaml"])
    return config


def mount_dir(path: Path, files: dict[str, str]) -> Path:
    """A directory the image's user (uid 10001) can read."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    for name, text in files.items():
        (path / name).write_text(text)
        (path / name).chmod(0o644)
    return path


def test_image_runs_as_non_root_with_the_entrypoint(engine: docker.Engine, image: str) -> None:
    config = json.loads(engine.text("image", "inspect", "--format", "{{json .Config}}", image))
    assert config["User"] == "10001"
    assert config["Entrypoint"] == ["kube-event-bridge"]
    assert config["Cmd"] == ["run", "--config", f"{CONFIG_DIR}/config.yaml"]
    assert engine.text("run", "--rm", *HARDENED, image, "--version") == \
        "kube-event-bridge 0.1.0"
    ids = engine.text("run", "--rm", *HARDENED, "--entrypoint", "id", image)
    assert ids.startswith("uid=10001(bridge) "), ids
    # nothing of the build left behind: no wheels, no CA bundle, no compiler
    leftovers = engine.text("run", "--rm", "--entrypoint", "sh", image, "-c",
                            "find /wheels /run/secrets -mindepth 1 2>/dev/null;"
                            " command -v gcc cc || true")
    assert leftovers == "", leftovers


def test_check_config_reads_the_mounted_config(engine: docker.Engine, image: str,
                                               tmp_path: Path) -> None:
    good = mount_dir(tmp_path / "good", {"config.yaml": yaml.safe_dump(overlay_config("nats"))})
    checked = engine.run("run", "--rm", *HARDENED, "-e", "NATS_URL=nats://127.0.0.1:4222",
                         "-v", f"{good}:{CONFIG_DIR}:ro", image, "check-config",
                         f"{CONFIG_DIR}/config.yaml", check=False)
    assert checked.returncode == 0, checked.stderr.decode()
    assert checked.stdout.decode().strip() == f"{CONFIG_DIR}/config.yaml: valid"
    bad = mount_dir(tmp_path / "bad", {"config.yaml": "sinks: []\nwatch: {crds: sometimes}\n"})
    refused = engine.run("run", "--rm", *HARDENED, "-v", f"{bad}:{CONFIG_DIR}:ro", image,
                         check=False)  # the default command: `run --config` the mounted file
    assert refused.returncode == 2, refused.stderr.decode()
    assert f"{CONFIG_DIR}/config.yaml:2:" in refused.stderr.decode()


def _http(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _apply_deploy_rbac(kubeconfig: Path) -> None:
    docs = [d for d in kustomize("deploy/base") if d["kind"] in RBAC_KINDS]
    applied = subprocess.run([str(builds.kubectl()), f"--kubeconfig={kubeconfig}", "apply",
                              "-f", "-"], input=yaml.safe_dump_all(docs), capture_output=True,
                             text=True, timeout=120)
    assert applied.returncode == 0, applied.stderr


def _pod_credentials(kube: k8s.ApiClient, endpoints: Endpoints, directory: Path) -> Path:
    """What the kubelet mounts into the pod for its ServiceAccount."""
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = k8s.CoreV1Api(kube).create_namespaced_service_account_token(
        SERVICE_ACCOUNT, NAMESPACE, request).status.token
    return mount_dir(directory, {"token": token, "namespace": NAMESPACE,
                                 "ca.crt": endpoints.ca_file.read_text()})


def _wait_http(container: str, engine: docker.Engine, port: int, path: str,
               timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _http(port, path) != 200:
        state = engine.text("inspect", "--format", "{{.State.Status}}", container)
        if state != "running" or time.monotonic() > deadline:
            logs = engine.run("logs", "--tail", "40", container, check=False)
            raise AssertionError(f"{path} never answered 200 (container {state}):\n"
                                 f"{(logs.stdout + logs.stderr).decode(errors='replace')}")
        time.sleep(0.3)


async def test_deploy_config_in_the_image_publishes_to_kafka(
        engine: docker.Engine, image: str, endpoints: Endpoints, kube: k8s.ApiClient,
        tmp_path: Path) -> None:
    await asyncio.to_thread(_apply_deploy_rbac, endpoints.kubeconfig)
    credentials = _pod_credentials(kube, endpoints, tmp_path / "serviceaccount")
    config = overlay_config("kafka")
    port = free_port(set())
    config["http"]["port"] = port  # host networking: the overlay's 9090 may be taken here
    config_dir = mount_dir(tmp_path / "config", {"config.yaml": yaml.safe_dump(config)})
    suffix = uuid.uuid4().hex[:8]
    plural, kind = f"imagetests{suffix}", f"ImageTest{suffix}"
    await asyncio.to_thread(create_crd, kube, crd_manifest(WATCHED_GROUP, plural, kind))
    ensure_namespace(kube, f"image-{suffix}")
    apiserver_port = endpoints.apiserver_url.rsplit(":", 1)[1]
    container = f"keb-image-{suffix}"
    engine.run("run", "--detach", "--name", container, "--network", "host", *HARDENED,
               "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1",
               "-e", f"KUBERNETES_SERVICE_PORT={apiserver_port}",
               "-e", f"KAFKA_BOOTSTRAP_SERVERS={endpoints.kafka_bootstrap_servers}",
               "-e", f"POD_NAME={container}",
               "-v", f"{config_dir}:{CONFIG_DIR}:ro", "-v", f"{credentials}:{SA_DIR}:ro",
               image)  # the default command
    try:
        await asyncio.to_thread(_wait_http, container, engine, port, "/healthz")
        await asyncio.to_thread(_wait_http, container, engine, port, "/readyz")
        objs = k8s.CustomObjectsApi(kube)
        names = [f"o{i}" for i in range(5)]
        for name in names:
            await asyncio.to_thread(
                objs.create_namespaced_custom_object, WATCHED_GROUP, "v1", f"image-{suffix}",
                plural, {"apiVersion": f"{WATCHED_GROUP}/v1", "kind": kind,
                         "metadata": {"name": name}, "spec": {"n": 1}})
        topic = f"k8s.{WATCHED_GROUP}.{plural}"
        received: list[readback.Received] = []
        deadline = time.monotonic() + 60
        while {r.data["metadata"]["name"] for r in received} != set(names):
            assert time.monotonic() < deadline, f"events seen on {topic}: {received}"
            await asyncio.sleep(0.5)
            topics = await readback.kafka_topics(endpoints.kafka_bootstrap_servers, topic)
            received = await readback.kafka_all(endpoints.kafka_bootstrap_servers, topics)
        source = f"k8s://kubernetes/apis/{WATCHED_GROUP}/v1/namespaces/image-{suffix}/{plural}"
        assert {r.attributes["source"] for r in received} == {source}  # cluster: kubernetes
        engine.run("stop", "--time", "30", container, timeout=60)
        assert engine.text("inspect", "--format", "{{.State.ExitCode}}", container) == "0"
        logs = engine.run("logs", container)
        lines = (logs.stdout + logs.stderr).decode(errors="replace").splitlines()
        assert lines and all(json.loads(line) for line in lines)  # logging.format: json
    finally:
        engine.run("rm", "--force", container, check=False)
