"""``make demo``: the local control plane, sample CRDs, the bridge with the jsonl sink on the
terminal, and a small workload; the CloudEvents are shown as they arrive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import orjson
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.env.procs import free_port
from tests.env.world import World
from tests.kubetools import create_crd, ensure_namespace

ROOT = Path(__file__).resolve().parents[1]
TTY = sys.stdout.isatty()


def color(code: str, text: str) -> str:
    return f"\033[{code}m{text}\033[0m" if TTY else text


def show_events(stream: IO[bytes], count: list[int]) -> None:
    for line in stream:
        event = orjson.loads(line)
        count[0] += 1
        kind = event["type"].rsplit(".", 1)[-1]
        tint = {"added": "32", "updated": "33", "deleted": "31"}.get(kind, "0")
        synthetic = " (snapshot)" if event.get("synthetic") == "true" else ""
        print(color(tint, f"● {kind:8}") + f" {event['kind']} {event['subject']}"
              f"  rv={event['resourceversion']}{synthetic}")
        data = event.get("data") or {}
        compact = {k: event[k] for k in ("id", "source", "type", "time", "partitionkey")}
        compact["data.spec"] = data.get("spec")
        print(color("2", "  " + orjson.dumps(compact).decode()))


def show_logs(stream: IO[bytes]) -> None:
    for line in stream:
        print(color("2;36", "  bridge | " + line.decode(errors="replace").rstrip()),
              file=sys.stderr)


def workload(api: k8s.ApiClient) -> None:
    objs = k8s.CustomObjectsApi(api)
    group, ns = "demo.example.com", "demo"

    def db(name: str, **spec: object) -> dict[str, object]:
        return {"apiVersion": f"{group}/v1", "kind": "Database", "metadata": {"name": name},
                "spec": spec}

    steps = [
        ("create orders-db", lambda: objs.create_namespaced_custom_object(
            group, "v1", ns, "databases", db("orders-db", engine="postgres", sizeGi=10))),
        ("create tenant acme", lambda: objs.create_cluster_custom_object(
            "platform.demo.example.com", "v1", "tenants",
            {"apiVersion": "platform.demo.example.com/v1", "kind": "Tenant",
             "metadata": {"name": "acme"}, "spec": {"plan": "gold"}})),
        ("scale orders-db", lambda: objs.patch_namespaced_custom_object(
            group, "v1", ns, "databases", "orders-db", {"spec": {"replicas": 3}})),
        ("create cache-db", lambda: objs.create_namespaced_custom_object(
            group, "v1", ns, "databases", db("cache-db", engine="redis", sizeGi=2))),
        ("grow orders-db", lambda: objs.patch_namespaced_custom_object(
            group, "v1", ns, "databases", "orders-db", {"spec": {"sizeGi": 20}})),
        ("delete cache-db", lambda: objs.delete_namespaced_custom_object(
            group, "v1", ns, "databases", "cache-db")),
        ("delete tenant acme", lambda: objs.delete_cluster_custom_object(
            "platform.demo.example.com", "v1", "tenants", "acme")),
    ]
    for what, step in steps:
        time.sleep(1.0)
        print(color("1;35", f"$ workload: {what}"))
        step()


def main() -> int:
    print(color("1", "starting the local control plane (first run builds it, ~10 min)..."))
    endpoints = World().up()
    api = k8s_config.new_client_from_config(config_file=str(endpoints.kubeconfig))
    ensure_namespace(api, "demo")
    for manifest in yaml.safe_load_all((ROOT / "config" / "samples" / "crds.yaml").read_text()):
        create_crd(api, manifest)
    for leftover in ("orders-db", "cache-db"):  # a re-run starts from a clean slate
        try:
            k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
                "demo.example.com", "v1", "demo", "databases", leftover)
        except k8s.ApiException:
            pass
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "demo.yaml"
        config.write_text(yaml.safe_dump({
            "cluster": "demo", "kubeconfig": str(endpoints.kubeconfig),
            "http": {"port": free_port(set()), "address": "127.0.0.1"},
            "watch": {"include": ["*demo.example.com/*"]},
            "sinks": [{"name": "terminal", "type": "jsonl", "path": "-"}],
            "checkpoint": {"path": tmp},
        }))
        print(color("1", f"running: kube-event-bridge run --config {config}"))
        bridge = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config",
                                   str(config)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=dict(os.environ))
        assert bridge.stdout is not None and bridge.stderr is not None
        count = [0]
        readers = [threading.Thread(target=show_events, args=(bridge.stdout, count)),
                   threading.Thread(target=show_logs, args=(bridge.stderr,))]
        for reader in readers:
            reader.start()
        time.sleep(2)
        workload(api)
        time.sleep(2)
        bridge.send_signal(signal.SIGTERM)
        code = bridge.wait(30)
        for reader in readers:
            reader.join(5)
    print(color("1", f"demo done: {count[0]} CloudEvents, bridge exit code {code}. "
                     "Next: `make test`; configure real sinks from config/example.yaml."))
    return 0 if code == 0 and count[0] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
