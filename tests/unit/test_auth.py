from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.kube import auth


def kubeconfig(tmp_path: Path, user: dict[str, str]) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return str(path)


def test_bearer_token_becomes_the_authorization_header(tmp_path: Path) -> None:
    creds = auth.load(kubeconfig(tmp_path, {"token": "abc.def"}))
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.authorization() == "Bearer abc.def"
    assert creds.ssl_context is not None and not creds.ssl_context.check_hostname


def test_no_credentials_no_header(tmp_path: Path) -> None:
    assert auth.load(kubeconfig(tmp_path, {})).authorization() is None


def test_missing_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        auth.load(str(tmp_path / "missing"))
