"""Kafka TLS and SASL: one settings model, shared by the kafka sink and the kafka checkpoint
store (same keys under ``sinks[].`` and ``checkpoint.``), and the aiokafka client options
they turn into."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sinks.tls import TlsSettings


class SaslSettings(BaseModel):
    """Kafka SASL authentication (over TLS when `tls` is set too)."""

    model_config = ConfigDict(extra="forbid")
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="the broker listener's SASL mechanism")
    username: str = Field(description="SASL user")
    password: SecretStr = Field(description="SASL password (use `${ENV}`; never logged)")


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
