"""Kafka TLS and SASL: one settings model, shared by the kafka sink and the kafka checkpoint
store (same keys under ``sinks[].`` and ``checkpoint.``), the aiokafka client options they
turn into, and what a failure of those means in one line (never a password)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sinks.tls import TlsSettings, tls_problem


class SaslSettings(BaseModel):
    """SASL authentication to Kafka (over TLS when `tls` is set too: SASL_SSL; without it
    SASL_PLAINTEXT sends a PLAIN password in the clear)."""

    model_config = ConfigDict(extra="forbid")
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism the broker's listener enables; SCRAM never "
        "sends the password itself")
    username: str = Field(description="SASL user name (the ACL principal is `User:<name>`)")
    password: SecretStr = Field(description="SASL password; never logged or printed. "
                                "Give it as `${ENV_VAR}` (e.g. from a Secret) rather than "
                                "in the file")


def security_options(tls: TlsSettings | None, sasl: SaslSettings | None) -> dict[str, Any]:
    """aiokafka keyword arguments (producer, consumer, admin client) for ``tls`` and
    ``sasl``: the security protocol, the SSL context and the SASL credentials."""
    options: dict[str, Any] = {}
    if tls is not None:
        options["ssl_context"] = tls.context()
    if sasl is not None:
        options["sasl_mechanism"] = sasl.mechanism
        options["sasl_plain_username"] = sasl.username
        options["sasl_plain_password"] = sasl.password.get_secret_value()
    options["security_protocol"] = (
        ("SASL_SSL" if tls else "SASL_PLAINTEXT") if sasl else ("SSL" if tls else "PLAINTEXT"))
    return options


class _ReportedByDiagnosis(logging.Filter):
    """aiokafka logs every failed bootstrap connection at ERROR before raising "Unable to
    bootstrap"; the sink and the store report that failure themselves, diagnosed (one line
    each), so this record would only repeat it less clearly."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable connect to \"")


logging.getLogger("aiokafka").addFilter(_ReportedByDiagnosis())  # aiokafka.client's logger


@dataclass(frozen=True)
class Problem:
    """Why a broker refused the client, in words; ``permanent`` when retrying cannot help
    before the configuration (or the broker's) changes."""

    reason: str
    permanent: bool


_DENIED = {
    TopicAuthorizationFailedError: "topic",
    GroupAuthorizationFailedError: "consumer group",
    TransactionalIdAuthorizationFailed: "transactional id",
    ClusterAuthorizationFailedError: "cluster",
}


def not_authorized(exc: BaseException) -> str | None:
    """An ACL refusal in words (which resource kind; the broker names the resource), else
    None. Retrying is right: the operator adds the ACL and delivery goes on."""
    for kind, resource in _DENIED.items():
        if isinstance(exc, kind):
            # "[Error 29] TopicAuthorizationFailedError: NAME" (or "{'NAME', ...}")
            named = str(exc).split(":", 1)[-1] if ":" in str(exc) else ""
            named = named.strip().strip("{}").replace("'", "")
            return (f"not authorized for {resource} {named}".rstrip() +
                    " (a missing ACL for this principal)")
    return None


def explain(exc: BaseException, sasl: SaslSettings | None) -> Problem:
    """Why connecting failed, in words; permanent for credentials and TLS."""
    if isinstance(exc, SaslAuthenticationFailed | IllegalSaslStateError) and sasl is not None:
        return Problem(f"SASL {sasl.mechanism} authentication of user {sasl.username!r} "
                       "failed (wrong user name or password, or no credentials for this "
                       "mechanism on the broker)", permanent=True)
    if isinstance(exc, UnsupportedSaslMechanismError) and sasl is not None:
        return Problem(f"the broker's listener does not enable SASL mechanism "
                       f"{sasl.mechanism}", permanent=True)
    tls = tls_problem(exc)
    if tls is not None:
        return Problem(tls, permanent=True)
    if isinstance(exc, KafkaConnectionError | ConnectionResetError | asyncio.IncompleteReadError
                  | EOFError):
        return Problem("the broker closed the connection at once: does its listener expect "
                       "other security settings (TLS, a client certificate, SASL) than "
                       "`tls`/`sasl` give?", permanent=False)
    if isinstance(exc, TimeoutError):  # before OSError, its base class
        return Problem("cannot reach the broker (connect timed out)", permanent=False)
    if isinstance(exc, OSError):
        return Problem(f"cannot reach the broker ({exc.strerror or exc})", permanent=False)
    return Problem(f"{type(exc).__name__}: {exc}", permanent=False)


async def diagnose(bootstrap_servers: str, tls: TlsSettings | None,
                   sasl: SaslSettings | None, timeout: float = 10.0) -> Problem:
    """Connect to each bootstrap server as the client would, to say why it could not:
    aiokafka only reports "Unable to bootstrap". The first server's answer is taken (a
    permanent problem anywhere wins)."""
    options = security_options(tls, sasl)
    found: list[Problem] = []
    for address in (a.strip() for a in bootstrap_servers.split(",") if a.strip()):
        host, _, port = address.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                conn = await create_conn(
                    host.strip("[]"), int(port), ssl_context=options.get("ssl_context"),
                    security_protocol=options["security_protocol"],
                    sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                    sasl_plain_username=options.get("sasl_plain_username"),
                    sasl_plain_password=options.get("sasl_plain_password"))
            conn.close()
            found.append(Problem("connected now, but the client could not bootstrap",
                                 permanent=False))
        except Exception as exc:  # any failure is what we came to find out
            found.append(explain(exc, sasl))
    permanent = [p for p in found if p.permanent]
    if permanent:
        return permanent[0]
    return found[0] if found else Problem("no bootstrap server given", permanent=True)
