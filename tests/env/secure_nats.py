"""The secured NATS servers of the test world: TLS, JetStream, nkey users and creds users.

nats-server does not mix the two ways of authenticating public-key users on one port (in
operator mode every user needs a JWT), so there are two small servers:

- ``nats-secure``: TLS, users identified by a bare nkey (``nkey_seed_file``);
- ``nats-operator``: TLS, operator mode with a memory resolver; users hold a ``.creds``
  file (user JWT + nkey seed), accounts and users are signed here, in Python, with the
  ``nkeys`` package (what ``nsc`` would do; no tool to build).

On each: ``bridge`` may do everything; ``limited`` may not publish to ``k8s.>``.
Seeds and creds files are written once per world (mode 0600) and reused across restarts.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

USERS = ("bridge", "limited")
DENIED_SUBJECTS = ("k8s.>",)  # what ``limited`` may not publish to


@dataclass(frozen=True)
class Key:
    seed: str
    public: str


@dataclass(frozen=True)
class ServerFiles:
    """What a secured server needs from outside: ports, its TLS pair and store dir."""

    port: int
    http_port: int
    name: str
    cert_file: Path
    key_file: Path
    store_dir: Path


def _new_key(prefix: int) -> Key:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return Key(seed.decode(), nkeys.from_seed(bytearray(seed)).public_key.decode())


def _keys(path: Path, roles: dict[str, int]) -> dict[str, Key]:
    """``{role: Key}`` from ``path`` (JSON of seeds), created on first use."""
    try:
        seeds: dict[str, str] = json.loads(path.read_text())
        if set(seeds) == set(roles):
            return {r: Key(s, nkeys.from_seed(bytearray(s.encode())).public_key.decode())
                    for r, s in seeds.items()}
    except (OSError, ValueError):
        pass
    made = {role: _new_key(prefix) for role, prefix in roles.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({r: k.seed for r, k in made.items()}, indent=2))
    path.chmod(0o600)
    return made


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(claims: dict[str, Any], signer: Key, issued_at: int) -> str:
    """A NATS JWT (v2): ed25519-nkey signature by ``signer``, jti = hash of the claims
    (the same claims and keys give the same token, so a restart rewrites nothing)."""
    body = {"iat": issued_at, "iss": signer.public, **claims}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = nkeys.from_seed(bytearray(signer.seed.encode())).sign(
        f"{header}.{payload}".encode())
    return f"{header}.{payload}.{_b64(signature)}"


def _user_permissions(user: str) -> dict[str, Any]:
    return {"publish": {"deny": list(DENIED_SUBJECTS)}} if user == "limited" else {}


def _write_secret(path: Path, text: str) -> Path:
    """Write ``text`` (mode 0600) unless the file holds it already; atomically, so that a
    client reading the file meanwhile never sees it half written."""
    try:
        if path.read_text() == text:
            return path
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o600)
    tmp.rename(path)
    return path


def _base_config(server: ServerFiles) -> list[str]:
    return [
        f"server_name: {server.name}",
        f"listen: 127.0.0.1:{server.port}",
        f"http: 127.0.0.1:{server.http_port}",
        f"jetstream {{ store_dir: {json.dumps(str(server.store_dir))} }}",
        f"tls {{ cert_file: {json.dumps(str(server.cert_file))}, "
        f"key_file: {json.dumps(str(server.key_file))}, timeout: 5 }}",
    ]


def nkey_server(work: Path, server: ServerFiles) -> dict[str, Path]:
    """Write ``nats-secure``'s config and the users' seed files; ``{user: seed file}``
    plus ``"config"``."""
    keys = _keys(work / "keys.json", {u: nkeys.PREFIX_BYTE_USER for u in USERS})
    users = [{"nkey": keys[u].public, **({"permissions": _user_permissions(u)}
                                         if _user_permissions(u) else {})} for u in USERS]
    config = [*_base_config(server), f"authorization {{ users: {json.dumps(users)} }}", ""]
    files = {u: _write_secret(work / f"{u}.nk", keys[u].seed) for u in USERS}
    files["config"] = _write_secret(work / "nats.conf", "\n".join(config))
    return files


def _creds(jwt: str, key: Key) -> str:
    return "\n".join([
        "-----BEGIN NATS USER JWT-----", jwt, "------END NATS USER JWT------", "",
        "************************* IMPORTANT *************************",
        "NKEY Seed printed below can be used to sign and prove identity.",
        "NKEYs are sensitive and should be treated as secrets.", "",
        "-----BEGIN USER NKEY SEED-----", key.seed, "------END USER NKEY SEED------", "",
        "*************************************************************", "",
    ])


def operator_server(work: Path, server: ServerFiles) -> dict[str, Path]:
    """Write ``nats-operator``'s config (operator, SYS and APP accounts, memory resolver)
    and the users' creds files; ``{user: creds file}`` plus ``"config"``."""
    roles = {"operator": nkeys.PREFIX_BYTE_OPERATOR, "sys": nkeys.PREFIX_BYTE_ACCOUNT,
             "app": nkeys.PREFIX_BYTE_ACCOUNT, **{u: nkeys.PREFIX_BYTE_USER for u in USERS}}
    keys = _keys(work / "keys.json", roles)
    issued_at = int((work / "keys.json").stat().st_mtime)
    operator = keys["operator"]
    operator_jwt = _jwt({"sub": operator.public, "name": "keb-operator", "nats": {
        "type": "operator", "version": 2, "system_account": keys["sys"].public}}, operator,
        issued_at)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}
    accounts = {
        keys["sys"].public: _jwt({"sub": keys["sys"].public, "name": "SYS", "nats": {
            "type": "account", "version": 2, "limits": unlimited}}, operator, issued_at),
        keys["app"].public: _jwt({"sub": keys["app"].public, "name": "APP", "nats": {
            "type": "account", "version": 2, "limits": {
                **unlimited, "mem_storage": -1, "disk_storage": -1, "streams": -1,
                "consumer": -1}}}, operator, issued_at),
    }
    files: dict[str, Path] = {}
    for user in USERS:
        permissions = _user_permissions(user)
        claims: dict[str, Any] = {"type": "user", "version": 2, "subs": -1, "data": -1,
                                  "payload": -1}
        if permissions:
            claims["pub"] = permissions["publish"]
        user_jwt = _jwt({"sub": keys[user].public, "name": user, "nats": claims}, keys["app"],
                        issued_at)
        files[user] = _write_secret(work / f"{user}.creds", _creds(user_jwt, keys[user]))
    config = [
        *_base_config(server),
        f"operator: {operator_jwt}",
        f"system_account: {keys['sys'].public}",
        "resolver: MEMORY",
        f"resolver_preload: {json.dumps(accounts)}",
        "",
    ]
    files["config"] = _write_secret(work / "nats.conf", "\n".join(config))
    return files
