"""The secured Kafka broker of the test world ("kafka-secure"): what it is configured with.

One KRaft node, the same cached jars as the plaintext broker, ``auto.create.topics.enable``
off and ACLs enforced by ``StandardAuthorizer``. Listeners, all on 127.0.0.1:

- ``PLAINTEXT`` (``kafka_noauto``): principal ``ANONYMOUS``, a super user, for admin and
  provisioning tests (and the broker's own inter-broker/controller traffic);
- ``SASL_SSL`` (``kafka_secure``): SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN over TLS;
- ``SSL`` (``kafka_secure_tls``): TLS with a required client certificate; ``CN=<user>``
  maps to principal ``User:<user>``, so certificate users get the same ACLs as SASL users.

Users (passwords random per world, in ``kafka-secure-users.json``): ``admin`` (super user),
``bridge`` (enough for the sink, the dead-letter topic and the kafka checkpoint store:
every topic, consumer group and transactional id, idempotent writes) and ``limited`` (the
same, but denied Write on topics prefixed ``k8s.``). SCRAM credentials are written into
the metadata log at format time (``--add-scram``), so nothing races the broker's start.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from tests.env.kafka_config import single_node

USERS = ("admin", "bridge", "limited")
SCRAM_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")
DENIED_PREFIX = "k8s."  # topics ``limited`` may not write


@dataclass(frozen=True)
class Listeners:
    plaintext: int
    sasl_ssl: int
    ssl: int
    controller: int


@dataclass(frozen=True)
class ServerTls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def users(path: Path) -> dict[str, str]:
    """``{user: password}`` from ``path``, created (mode 0600) on first use."""
    try:
        found: dict[str, str] = json.loads(path.read_text())
        if set(found) == set(USERS):
            return found
    except (OSError, ValueError):
        pass
    made = {user: secrets.token_urlsafe(18) for user in USERS}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(made, indent=2))
    tmp.chmod(0o600)
    tmp.rename(path)
    return made


def _pem_value(path: Path) -> str:
    """A PEM file as one Java-properties value (``\\n`` escapes are newlines there)."""
    return path.read_text().strip().replace("\n", "\\n")


def server_properties(listeners: Listeners, data: Path, tls: ServerTls,
                      passwords: dict[str, str]) -> str:
    plain_users = " ".join(f'user_{u}="{p}"' for u, p in passwords.items())
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{listeners.controller}",
        f"listeners=PLAINTEXT://127.0.0.1:{listeners.plaintext},"
        f"SASL_SSL://127.0.0.1:{listeners.sasl_ssl},SSL://127.0.0.1:{listeners.ssl},"
        f"CONTROLLER://127.0.0.1:{listeners.controller}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{listeners.plaintext},"
        f"SASL_SSL://127.0.0.1:{listeners.sasl_ssl},SSL://127.0.0.1:{listeners.ssl}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,"
        "CONTROLLER:PLAINTEXT",
        f"sasl.enabled.mechanisms={','.join(SCRAM_MECHANISMS)},PLAIN",
        *(f"listener.name.sasl_ssl.{m.lower()}.sasl.jaas.config={scram_jaas}"
          for m in SCRAM_MECHANISMS),
        "listener.name.sasl_ssl.plain.sasl.jaas.config="
        f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.certificate.chain={_pem_value(tls.cert_file)}",
        f"ssl.keystore.key={_pem_value(tls.key_file)}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.certificates={_pem_value(tls.ca_file)}",
        "listener.name.ssl.ssl.client.auth=required",
        "ssl.principal.mapping.rules=RULE:^CN=(.*?)$/$1/,DEFAULT",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users=User:ANONYMOUS;User:admin",
        "allow.everyone.if.no.acl.found=false",
        *single_node(data, auto_create=False),
        "",
    ])


def scram_format_args(passwords: dict[str, str]) -> list[str]:
    """``kafka-storage format`` arguments that create every user's SCRAM credentials."""
    return [arg for user, password in passwords.items() for mechanism in SCRAM_MECHANISMS
            for arg in ("--add-scram", f"{mechanism}=[name={user},password={password}]")]


# Kafka's enum codes (org.apache.kafka.common.{resource,acl}): resource types, pattern
# types, operations and permissions as the CreateAcls request carries them
_TOPIC, _GROUP, _CLUSTER, _TRANSACTIONAL_ID = 2, 3, 4, 5
_LITERAL, _PREFIXED = 3, 4
_ALL, _WRITE, _DESCRIBE, _IDEMPOTENT_WRITE = 2, 4, 8, 12
_DENY, _ALLOW = 2, 3


def acls() -> list[tuple[int, str, int, str, str, int, int]]:
    """(resource type, name, pattern type, principal, host, operation, permission)."""
    granted = [(_TOPIC, "*", _LITERAL, _ALL), (_GROUP, "*", _LITERAL, _ALL),
               (_TRANSACTIONAL_ID, "*", _LITERAL, _ALL),
               (_CLUSTER, "kafka-cluster", _LITERAL, _IDEMPOTENT_WRITE),
               (_CLUSTER, "kafka-cluster", _LITERAL, _DESCRIBE)]
    found = [(kind, name, pattern, f"User:{user}", "*", operation, _ALLOW)
             for user in ("bridge", "limited") for kind, name, pattern, operation in granted]
    found.append((_TOPIC, DENIED_PREFIX, _PREFIXED, "User:limited", "*", _WRITE, _DENY))
    return found


async def create_acls(host: str, port: int) -> None:
    """Create ``acls()`` through the super-user PLAINTEXT listener (one connection, one
    CreateAcls request each: a JVM running ``kafka-acls`` would cost seconds apiece)."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.admin import CreateAclsRequest

    conn = await create_conn(host, port, request_timeout_ms=30_000)
    try:
        for acl in acls():
            answer = await conn.send(CreateAclsRequest(*acl))
            for error_code, message in answer.creation_responses:
                if error_code:
                    raise RuntimeError(f"CreateAcls {acl} failed: error {error_code} {message}")
    finally:
        conn.close()
