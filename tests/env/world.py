"""The local test world: etcd + kube-apiserver (RBAC), a KRaft Kafka broker, NATS JetStream,
a secured Kafka broker (TLS, SASL, ACLs, no auto-create; see ``tests.env.secure_kafka``) and
two secured NATS servers (TLS with nkey users, TLS with creds users; ``tests.env.secure_nats``).

Everything binds to 127.0.0.1 on ports chosen free at first start and kept while they stay
free; state (pids, ports, data, logs, certs) lives in ``versions.run_root()``. ``up`` is
idempotent: a healthy daemon with the wanted argv is left alone, a dead or stale one is
restarted, a port taken by a foreign process is replaced by a free one. Every mutating
operation holds the world dir's lock (``tests.env.lock``), so concurrent invocations on one
world queue instead of racing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.env import builds, kafka_config, pki, procs, secure_kafka, secure_nats, versions
from tests.env.lock import world_lock

SERVICE_PORTS = {  # service -> the ports it listens on, in start order
    "etcd": ("etcd", "etcd_peer"),
    "kube-apiserver": ("apiserver",),
    "kafka": ("kafka", "kafka_controller"),
    "kafka-secure": ("kafka_noauto", "kafka_secure", "kafka_secure_tls",
                     "kafka_secure_controller"),
    "nats": ("nats", "nats_http"),
    "nats-secure": ("nats_secure", "nats_secure_http"),
    "nats-operator": ("nats_operator", "nats_operator_http"),
}
SERVICES = tuple(SERVICE_PORTS)
# ``up`` starts these chains in parallel, each in order (the API server needs etcd)
START_CHAINS = (("etcd", "kube-apiserver"), ("kafka",), ("kafka-secure",),
                ("nats", "nats-secure", "nats-operator"))
NATS_SERVICES = {"nats": "nats_http", "nats-secure": "nats_secure_http",
                 "nats-operator": "nats_operator_http"}  # -> their monitoring port


@dataclass(frozen=True)
class Endpoints:
    kubeconfig: Path
    kafka_bootstrap_servers: str
    nats_url: str
    etcd_endpoints: str
    apiserver_url: str
    ca_file: Path
    # the secured broker (empty on backends that have none): PLAINTEXT super-user listener
    # with auto-create off, SASL_SSL, mutual-TLS SSL; users file = JSON {user: password}
    kafka_noauto_bootstrap_servers: str = ""
    kafka_secure_bootstrap_servers: str = ""
    kafka_secure_tls_bootstrap_servers: str = ""
    kafka_secure_ca_file: Path = Path()
    kafka_secure_users_file: Path = Path()
    kafka_secure_client_cert_file: Path = Path()  # CN=bridge, for the SSL listener
    kafka_secure_client_key_file: Path = Path()
    # the secured NATS servers (TLS): nkey users at nats_secure_url, creds (JWT) users at
    # nats_secure_creds_url; "limited" files are for a user that may not publish to k8s.>
    nats_secure_url: str = ""
    nats_secure_ca_file: Path = Path()
    nats_secure_nkey_seed_file: Path = Path()
    nats_secure_limited_nkey_seed_file: Path = Path()
    nats_secure_creds_url: str = ""
    nats_secure_creds_file: Path = Path()
    nats_secure_limited_creds_file: Path = Path()

    def exports(self) -> dict[str, str]:
        found = {
            "KUBECONFIG": str(self.kubeconfig),
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap_servers,
            "NATS_URL": self.nats_url,
            "ETCD_ENDPOINTS": self.etcd_endpoints,
        }
        for name, attr in SECURED_EXPORTS.items():
            value = getattr(self, attr)
            if value not in ("", Path()):
                found[name] = str(value)
        return found

    @staticmethod
    def secured_from(environ: Mapping[str, str]) -> dict[str, Any]:
        """The secured brokers' fields from exported variables (the external backend)."""
        return {attr: Path(environ[name]) if attr.endswith("_file") else environ[name]
                for name, attr in SECURED_EXPORTS.items() if environ.get(name)}


SECURED_EXPORTS = {  # exported variable -> Endpoints field, for the secured brokers
    "KAFKA_NOAUTO_BOOTSTRAP_SERVERS": "kafka_noauto_bootstrap_servers",
    "KAFKA_SECURE_BOOTSTRAP_SERVERS": "kafka_secure_bootstrap_servers",
    "KAFKA_SECURE_TLS_BOOTSTRAP_SERVERS": "kafka_secure_tls_bootstrap_servers",
    "KAFKA_SECURE_CA_FILE": "kafka_secure_ca_file",
    "KAFKA_SECURE_USERS_FILE": "kafka_secure_users_file",
    "KAFKA_SECURE_CLIENT_CERT_FILE": "kafka_secure_client_cert_file",
    "KAFKA_SECURE_CLIENT_KEY_FILE": "kafka_secure_client_key_file",
    "NATS_SECURE_URL": "nats_secure_url",
    "NATS_SECURE_CA_FILE": "nats_secure_ca_file",
    "NATS_SECURE_NKEY_SEED_FILE": "nats_secure_nkey_seed_file",
    "NATS_SECURE_LIMITED_NKEY_SEED_FILE": "nats_secure_limited_nkey_seed_file",
    "NATS_SECURE_CREDS_URL": "nats_secure_creds_url",
    "NATS_SECURE_CREDS_FILE": "nats_secure_creds_file",
    "NATS_SECURE_LIMITED_CREDS_FILE": "nats_secure_limited_creds_file",
}


class World:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or versions.run_root()
        self.state_file = self.root / "state.json"
        self.pki_dir = self.root / "pki"

    # ---- ports -------------------------------------------------------------------------

    def _ports(self) -> dict[str, int]:
        try:
            ports: dict[str, int] = json.loads(self.state_file.read_text())["ports"]
        except (OSError, ValueError, KeyError):
            ports = {}
        return ports

    def _assign_ports(self) -> dict[str, int]:
        """Keep recorded ports that are free or held by our own live daemons."""
        ports = self._ports()
        held: set[str] = set()
        for service, names in SERVICE_PORTS.items():
            if procs.running_pid(self.daemon_stub(service)) is not None:
                held.update(names)
        for name in (n for names in SERVICE_PORTS.values() for n in names):
            port = ports.get(name)
            if port is None or (name not in held and not procs.port_free(port)):
                ports[name] = procs.free_port(set(ports.values()))
        self.state_file.write_text(json.dumps({"ports": ports}, indent=2))
        return ports

    # ---- daemons -----------------------------------------------------------------------

    def daemon_stub(self, service: str) -> procs.Daemon:
        return procs.Daemon(service, [], self.root / service)

    def _etcd(self, ports: dict[str, int]) -> procs.Daemon:
        work = self.root / "etcd"
        client = f"http://127.0.0.1:{ports['etcd']}"
        peer = f"http://127.0.0.1:{ports['etcd_peer']}"
        argv = [
            str(builds.etcd()),
            "--name=keb", f"--data-dir={work / 'data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=keb={peer}", "--initial-cluster-state=new",
            "--unsafe-no-fsync=true", "--quota-backend-bytes=4294967296",
            "--log-level=warn", "--experimental-watch-progress-notify-interval=5s",
        ]
        return procs.Daemon("etcd", argv, work)

    def _apiserver(self, ports: dict[str, int]) -> procs.Daemon:
        work = self.root / "kube-apiserver"
        ca = pki.ensure_ca(self.pki_dir)
        serving = pki.issue(ca, self.pki_dir, "apiserver", "kube-apiserver", server=True)
        sa = pki.ensure_service_account_keys(self.pki_dir)
        argv = [
            str(builds.kube_apiserver()),
            f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={ports['apiserver']}",
            f"--cert-dir={work / 'certs'}",
            f"--tls-cert-file={serving.cert}", f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--storage-backend=etcd3",
            "--etcd-compaction-interval=0",
            "--v=1",
        ]
        return procs.Daemon("kube-apiserver", argv, work)

    def _kafka_jvm(self, work: Path, *, light: bool = False) -> list[str]:
        """The JVM command line; ``light``: C1 only (a quicker, cheaper start for a broker
        that serves functional tests, not benchmarks)."""
        (work / "log4j.properties").write_text("\n".join([
            "log4j.rootLogger=WARN, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.kafka.server.KafkaRaftServer=INFO",
            "",
        ]))
        return [
            str(builds.java()), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            *(["-XX:TieredStopAtLevel=1"] if light else []),
            "-Djava.awt.headless=true", f"-Dlog4j.configuration=file:{work / 'log4j.properties'}",
            "-cp", f"{builds.kafka_libs()}/*",
        ]

    def _kafka_format(self, jvm: list[str], work: Path, props: Path, extra: list[str]) -> bool:
        """Format the broker's storage unless it is; True when it was formatted now."""
        if (work / "data" / "meta.properties").exists():
            return False
        # an id may begin with "-": pass it as --cluster-id=ID, never as a separate word
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self._run_tool(
            [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
             str(props), *extra],
            work, work / "format.log",
        )
        return True

    def _run_tool(self, argv: list[str], work: Path, log: Path) -> None:
        """Run a one-shot command of a server's build (e.g. Kafka's storage format)."""
        builds.run_logged(argv, work, log)

    def _kafka(self, ports: dict[str, int]) -> procs.Daemon:
        work = self.root / "kafka"
        work.mkdir(parents=True, exist_ok=True)
        data = work / "data"
        props = work / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{ports['kafka_controller']}",
            f"listeners=PLAINTEXT://127.0.0.1:{ports['kafka']},"
            f"CONTROLLER://127.0.0.1:{ports['kafka_controller']}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{ports['kafka']}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            *kafka_config.single_node(data, auto_create=True),
            "",
        ]))
        jvm = self._kafka_jvm(work)
        self._kafka_format(jvm, work, props, [])
        return procs.Daemon("kafka", [*jvm, "kafka.Kafka", str(props)], work)

    @property
    def kafka_secure_users_file(self) -> Path:
        return self.root / "kafka-secure-users.json"

    def _kafka_secure(self, ports: dict[str, int]) -> procs.Daemon:
        work = self.root / "kafka-secure"
        work.mkdir(parents=True, exist_ok=True)
        ca = pki.ensure_ca(self.pki_dir)
        serving = pki.issue(ca, self.pki_dir, "kafka-secure", "kafka-secure", server=True)
        passwords = secure_kafka.users(self.kafka_secure_users_file)
        listeners = secure_kafka.Listeners(
            plaintext=ports["kafka_noauto"], sasl_ssl=ports["kafka_secure"],
            ssl=ports["kafka_secure_tls"], controller=ports["kafka_secure_controller"])
        props = work / "server.properties"
        props.write_text(secure_kafka.server_properties(
            listeners, work / "data", secure_kafka.ServerTls(ca.cert, serving.cert, serving.key),
            passwords))
        props.chmod(0o600)
        jvm = self._kafka_jvm(work, light=True)
        if self._kafka_format(jvm, work, props, secure_kafka.scram_format_args(passwords)):
            self._acls_marker.unlink(missing_ok=True)
        return procs.Daemon("kafka-secure", [*jvm, "kafka.Kafka", str(props)], work)

    @property
    def _acls_marker(self) -> Path:
        return self.root / "kafka-secure" / "acls.applied"

    def _kafka_secure_acls(self, ports: dict[str, int]) -> None:
        """Create the ACLs once per formatted storage (they live in its metadata log)."""
        if self._acls_marker.exists():
            return
        asyncio.run(secure_kafka.create_acls("127.0.0.1", ports["kafka_noauto"]))
        self._acls_marker.write_text("ok\n")

    def _prepare_pki(self) -> None:
        ca = pki.ensure_ca(self.pki_dir)
        pki.ensure_service_account_keys(self.pki_dir)
        pki.issue(ca, self.pki_dir, "apiserver", "kube-apiserver", server=True)
        pki.issue(ca, self.pki_dir, "kafka-secure", "kafka-secure", server=True)
        pki.issue(ca, self.pki_dir, "nats-secure", "nats-secure", server=True)
        self.client_cert("bridge")

    def client_cert(self, user: str) -> pki.KeyPair:
        """A client certificate ``CN=user`` from the world's CA (mutual TLS)."""
        return pki.issue(pki.ensure_ca(self.pki_dir), self.pki_dir, f"client-{user}", user)

    def _nats(self, ports: dict[str, int]) -> procs.Daemon:
        work = self.root / "nats"
        argv = [
            str(builds.nats_server()),
            "-a", "127.0.0.1", "-p", str(ports["nats"]), "-m", str(ports["nats_http"]),
            "-js", "-sd", str(work / "jetstream"), "-n", "keb-nats",
        ]
        return procs.Daemon("nats", argv, work)

    def _secure_nats_files(self, service: str, ports: dict[str, int]) -> dict[str, Path]:
        """Write the config and user files of ``nats-secure`` or ``nats-operator``."""
        key = service.replace("-", "_")
        pair = pki.issue(pki.ensure_ca(self.pki_dir), self.pki_dir, "nats-secure",
                         "nats-secure", server=True)
        work = self.root / service
        server = secure_nats.ServerFiles(
            port=ports[key], http_port=ports[f"{key}_http"], name=f"keb-{service}",
            cert_file=pair.cert, key_file=pair.key, store_dir=work / "jetstream")
        write = secure_nats.nkey_server if service == "nats-secure" else \
            secure_nats.operator_server
        return write(work, server)

    def _nats_secured(self, service: str, ports: dict[str, int]) -> procs.Daemon:
        config = self._secure_nats_files(service, ports)["config"]
        return procs.Daemon(service, [str(builds.nats_server()), "-c", str(config)],
                            self.root / service)

    def _daemon(self, service: str, ports: dict[str, int]) -> procs.Daemon:
        if service in ("nats-secure", "nats-operator"):
            return self._nats_secured(service, ports)
        factory = {
            "etcd": self._etcd, "kube-apiserver": self._apiserver,
            "kafka": self._kafka, "kafka-secure": self._kafka_secure, "nats": self._nats,
        }[service]
        return factory(ports)

    # ---- readiness ---------------------------------------------------------------------

    def _ready(self, service: str, ports: dict[str, int]) -> bool:
        if service == "etcd":
            return _http_ok(f"http://127.0.0.1:{ports['etcd']}/health")
        if service == "kube-apiserver":
            ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
            return _http_ok(f"https://127.0.0.1:{ports['apiserver']}/readyz", ctx)
        if service in ("kafka", "kafka-secure"):
            log = (self.root / service / f"{service}.log").read_text(errors="replace")
            started = log.rfind("Kafka Server started") > log.rfind("==== start")
            port = ports["kafka" if service == "kafka" else "kafka_noauto"]
            return started and procs.port_open(port)
        return _http_ok(f"http://127.0.0.1:{ports[NATS_SERVICES[service]]}"
                        "/healthz?js-enabled-only=true")

    _TIMEOUTS = {"etcd": 30.0, "kube-apiserver": 120.0, "kafka": 90.0, "kafka-secure": 90.0,
                 "nats": 30.0, "nats-secure": 30.0, "nats-operator": 30.0}

    def start(self, service: str) -> None:
        """Start ``service`` unless it already runs healthy with the wanted configuration."""
        with world_lock(self.root, f"start {service}"):
            self._start_locked(service, self._assign_ports())

    def _start_locked(self, service: str, ports: dict[str, int]) -> None:
        """``start`` for a caller holding the world lock (``up``'s worker threads)."""
        daemon = self._daemon(service, ports)
        if not (procs.running_pid(daemon, daemon.argv) is not None
                and self._ready(service, ports)):
            self._launch(daemon)
            procs.wait_until(daemon, lambda: self._ready(service, ports),
                             self._TIMEOUTS[service], "readiness check")
        if service == "kafka-secure":
            self._kafka_secure_acls(ports)

    def _launch(self, daemon: procs.Daemon) -> None:
        """(Re)start ``daemon``'s process (``tests.env.containers``: its container)."""
        procs.stop(daemon)
        procs.start(daemon)

    def _start_chain(self, chain: tuple[str, ...], ports: dict[str, int]) -> None:
        for service in chain:
            started = time.monotonic()
            self._start_locked(service, ports)
            # one write per line: print() writes the newline apart, and threads interleave
            sys.stderr.write(f"[env] {service} ready ({time.monotonic() - started:.1f}s)\n")
            sys.stderr.flush()

    def stop(self, service: str) -> None:
        with world_lock(self.root, f"stop {service}"):
            procs.stop(self.daemon_stub(service))

    def kill(self, service: str) -> None:
        with world_lock(self.root, f"kill {service}"):
            procs.kill(self.daemon_stub(service))

    def restart(self, service: str) -> None:
        with world_lock(self.root, f"restart {service}"):
            self.stop(service)
            self.start(service)

    def up(self) -> Endpoints:
        with world_lock(self.root, "up"):
            self.root.mkdir(parents=True, exist_ok=True)
            builds.ensure_all()
            ports = self._assign_ports()
            self._prepare_pki()  # before the threads: they would race to create the CA
            with ThreadPoolExecutor(len(START_CHAINS)) as pool:
                futures = [pool.submit(self._start_chain, chain, ports)
                           for chain in START_CHAINS]
            failed = [str(f.exception()) for f in futures if f.exception() is not None]
            if failed:
                raise RuntimeError("\n".join(failed))
            return self.endpoints()

    def down(self, keep_data: bool = False) -> None:
        with world_lock(self.root, "down"):
            for service in reversed(SERVICES):
                self.stop(service)
            if not keep_data:
                import shutil

                shutil.rmtree(self.root, ignore_errors=True)

    def endpoints(self) -> Endpoints:
        ports = self._ports()
        if not ports:
            raise RuntimeError("the test world is not up: run `python -m tests.env up`")
        kubeconfig = self.admin_kubeconfig(ports)
        return Endpoints(
            kubeconfig=kubeconfig,
            kafka_bootstrap_servers=f"127.0.0.1:{ports['kafka']}",
            nats_url=f"nats://127.0.0.1:{ports['nats']}",
            etcd_endpoints=f"http://127.0.0.1:{ports['etcd']}",
            apiserver_url=f"https://127.0.0.1:{ports['apiserver']}",
            ca_file=self.pki_dir / "ca.crt",
            kafka_noauto_bootstrap_servers=f"127.0.0.1:{ports['kafka_noauto']}",
            kafka_secure_bootstrap_servers=f"127.0.0.1:{ports['kafka_secure']}",
            kafka_secure_tls_bootstrap_servers=f"127.0.0.1:{ports['kafka_secure_tls']}",
            kafka_secure_ca_file=self.pki_dir / "ca.crt",
            kafka_secure_users_file=self.kafka_secure_users_file,
            kafka_secure_client_cert_file=self.client_cert("bridge").cert,
            kafka_secure_client_key_file=self.client_cert("bridge").key,
            nats_secure_url=f"tls://127.0.0.1:{ports['nats_secure']}",
            nats_secure_ca_file=self.pki_dir / "ca.crt",
            nats_secure_nkey_seed_file=self.root / "nats-secure" / "bridge.nk",
            nats_secure_limited_nkey_seed_file=self.root / "nats-secure" / "limited.nk",
            nats_secure_creds_url=f"tls://127.0.0.1:{ports['nats_operator']}",
            nats_secure_creds_file=self.root / "nats-operator" / "bridge.creds",
            nats_secure_limited_creds_file=self.root / "nats-operator" / "limited.creds",
        )

    def daemons(self) -> list[procs.Daemon]:
        return [self.daemon_stub(s) for s in SERVICES]

    # ---- credentials -------------------------------------------------------------------

    def admin_kubeconfig(self, ports: dict[str, int] | None = None) -> Path:
        return self.user_kubeconfig("keb-admin", ("system:masters",), ports)

    def user_kubeconfig(
        self, user: str, groups: tuple[str, ...] = (), ports: dict[str, int] | None = None
    ) -> Path:
        """A kubeconfig with a client certificate for ``user`` (RBAC applies unless masters)."""
        ports = ports or self._ports()
        ca = pki.ensure_ca(self.pki_dir)
        pair = pki.issue(ca, self.pki_dir, f"user-{user}", user, groups)
        return write_kubeconfig(
            self.root / f"kubeconfig-{user}", f"https://127.0.0.1:{ports['apiserver']}",
            ca.cert, {"client-certificate": str(pair.cert), "client-key": str(pair.key)},
        )

    def service_account_kubeconfig(
        self, admin: Any, namespace: str, name: str, hours: int = 24
    ) -> Path:
        """Create ServiceAccount ``namespace/name`` (if needed) and a kubeconfig with a token
        for it from the TokenRequest API; ``admin`` is an official-client ``ApiClient``."""
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        core = k8s.CoreV1Api(admin)
        try:
            core.create_namespaced_service_account(
                namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        request = k8s.AuthenticationV1TokenRequest(
            spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600))
        status = core.create_namespaced_service_account_token(name, namespace, request).status
        if status is None or not status.token:
            raise RuntimeError(f"TokenRequest for {namespace}/{name} returned no token")
        token = str(status.token)
        ports = self._ports()
        return write_kubeconfig(
            self.root / f"kubeconfig-sa-{namespace}-{name}",
            f"https://127.0.0.1:{ports['apiserver']}", self.pki_dir / "ca.crt",
            {"token": token},
        )

    # ---- gap ---------------------------------------------------------------------------

    def gap(self) -> int:
        """Make every resourceVersion older than now answer 410 Gone on the next watch.

        Compacts etcd at its current revision (watches served from etcd fail), then restarts
        kube-apiserver so its watch cache holds nothing older either. Returns the revision.
        """
        with world_lock(self.root, "gap"):
            ports = self._ports()
            base = f"http://127.0.0.1:{ports['etcd']}/v3"
            answer = _post_json(f"{base}/kv/range", {"key": base64.b64encode(b"/").decode()})
            revision = int(answer["header"]["revision"])
            _post_json(f"{base}/kv/compaction", {"revision": revision, "physical": True})
            self.restart("kube-apiserver")
            return revision


def write_kubeconfig(path: Path, server: str, ca: Path, user: dict[str, str]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "keb", "cluster": {"server": server,
                                                 "certificate-authority": str(ca)}}],
        "users": [{"name": "keb", "user": user}],
        "contexts": [{"name": "keb", "context": {"cluster": "keb", "user": "keb"}}],
        "current-context": "keb",
    }
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        result: dict[str, Any] = json.loads(resp.read())
    return result
