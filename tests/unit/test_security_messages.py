"""What a security failure says: one line, the cause in words, never a secret."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path

import nkeys
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from nats.errors import Error as NatsError
from pydantic import SecretStr

from sinks.kafka_security import SaslSettings, diagnose, not_authorized, security_options
from sinks.kafka_security import explain as explain_kafka
from sinks.nats_security import NatsAuth, permission_denied, refusal
from sinks.tls import tls_problem
from tests.env import procs, secure_nats

SCRAM = SaslSettings(mechanism="SCRAM-SHA-512", username="bridge",
                     password=SecretStr("s3cret-pw"))


def test_an_untrusted_certificate_names_the_ca_setting() -> None:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "unable to get local issuer certificate"
    said = tls_problem(exc)
    assert said is not None
    assert "not trusted (unable to get local issuer certificate)" in said
    assert "tls.ca_file" in said
    assert tls_problem(ConnectionRefusedError()) is None


def test_kafka_refusals_are_permanent_and_never_show_the_password() -> None:
    problem = explain_kafka(SaslAuthenticationFailed("Authentication failed"), SCRAM)
    assert problem.permanent
    assert problem.reason.startswith("SASL SCRAM-SHA-512 authentication of user 'bridge'")
    assert "s3cret-pw" not in problem.reason
    unreachable = explain_kafka(ConnectionRefusedError(111, "Connection refused"), SCRAM)
    assert not unreachable.permanent and "cannot reach the broker" in unreachable.reason
    mismatch = explain_kafka(KafkaConnectionError("Connection at 127.0.0.1:1 closed"), None)
    assert "does its listener expect other security settings" in mismatch.reason
    assert security_options(None, SCRAM)["security_protocol"] == "SASL_PLAINTEXT"


def test_a_closed_port_is_diagnosed_as_unreachable_not_refused() -> None:
    port = procs.free_port(set())
    problem = asyncio.run(diagnose(f"127.0.0.1:{port}", None, SCRAM, timeout=5))
    assert not problem.permanent and "cannot reach the broker" in problem.reason


def test_a_missing_acl_names_the_resource() -> None:
    assert not_authorized(TopicAuthorizationFailedError("k8s.a.things")) == (
        "not authorized for topic k8s.a.things (a missing ACL for this principal)")
    assert not_authorized(TopicAuthorizationFailedError({"k8s.cp"})) == (
        "not authorized for topic k8s.cp (a missing ACL for this principal)")
    said = not_authorized(TransactionalIdAuthorizationFailed())
    assert said is not None and said.startswith("not authorized for transactional id")
    assert not_authorized(ConnectionRefusedError()) is None


def test_nats_refusals_name_the_credential_file_not_its_content() -> None:
    auth = NatsAuth(nkey_seed_file="/etc/nats/bridge.nk")
    said = refusal(NatsError("nats: 'Authorization Violation'"), auth)
    assert said == ("authentication failed (nkey seed file /etc/nats/bridge.nk): the server "
                    "does not accept these credentials")
    assert refusal(FileNotFoundError(2, "No such file or directory", "/x.creds"), auth) == (
        "cannot read /x.creds: No such file or directory")
    assert refusal(ConnectionRefusedError(), auth) is None  # retried: the server may come
    user = NatsAuth(user="bridge", password=SecretStr("pw-123"))
    assert "pw-123" not in user.identity() and user.options()["password"] == "pw-123"


def test_a_permission_violation_is_recognised() -> None:
    said = permission_denied(NatsError('nats: permissions violation for publish to "k8s.x"'))
    assert said == 'permissions violation for publish to "k8s.x"'
    assert permission_denied(NatsError("nats: timeout")) is None


def _claims(jwt: str) -> dict[str, object]:
    payload = jwt.split(".")[1]
    decoded: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(
        payload) % 4)))
    return decoded


def test_the_world_signs_creds_as_nsc_would(tmp_path: Path) -> None:
    server = secure_nats.ServerFiles(port=1, http_port=2, name="t", cert_file=tmp_path / "c",
                                     key_file=tmp_path / "k", store_dir=tmp_path / "js")
    files = secure_nats.operator_server(tmp_path, server)
    creds = files["limited"].read_text().splitlines()
    jwt = creds[creds.index("-----BEGIN NATS USER JWT-----") + 1]
    seed = creds[creds.index("-----BEGIN USER NKEY SEED-----") + 1]
    claims = _claims(jwt)
    user = nkeys.from_seed(bytearray(seed.encode()))
    assert claims["sub"] == user.public_key.decode()
    assert claims["nats"] == {"type": "user", "version": 2, "subs": -1, "data": -1,
                              "payload": -1, "pub": {"deny": ["k8s.>"]}}
    keys = json.loads((tmp_path / "keys.json").read_text())
    account = nkeys.from_seed(bytearray(keys["app"].encode()))
    assert claims["iss"] == account.public_key.decode()
    head, body, signature = jwt.split(".")
    assert account.verify(f"{head}.{body}".encode(),
                          base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    assert oct(files["limited"].stat().st_mode & 0o777) == "0o600"
