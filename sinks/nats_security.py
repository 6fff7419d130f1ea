"""NATS TLS and authentication, shared by the nats sink and the nats-kv checkpoint store:
the nats-py connect options, and a first connect that gives up (with the reason in one line)
when the server refuses the credentials or the certificate, where nats-py would retry them
forever.

Refusals are judged from what nats-py reports: an ``Authorization Violation`` or
``Authentication Expired`` from the server, a TLS verification or handshake failure, a creds
or seed file that cannot be read or parsed. Secrets (password, seed, creds content) never
appear in a message: only the file names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from pydantic import SecretStr

from bridge.errors import BridgeError
from sinks.tls import TlsSettings, tls_problem

ErrorCallback = Callable[[Exception], Awaitable[None]]


class _HarmlessTlsEof(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when using ssl"
    whenever a TLS server closes a nats-py connection (nats-py's protocol answers EOF with
    True); the close itself is reported by the client, so the warning is only noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in str(record.msg)


logging.getLogger("asyncio").addFilter(_HarmlessTlsEof())


@dataclass(frozen=True)
class NatsAuth:
    tls: TlsSettings | None = None
    creds_file: str = ""
    nkey_seed_file: str = ""
    user: str = ""
    password: SecretStr | None = None

    def options(self) -> dict[str, Any]:
        """nats-py ``connect`` keyword arguments."""
        options: dict[str, Any] = {}
        if self.tls is not None:
            options["tls"] = self.tls.context()
        if self.creds_file:
            options["user_credentials"] = self.creds_file
        if self.nkey_seed_file:
            options["nkeys_seed"] = self.nkey_seed_file
        if self.user:
            options["user"] = self.user
            options["password"] = self.password.get_secret_value() if self.password else ""
        return options

    def identity(self) -> str:
        """How the client authenticates, for messages (file names, never contents)."""
        if self.creds_file:
            return f"creds file {self.creds_file}"
        if self.nkey_seed_file:
            return f"nkey seed file {self.nkey_seed_file}"
        if self.user:
            return f"user {self.user!r}"
        return "no credentials"


class NatsRefused(BridgeError):
    """The server refused this client for a reason retrying cannot fix."""


def refusal(exc: BaseException, auth: NatsAuth) -> str | None:
    """Why the server refused the client, in words, or None for a transient failure."""
    text = str(exc).lower()
    if "authorization violation" in text or "authentication" in text:
        return (f"authentication failed ({auth.identity()}): the server does not accept "
                "these credentials")
    if "user authentication revoked" in text or "account authentication expired" in text:
        return f"credentials refused ({auth.identity()}): {exc}"
    tls = tls_problem(exc)
    if tls is not None:
        return tls
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError):
        return f"cannot read {exc.filename}: {exc.strerror}"
    name = type(exc).__name__
    if name.startswith("Err") and type(exc).__module__.startswith("nkeys"):
        return f"the nkey in the {auth.identity()} is not a valid seed ({name})"
    if "credentials" in text and name.endswith("Error"):
        return f"the {auth.identity()} is not a valid creds file ({name})"
    return None


def permission_denied(exc: BaseException) -> str | None:
    """A publish or subscribe the user's permissions deny (the server then drops the
    message and answers ``-ERR``), in words, else None."""
    text = str(exc)
    if "permissions violation" not in text.lower():
        return None
    return text.removeprefix("nats: ").strip()


async def connect(options: dict[str, Any], auth: NatsAuth,
                  on_error: ErrorCallback | None = None) -> Client:
    """``nats.connect(**options, **auth.options())``, but raise ``NatsRefused`` at the first
    refusal (credentials, TLS) instead of letting nats-py retry it for ever; ``on_error``
    sees every other error, as nats-py's ``error_cb`` would."""
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    connected = False

    async def error_cb(exc: Exception) -> None:
        if refused.done():  # the connection is being abandoned: the rest is its echo
            return
        reason = None if connected else refusal(exc, auth)
        if reason is not None:
            refused.set_result(reason)
            return
        if on_error is not None:
            await on_error(exc)

    try:
        connecting = asyncio.ensure_future(
            nats.connect(**options, **auth.options(), error_cb=error_cb))
    except (OSError, ValueError) as exc:  # an unreadable CA or client certificate
        raise NatsRefused(refusal(exc, auth) or f"TLS settings: {exc}") from exc
    try:
        await asyncio.wait((connecting, refused), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
    if refused.done():
        raise NatsRefused(refused.result())
    try:
        client = connecting.result()
    except Exception as exc:
        reason = refusal(exc, auth)
        if reason is not None:
            raise NatsRefused(reason) from exc
        raise
    connected = True  # from now on every error goes to on_error (reconnects are retried)
    return client
