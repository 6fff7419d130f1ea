"""TLS settings shared by the broker sinks."""

from __future__ import annotations

import ssl

from pydantic import BaseModel, ConfigDict, Field


class TlsSettings(BaseModel):
    """TLS to the broker: present (even `{}`) turns TLS on; the server certificate is verified
    against `ca_file` or the system roots."""

    model_config = ConfigDict(extra="forbid")
    ca_file: str = Field("", description="CA bundle; empty = system roots")
    cert_file: str = Field("", description="client certificate (mutual TLS)")
    key_file: str = Field("", description="client key (mutual TLS)")
    verify: bool = Field(True, description="verify the server certificate and name")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            ctx.load_cert_chain(self.cert_file, self.key_file or None)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx
