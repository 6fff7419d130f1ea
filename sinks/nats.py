"""``nats``: JetStream publish with server-side de-duplication and awaited acks.

``Nats-Msg-Id`` = the event id (JetStream drops a re-sent duplicate within the stream's
duplicate window), CloudEvents attributes as ``ce-*`` headers percent-encoded per the NATS
protocol binding draft (or the structured JSON format), subject from a template whose values
are sanitised to single tokens. Every publish is awaited with a time-out: nats-py's
``publish_async`` futures can otherwise wait forever when an error ack is lost.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import nats
import orjson
from nats.errors import Error as NatsError
from nats.js.api import StreamConfig
from nats.js.errors import APIError, BadRequestError
from pydantic import Field, SecretStr, field_validator

from bridge.events.event import Event
from sinks.acks import settle
from sinks.base import SinkError, SinkSettings
from sinks.template import Template
from sinks.template import check as check_template
from sinks.tls import TlsSettings

log = logging.getLogger(__name__)


class NatsSettings(SinkSettings):
    """NATS JetStream; every publish acknowledged; Nats-Msg-Id = event id for server-side de-
    duplication."""

    type: Literal["nats"] = "nats"
    url: str = Field(description="nats://host:port (comma-separate several)")
    stream: str = Field("K8S", description="JetStream stream the subjects belong to")
    subject: str = Field("k8s.{group}.{plural}.{namespace}.{name}",
                         description="subject template; each placeholder is one token")
    content_mode: Literal["binary", "structured"] = "binary"
    create_stream: bool = Field(False, description="create the stream (subjects `<first "
                                "token of the template>.>`) when it does not exist")
    duplicate_window: float = Field(120.0, gt=0, description="seconds JetStream remembers "
                                    "message ids (only used when creating the stream)")
    ack_timeout: float = Field(10.0, gt=0, description="seconds to wait for each PubAck")
    max_pending: int = Field(4000, ge=1, description="unacknowledged publishes in flight")
    tls: TlsSettings | None = None
    creds_file: str = Field("", description="NATS credentials file (JWT + nkey)")
    nkey_seed_file: str = Field("", description="nkey seed file")
    user: str = ""
    password: SecretStr | None = None
    dead_letter_subject: str = Field("kube-event-bridge.dlq",
                                     description="permanent failures are published here")

    @field_validator("subject")
    @classmethod
    def _template(cls, value: str) -> str:
        check_template(value)
        return value


_SAFE = " !#$&'()*+,/:;=?@[]~"
_PLAIN = re.compile(r"[A-Za-z0-9 !#$&'()*+,/:;=?@\[\]~._-]*")


def binary_headers(event: Event) -> dict[str, str]:
    headers = {"Nats-Msg-Id": event.id,
               "content-type": event.attributes["datacontenttype"]}
    for key, value in event.attributes.items():
        if key != "datacontenttype":
            # percent-encode only what needs it (most values are plain ASCII)
            headers[f"ce-{key}"] = value if _PLAIN.fullmatch(value) else quote(value, _SAFE)
    return headers


class NatsSink:
    def __init__(self, settings: NatsSettings, cluster: str = "local") -> None:
        self.settings = settings
        self.subject = Template(settings.subject, cluster, sanitize=True)
        self._nc: Any = None
        self._js: Any = None
        self._ok = False

    async def connect(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [u.strip() for u in s.url.split(",")],
            "name": f"kube-event-bridge/{s.name}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "allow_reconnect": True,
            "connect_timeout": 5,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }
        if s.tls is not None:
            options["tls"] = s.tls.context()
        if s.creds_file:
            options["user_credentials"] = s.creds_file
        if s.nkey_seed_file:
            options["nkeys_seed"] = s.nkey_seed_file
        if s.user:
            options["user"] = s.user
            options["password"] = s.password.get_secret_value() if s.password else ""
        try:
            self._nc = await nats.connect(**options)
        except (TimeoutError, NatsError, OSError) as exc:
            raise SinkError(f"nats sink {s.name}: cannot reach {s.url}: {exc!r}") from exc
        self._js = self._nc.jetstream(publish_async_max_pending=s.max_pending)
        if s.create_stream:
            await self._ensure_stream()
        self._ok = True

    async def _ensure_stream(self) -> None:
        s = self.settings
        first = s.subject.split(".", 1)[0]
        try:
            await self._js.stream_info(s.stream)
        except APIError:
            await self._js.add_stream(StreamConfig(
                name=s.stream, subjects=[f"{first}.>"], duplicate_window=s.duplicate_window))
            log.info("nats sink %s: created stream %s for %s.>", s.name, s.stream, first)

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats sink %s: %r", self.settings.name, exc)

    async def _on_disconnect(self) -> None:
        self._ok = False

    async def _on_reconnect(self) -> None:
        log.info("nats sink %s: reconnected", self.settings.name)

    def _message(self, event: Event) -> tuple[bytes, dict[str, str]]:
        if self.settings.content_mode == "structured":
            return event.structured(), {"Nats-Msg-Id": event.id,
                                        "content-type": "application/cloudevents+json"}
        return event.data or b"", binary_headers(event)

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        if self._js is None:
            await self.connect()
        timeout = self.settings.ack_timeout
        futures: list[Any] = []
        for event in events:
            payload, headers = self._message(event)
            try:
                # no wait_stall: it wraps every publish in a task; max_pending bounds the
                # outstanding acks and settle() time-boxes them all at once
                futures.append(await self._js.publish_async(
                    self.subject.render(event), payload, headers=headers))
            except (NatsError, OSError) as exc:
                futures.append(exc)
        results: list[SinkError | None] = []
        for outcome in await settle(futures, timeout):
            if outcome is None:
                results.append(None)
            else:
                permanent = isinstance(outcome, BadRequestError)
                results.append(SinkError(f"nats: {outcome!r}", transient=not permanent))
        self._ok = all(r is None or not r.transient for r in results)
        return results

    async def dead_letter(self, event: Event, reason: str) -> None:
        if self._nc is None:
            raise SinkError(f"nats sink {self.settings.name} is not connected")
        doc = {"reason": reason, "attributes": event.attributes, "data_bytes": event.size()}
        await self._nc.publish(self.settings.dead_letter_subject, orjson.dumps(doc),
                               headers={"Nats-Msg-Id": f"dlq/{event.id}"})
        await self._nc.flush(timeout=self.settings.ack_timeout)

    async def close(self) -> None:
        if self._nc is not None:
            try:
                await self._nc.drain()
            except (NatsError, OSError):
                await self._nc.close()
        self._nc = self._js = None
        self._ok = False

    @property
    def healthy(self) -> bool:
        return self._ok and self._nc is not None and self._nc.is_connected
