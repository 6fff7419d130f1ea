"""TLS settings shared by the broker sinks and checkpoint stores, and what a TLS failure
means in one line."""

from __future__ import annotations

import ssl

from pydantic import BaseModel, ConfigDict, Field


class TlsSettings(BaseModel):
    """TLS to the broker (present = on). The server certificate is verified against
    `ca_file` (or the system roots) including its name; `cert_file`/`key_file` add a client
    certificate for mutual TLS."""

    model_config = ConfigDict(extra="forbid")
    ca_file: str = Field("", description="PEM bundle of the CA(s) that signed the broker's "
                         "certificate; empty = the system roots")
    cert_file: str = Field("", description="PEM client certificate (chain) for mutual TLS; "
                           "on Kafka its subject is the principal unless SASL is used")
    key_file: str = Field("", description="PEM private key of `cert_file` (unencrypted); "
                          "empty when `cert_file` holds the key too")
    verify: bool = Field(True, description="verify the broker's certificate and host name; "
                         "false only for tests (anyone on the path can impersonate the "
                         "broker)")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


def tls_problem(exc: BaseException) -> str | None:
    """A TLS failure in words (which side, what to check), else None."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"TLS: the broker's certificate is not trusted ({exc.verify_message}); "
                "check `tls.ca_file` (it must hold the CA that signed the broker's "
                "certificate) and the host name in the address")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "ALERT" in reason.upper() or "CERTIFICATE_REQUIRED" in reason.upper():
            return (f"TLS: the broker refused the handshake ({reason}): does it require a "
                    "client certificate (`tls.cert_file`/`key_file`) it trusts?")
        if "WRONG_VERSION_NUMBER" in reason.upper() or "RECORD_LAYER" in reason.upper():
            return (f"TLS: the broker did not answer with TLS ({reason}): is the address a "
                    "plaintext listener?")
        return f"TLS handshake failed ({reason})"
    return None
