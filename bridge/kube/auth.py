"""Cluster address and credentials, from a kubeconfig or the in-cluster service account.

The official ``kubernetes`` package does the parsing (contexts, exec plugins, OIDC, token
files and their rotation); we only turn its result into an ``ssl.SSLContext`` and an
``Authorization`` header that is re-read on every request so rotated tokens are picked up.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from bridge.errors import ConfigError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def own_namespace() -> str:
    """The pod's namespace in-cluster; ``default`` elsewhere."""
    try:
        return SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | None
    _configuration: k8s_client.Configuration

    def authorization(self) -> str | None:
        """The current ``Authorization`` header value (refreshing expiring tokens).

        Asked through the library's own ``auth_settings()``, so it works whichever key the
        library version stores the token under ("authorization", "BearerToken")."""
        settings: dict[str, dict[str, Any]] = cast(Any, self._configuration).auth_settings()
        for setting in settings.values():
            if (setting.get("in") == "header"
                    and str(setting.get("key", "")).lower() == "authorization"
                    and setting.get("value")):
                return str(setting["value"])
        return None


def load(kubeconfig: str | None = None, context: str | None = None) -> Credentials:
    """From ``kubeconfig`` when given, else in-cluster, else ``$KUBECONFIG``/~/.kube/config."""
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig:
            if not Path(kubeconfig).exists():
                raise ConfigError(
                    f"kubeconfig {kubeconfig} does not exist: fix `kubeconfig:` in the config "
                    "or remove it to use the in-cluster service account"
                )
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config(client_configuration=configuration)
        else:
            k8s_config.load_kube_config(context=context, client_configuration=configuration)
    except ConfigError:
        raise
    except Exception as exc:  # the library raises several unrelated types
        raise ConfigError(
            f"cannot load Kubernetes credentials ({kubeconfig or 'default locations'}): {exc}. "
            "Point `kubeconfig:` at a valid file, or run in a pod with a service account."
        ) from exc
    return Credentials(configuration.host.rstrip("/"), _ssl_context(configuration),
                       configuration)


def _ssl_context(cfg: k8s_client.Configuration) -> ssl.SSLContext | None:
    if not str(cfg.host).startswith("https"):
        return None
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    if not cfg.verify_ssl:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
