"""Client settings for the test world's secured brokers (``kafka-secure``, ``nats-secure``,
``nats-operator``): one place that knows which listener, CA, user and credential file a
variant uses, for the conformance, checkpoint-store and security tests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pydantic import SecretStr

from sinks.kafka_security import SaslSettings
from sinks.nats_security import NatsAuth
from sinks.tls import TlsSettings
from tests.env.world import Endpoints

KAFKA_VARIANTS = ("scram-sha-512", "plain", "mtls")  # SASL_SSL x2, SSL with client cert
NATS_VARIANTS = ("nkey", "creds")  # both over TLS


def _need(endpoints: Endpoints, address: str) -> None:
    if not address:
        pytest.fail("this test needs the secured brokers (kafka-secure, nats-secure, "
                    "nats-operator): the local test world runs them; with "
                    "BRIDGE_TEST_BACKEND=external, export their KAFKA_SECURE_*, "
                    "KAFKA_NOAUTO_* and NATS_SECURE_* variables too (`python -m tests.env up` "
                    "prints them)", pytrace=False)


def kafka_password(endpoints: Endpoints, user: str) -> str:
    passwords: dict[str, str] = json.loads(endpoints.kafka_secure_users_file.read_text())
    return passwords[user]


def kafka_client(endpoints: Endpoints, variant: str, user: str = "bridge",
                 password: str | None = None) -> dict[str, Any]:
    """``bootstrap_servers``, ``tls`` and ``sasl`` for a kafka sink or store."""
    _need(endpoints, endpoints.kafka_secure_bootstrap_servers)
    ca = str(endpoints.kafka_secure_ca_file)
    if variant == "mtls":
        assert user == "bridge", "the world issues the client certificate of bridge only"
        return {"bootstrap_servers": endpoints.kafka_secure_tls_bootstrap_servers,
                "tls": TlsSettings(ca_file=ca,
                                   cert_file=str(endpoints.kafka_secure_client_cert_file),
                                   key_file=str(endpoints.kafka_secure_client_key_file)),
                "sasl": None}
    mechanism = {"scram-sha-512": "SCRAM-SHA-512", "plain": "PLAIN"}[variant]
    secret = kafka_password(endpoints, user) if password is None else password
    return {"bootstrap_servers": endpoints.kafka_secure_bootstrap_servers,
            "tls": TlsSettings(ca_file=ca),
            "sasl": SaslSettings(mechanism=mechanism, username=user,
                                 password=SecretStr(secret))}


def nats_client(endpoints: Endpoints, variant: str, user: str = "bridge") -> dict[str, Any]:
    """``url``, ``tls`` and ``creds_file`` or ``nkey_seed_file`` for a nats sink or store."""
    _need(endpoints, endpoints.nats_secure_url)
    tls = TlsSettings(ca_file=str(endpoints.nats_secure_ca_file))
    if variant == "creds":
        creds = (endpoints.nats_secure_creds_file if user == "bridge"
                 else endpoints.nats_secure_limited_creds_file)
        return {"url": endpoints.nats_secure_creds_url, "tls": tls, "creds_file": str(creds)}
    seed = (endpoints.nats_secure_nkey_seed_file if user == "bridge"
            else endpoints.nats_secure_limited_nkey_seed_file)
    return {"url": endpoints.nats_secure_url, "tls": tls, "nkey_seed_file": str(seed)}


def nats_auth(client: dict[str, Any]) -> NatsAuth:
    return NatsAuth(tls=client["tls"], creds_file=client.get("creds_file", ""),
                    nkey_seed_file=client.get("nkey_seed_file", ""))


async def create_topics(endpoints: Endpoints, names: list[str], partitions: int = 3) -> None:
    """Create topics on the secured broker (auto-creation is off there), as its admin."""
    _need(endpoints, endpoints.kafka_noauto_bootstrap_servers)
    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_noauto_bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()
