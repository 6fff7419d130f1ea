"""Cluster address and credentials, from a kubeconfig or the in-cluster service account.

The official ``kubernetes`` package does the parsing (contexts, OIDC, token files and their
rotation); we turn its result into an ``ssl.SSLContext`` and an ``Authorization`` header,
both read again for every request so rotated credentials are picked up.

Exec credential plugins (``users[].user.exec``) are run here rather than by the library,
which runs them synchronously inside whichever call first needs a token (on the event loop:
every watch stalled meanwhile) and never refreshes the client certificates they issue:

- The first run is part of ``load()`` (start-up; a failure is a ``ConfigError`` naming the
  command and what it printed on stderr).
- Later runs are asynchronous subprocesses (``ExecPlugin.run``, time-boxed, killed when
  cancelled), scheduled ahead of ``status.expirationTimestamp``: at 80% of the lifetime, or
  60 s before expiry when that is later, never before half of it (``refresh_delay``). A
  credential without expiry is kept until the API server answers 401.
- A failed run is logged and retried with backoff (1 s doubling to 30 s, jittered); the
  current credentials stay in use meanwhile.
- A 401 answer forces one refresh (``Credentials.unauthorized``): concurrent 401s share it,
  and forced refreshes are spaced (1 s doubling to 5 min), so a server that keeps refusing
  never causes a storm of plugin runs.
- A new client certificate makes a new ``ssl_context``. The transport passes the current one
  with each request, so new connections present the new certificate while in-flight
  watches keep the connections they have.

Refreshes run on the owner's event loop once ``Credentials.start()`` was called (the
transport does so on its first request); ``close()`` stops them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import ssl
import subprocess
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config import kube_config
from kubernetes.config.exec_provider import ExecProvider

from bridge.errors import BridgeError, ConfigError

log = logging.getLogger(__name__)

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

EXEC_TIMEOUT = 60.0  # one plugin run; a hung plugin is killed
RETRY_MIN, RETRY_MAX = 1.0, 30.0  # backoff after a failed refresh
FORCED_MIN, FORCED_MAX = 1.0, 300.0  # spacing of refreshes forced by 401 answers
FORCED_RESET = 600.0  # the spacing starts over after this long without a forced refresh


class CredentialError(BridgeError):
    """An exec credential plugin failed or answered something unusable."""


def own_namespace() -> str:
    """The pod's namespace in-cluster; ``default`` elsewhere."""
    try:
        return SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def refresh_delay(lifetime: float) -> float:
    """Seconds after issue to refresh a credential valid for ``lifetime`` seconds: at 80%
    of it, or 60 s before expiry when that is later, but never before half of it (and at
    least 1 s later, so a plugin issuing already expired credentials is not run in a loop)."""
    return max(1.0, lifetime * 0.5, min(lifetime * 0.8, lifetime - 60.0))


def retry_delay(failures: int) -> float:
    """Backoff after ``failures`` consecutive failed refreshes (jittered +-20%)."""
    return min(RETRY_MAX, RETRY_MIN * 2.0 ** (failures - 1)) * random.uniform(0.8, 1.2)


@dataclass(frozen=True)
class ExecCredential:
    """The ``status`` of an ExecCredential (PEM text for the certificate and key)."""

    token: str | None
    cert_pem: str | None
    key_pem: str | None
    lifetime: float | None  # seconds from when it was read; None: does not expire


class ExecPlugin:
    """One kubeconfig exec plugin. The library's ``ExecProvider`` parses its configuration
    (command, args, env, working directory, cluster info); we run it without blocking."""

    def __init__(self, provider: ExecProvider, timeout: float = EXEC_TIMEOUT) -> None:
        self._provider = provider
        self.timeout = timeout
        self.command = str(provider.args[0])

    def _env(self) -> dict[str, str]:
        info: dict[str, Any] = {"apiVersion": self._provider.api_version,
                                "kind": "ExecCredential", "spec": {"interactive": False}}
        cluster = self._provider.cluster
        if cluster is not None:  # provideClusterInfo, as the library builds it
            info["spec"]["cluster"] = dict(cluster.value)
            for extension in cluster.value.get("extensions") or []:
                if extension.get("name") == "client.authentication.k8s.io/exec":
                    info["spec"]["cluster"]["config"] = extension.get("extension")
                    break
        return {**self._provider.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}

    def run_blocking(self) -> ExecCredential:
        """Run once, blocking (start-up only)."""
        try:
            done = subprocess.run(self._provider.args, capture_output=True, check=False,
                                  stdin=subprocess.DEVNULL, cwd=self._provider.cwd,
                                  env=self._env(), timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise CredentialError(f"exec plugin {self.command}: no answer within "
                                  f"{self.timeout:.0f}s") from exc
        except OSError as exc:
            raise CredentialError(f"exec plugin {self.command}: cannot run it: {exc}") from exc
        return self._parse(done.returncode, done.stdout, done.stderr)

    async def run(self) -> ExecCredential:
        """Run once as an asynchronous subprocess (the event loop keeps running)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._provider.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=self._provider.cwd, env=self._env())
        except OSError as exc:
            raise CredentialError(f"exec plugin {self.command}: cannot run it: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                stdout, stderr = await proc.communicate()
        except BaseException as exc:  # timed out or cancelled: never leave it running
            with suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            if isinstance(exc, TimeoutError):
                raise CredentialError(f"exec plugin {self.command}: no answer within "
                                      f"{self.timeout:.0f}s (killed)") from exc
            raise
        assert proc.returncode is not None
        return self._parse(proc.returncode, stdout, stderr)

    def _parse(self, code: int, stdout: bytes, stderr: bytes) -> ExecCredential:
        if code != 0:
            err = stderr.decode(errors="replace").strip()[-500:]
            raise CredentialError(f"exec plugin {self.command} exited with {code}"
                                  + (f": {err}" if err else ""))
        try:
            data = json.loads(stdout)
            status = data["status"]
            if data.get("apiVersion") != self._provider.api_version:
                raise CredentialError(
                    f"exec plugin {self.command} answered apiVersion {data.get('apiVersion')}, "
                    f"expected {self._provider.api_version}")
            token = status.get("token") or None
            cert = status.get("clientCertificateData") or None
            key = status.get("clientKeyData") or None
            expiry = status.get("expirationTimestamp")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CredentialError(f"exec plugin {self.command}: not an ExecCredential: "
                                  f"{exc!r}") from exc
        if not token and not cert:
            raise CredentialError(f"exec plugin {self.command} answered neither a token nor "
                                  "clientCertificateData")
        if bool(cert) != bool(key):
            raise CredentialError(f"exec plugin {self.command} answered only one of "
                                  "clientCertificateData and clientKeyData")
        lifetime = None
        if expiry:
            try:
                expires = dt.datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
            except ValueError as exc:
                raise CredentialError(f"exec plugin {self.command}: bad expirationTimestamp "
                                      f"{expiry!r}") from exc
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.UTC)
            lifetime = expires.timestamp() - time.time()
        return ExecCredential(token, cert, key, lifetime)


class Credentials:
    """Server address, the current TLS context and ``Authorization`` header, and (for exec
    plugins) their refresh. ``generation`` changes whenever either changes."""

    def __init__(self, server: str, configuration: k8s_client.Configuration,
                 plugin: ExecPlugin | None = None, first: ExecCredential | None = None
                 ) -> None:
        self.server = server
        self._configuration = configuration
        self._plugin = plugin
        self.generation = 0
        self._token: str | None = None
        self._cert: tuple[str, str] | None = None
        self._ssl = _ssl_context(configuration)
        self.expires_at: float | None = None  # monotonic; None: does not expire
        self._refresh_at: float | None = None  # monotonic
        self._failures = 0
        self._started = False
        self._timer: asyncio.TimerHandle | None = None
        self._inflight: asyncio.Task[bool] | None = None
        self._forced_gap = FORCED_MIN
        self._forced_not_before = 0.0
        self._last_forced = -FORCED_RESET
        if first is not None:
            ctx = self._ssl
            if first.cert_pem and first.key_pem:
                ctx = _ssl_context(configuration, first.cert_pem, first.key_pem)
            self._install(first, ctx, time.monotonic())

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for new connections (None for plain http)."""
        return self._ssl

    def authorization(self) -> str | None:
        """The current ``Authorization`` header value; never blocks on an exec plugin.

        Without an exec plugin, asked through the library's own ``auth_settings()``, so it
        works whichever key the library version stores the token under ("authorization",
        "BearerToken") and its token-file rotation applies."""
        if self._plugin is not None:
            return f"Bearer {self._token}" if self._token else None
        settings: dict[str, dict[str, Any]] = cast(Any, self._configuration).auth_settings()
        for setting in settings.values():
            if (setting.get("in") == "header"
                    and str(setting.get("key", "")).lower() == "authorization"
                    and setting.get("value")):
                return str(setting["value"])
        return None

    # ---- exec plugin refresh -------------------------------------------------------------

    def start(self) -> None:
        """Schedule refreshes on the running loop (idempotent; nothing without a plugin)."""
        if self._plugin is None or self._started:
            return
        self._started = True
        if self._refresh_at is not None:
            self._schedule(self._refresh_at - time.monotonic())

    async def close(self) -> None:
        """Stop refreshing (a running plugin is killed); ``start()`` may resume it."""
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._inflight = self._inflight, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def unauthorized(self, generation: int) -> bool:
        """The API server answered 401 to a request sent with ``generation``'s credentials:
        True when retrying it once is worthwhile (they changed since, possibly through the
        refresh this forces). Forced refreshes are spaced, never a storm."""
        if self._plugin is None:
            return False
        if generation != self.generation:
            return True
        task = self._inflight
        if task is None:
            now = time.monotonic()
            if self._failures or now < self._forced_not_before:
                return False  # a retry is scheduled already, or one was forced moments ago
            if now - self._last_forced > FORCED_RESET:
                self._forced_gap = FORCED_MIN
            self._last_forced = now
            self._forced_not_before = now + self._forced_gap
            self._forced_gap = min(FORCED_MAX, self._forced_gap * 2)
            log.warning("the API server answered 401 Unauthorized: running exec credential "
                        "plugin %s now", self._plugin.command)
            task = self._spawn("after 401 Unauthorized")
        await asyncio.shield(task)
        return generation != self.generation

    def _spawn(self, reason: str) -> asyncio.Task[bool]:
        if self._inflight is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            task = asyncio.get_running_loop().create_task(
                self._refresh(reason), name="credential-refresh")
            self._inflight = task
            task.add_done_callback(self._refreshed)
        return self._inflight

    def _refreshed(self, task: asyncio.Task[bool]) -> None:
        if self._inflight is task:
            self._inflight = None

    def _schedule(self, delay: float) -> None:
        if not self._started:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, delay), self._spawn, "ahead of expiry" if self._failures == 0 else "retry")

    async def _refresh(self, reason: str) -> bool:
        assert self._plugin is not None
        started = time.monotonic()
        try:
            cred = await self._plugin.run()
            ctx = self._ssl
            if cred.cert_pem and cred.key_pem and (cred.cert_pem, cred.key_pem) != self._cert:
                ctx = await asyncio.to_thread(_ssl_context, self._configuration,
                                              cred.cert_pem, cred.key_pem)
        except Exception as exc:  # whatever went wrong: keep what we have, retry later
            self._failures += 1
            delay = retry_delay(self._failures)
            if self.expires_at is None:
                validity = "do not expire"
            elif self.expires_at > started:
                validity = f"expire in {self.expires_at - started:.0f}s"
            else:
                validity = "have EXPIRED"
            log.error("credential refresh (%s) failed, attempt %d: %s; the current "
                      "credentials stay in use and %s; retrying in %.1fs", reason,
                      self._failures, exc, validity, delay,
                      exc_info=None if isinstance(exc, CredentialError) else exc)
            self._schedule(delay)
            return False
        changed = self._install(cred, ctx, started)
        self._failures = 0
        if self._refresh_at is not None:
            self._schedule(self._refresh_at - time.monotonic())
        log.info("credentials from exec plugin %s refreshed (%s)%s%s", self._plugin.command,
                 reason, "" if changed else ", unchanged",
                 "" if cred.lifetime is None else f"; valid for {cred.lifetime:.0f}s")
        return True

    def _install(self, cred: ExecCredential, ctx: ssl.SSLContext | None, now: float) -> bool:
        cert = (cred.cert_pem, cred.key_pem) if cred.cert_pem and cred.key_pem else None
        changed = cred.token != self._token or cert != self._cert
        if changed:
            self._token, self._cert, self._ssl = cred.token, cert, ctx
            self.generation += 1
        if cred.lifetime is None:
            self.expires_at = self._refresh_at = None
        else:
            if cred.lifetime <= 0:
                log.warning("exec plugin %s issued credentials that expired %.0fs ago (is "
                            "this host's clock right?)", cast(ExecPlugin, self._plugin).command,
                            -cred.lifetime)
            self.expires_at = now + cred.lifetime
            self._refresh_at = now + refresh_delay(cred.lifetime)
        return changed


class _Loader(kube_config.KubeConfigLoader):
    """The library's loader, except that an exec plugin is recorded instead of being run."""

    exec_provider: ExecProvider | None = None

    def _load_from_exec_plugin(self) -> bool | None:
        user, cluster = cast(Any, self._user), cast(Any, self._cluster)
        if "exec" not in user:
            return None
        self.exec_provider = ExecProvider(user["exec"], self._get_base_path(cluster.path),
                                          cluster)
        return True


def load(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """From ``kubeconfig`` when given, else in-cluster, else ``$KUBECONFIG``/~/.kube/config."""
    configuration = k8s_client.Configuration()
    plugin: ExecPlugin | None = None
    first: ExecCredential | None = None
    try:
        if kubeconfig and not Path(kubeconfig).exists():
            raise ConfigError(
                f"kubeconfig {kubeconfig} does not exist: fix `kubeconfig:` in the config "
                "or remove it to use the in-cluster service account"
            )
        if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            merger = kube_config.KubeConfigMerger(
                kubeconfig or kube_config.KUBE_CONFIG_DEFAULT_LOCATION)
            if merger.config is None:
                raise ConfigError(f"kubeconfig {kubeconfig or 'in the default locations'} "
                                  "holds no configuration")
            loader = _Loader(config_dict=merger.config, config_base_path=None,
                             active_context=context, config_persister=merger.save_changes)
            loader.load_and_set(configuration)
            if loader.exec_provider is not None:
                plugin = ExecPlugin(loader.exec_provider)
                first = plugin.run_blocking()
    except ConfigError:
        raise
    except CredentialError as exc:
        raise ConfigError(f"cannot get Kubernetes credentials: {exc}") from exc
    except Exception as exc:  # the library raises several unrelated types
        raise ConfigError(
            f"cannot load Kubernetes credentials ({kubeconfig or 'default locations'}): {exc}. "
            "Point `kubeconfig:` at a valid file, or run in a pod with a service account."
        ) from exc
    return Credentials(configuration.host.rstrip("/"), configuration, plugin, first)


def _ssl_context(cfg: k8s_client.Configuration, cert_pem: str | None = None,
                 key_pem: str | None = None) -> ssl.SSLContext | None:
    """The TLS context for ``cfg``; ``cert_pem``/``key_pem`` (exec-issued) replace the
    kubeconfig's client certificate."""
    if not str(cfg.host).startswith("https"):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cert_pem and key_pem:
        with tempfile.TemporaryDirectory(prefix="keb-cert-") as tmp:  # mode 0700
            cert_file, key_file = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            for path, text in ((cert_file, cert_pem), (key_file, key_pem)):
                path.touch(mode=0o600)
                path.write_text(text)
            ctx.load_cert_chain(cert_file, key_file)
    elif cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
