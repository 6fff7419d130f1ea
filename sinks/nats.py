"""``nats``: JetStream publish with server-side de-duplication and acknowledgements matched
by the sink itself.

``Nats-Msg-Id`` = the event id (JetStream drops a re-sent duplicate within the stream's
duplicate window), CloudEvents attributes as ``ce-*`` headers percent-encoded per the NATS
protocol binding draft (or the structured JSON format), subject from a template whose values
are sanitised to single tokens.

Publish path: each event is one core ``publish`` with its own reply subject, ``<inbox>.<n>``
under one wildcard subscription per connection. JetStream answers there with the PubAck, an
error (``{"error": {"code": ...}}``; code 400 is permanent, others transient) or, when no
stream holds the subject, a 503 status; the subscription callback records the outcome in the
event's slot of its batch, and ``send`` waits once per batch. (This replaces nats-py's
``publish_async``, which costs a future, a done-callback and a semaphore round per message;
most of the CPU per event left is nats-py encoding the ~17 headers of binary mode.) At most
``max_pending`` publishes are unacknowledged at a time: publishing waits for room. Acks still
missing ``ack_timeout`` seconds after a batch's last publish, or while it waits for room, are
transient failures; a payload over the server's limit is permanent. A disconnect fails every
unacknowledged publish at once (its ack would have come over the lost connection) and the
rest of the batch is not published. Re-sends carry the same ids, so JetStream drops those
that were in fact stored.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, ConnectionDrainingError, MaxPayloadError
from nats.errors import Error as NatsError
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError
from pydantic import Field, SecretStr, field_validator, model_validator

from bridge.events.event import Event
from sinks import nats_security
from sinks.base import HeaderNames, SinkError, SinkSettings
from sinks.nats_security import NatsAuth, NatsRefused, permission_denied
from sinks.nats_streams import StreamGuard, default_subjects
from sinks.nats_streams import provision as provision_streams
from sinks.provisioning import DestinationError, Outcome, Scope
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
    content_mode: Literal["binary", "structured"] = Field(
        "binary", description="binary: `ce-*` headers and the object as the payload; "
        "structured: one CloudEvents JSON document per message")
    create_stream: bool = Field(False, description="at connect, create the stream when it "
                                "does not exist (with the settings below), and "
                                "`dead_letter_stream` when no stream holds the dead-letter "
                                "subject. Otherwise a missing stream stops delivery, with an "
                                "error naming it, until `kube-event-bridge provision` creates "
                                "it")
    duplicate_window: float = Field(120.0, gt=0, description="seconds JetStream remembers "
                                    "message ids, of a stream the bridge creates; an existing "
                                    "stream with a shorter window stops delivery (re-sent "
                                    "events could be stored twice)")
    stream_subjects: list[str] = Field(default_factory=list, description="subjects of a "
                                       "stream the bridge creates; empty: the template's "
                                       "leading literal tokens and `>` (`k8s.>`). An existing "
                                       "stream must cover the template")
    max_age: float = Field(0.0, ge=0, description="seconds a stream the bridge creates keeps "
                           "a message (0: no limit)")
    storage: Literal["file", "memory"] = Field("file", description="storage of a stream the "
                                               "bridge creates")
    replicas: int = Field(1, ge=1, le=5, description="replicas of a stream the bridge "
                          "creates; 1 suits a single server, use 3 in a cluster")
    ack_timeout: float = Field(10.0, gt=0, description="seconds to wait for a batch's PubAcks "
                               "after its last publish")
    max_pending: int = Field(4000, ge=1, description="unacknowledged publishes in flight")
    tls: TlsSettings | None = Field(None, description="TLS to the server (use a `tls://` "
                                    "URL or a server that requires TLS)")
    creds_file: str = Field("", description="NATS credentials file (user JWT + nkey seed, as "
                            "`nsc` writes it) for servers in operator (JWT) mode")
    nkey_seed_file: str = Field("", description="file holding the user's nkey seed "
                                "(`SU...`) for servers that list nkey users")
    user: str = Field("", description="user name for user/password authentication")
    password: SecretStr | None = Field(None, description="password of `user`; never logged")
    dead_letter_subject: str = Field("kube-event-bridge.dlq",
                                     description="permanent failures are published here; a "
                                     "stream must hold it")
    dead_letter_stream: str = Field("KUBE_EVENT_BRIDGE_DLQ", description="the stream created "
                                    "for the dead-letter subject when no stream holds it")

    @field_validator("subject")
    @classmethod
    def _template(cls, value: str) -> str:
        check_template(value)
        return value

    @model_validator(mode="after")
    def _subjects(self) -> NatsSettings:
        if not self.stream_subjects:
            default_subjects(Template(self.subject, "cluster", sanitize=True))
        return self


_SAFE = " !#$&'()*+,/:;=?@[]~"
_PLAIN = re.compile(r"[A-Za-z0-9 !#$&'()*+,/:;=?@\[\]~._-]*")


_HEADER_NAMES = HeaderNames("ce-")


def binary_headers(event: Event) -> dict[str, str]:
    attributes = event.attributes
    names = _HEADER_NAMES
    # percent-encode only what needs it: one match over all values settles the usual case
    if _PLAIN.fullmatch("".join(attributes.values())):
        headers = {names[key]: value for key, value in attributes.items()}
    else:
        headers = {names[key]: value if key == "datacontenttype" or _PLAIN.fullmatch(value)
                   else quote(value, _SAFE) for key, value in attributes.items()}
    headers["Nats-Msg-Id"] = attributes["id"]
    return headers


class _Batch:
    """One ``send``'s outcomes in event order (None = PubAck received) and how many of its
    publishes still await their acknowledgement."""

    __slots__ = ("_done", "missing", "outcomes")

    def __init__(self, size: int, unacked: SinkError) -> None:
        self.outcomes: list[SinkError | None] = [unacked] * size
        self.missing = 0
        self._done: asyncio.Future[None] | None = None

    def settle(self, index: int, outcome: SinkError | None) -> None:
        self.outcomes[index] = outcome
        self.missing -= 1
        if not self.missing and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def fail_from(self, index: int, error: SinkError) -> None:
        """Events from ``index`` on were not published."""
        self.outcomes[index:] = [error] * (len(self.outcomes) - index)

    async def acked(self, timeout: float) -> None:
        """Wait until no acknowledgement is missing, at most ``timeout`` seconds."""
        if self.missing:
            self._done = asyncio.get_running_loop().create_future()
            await asyncio.wait((self._done,), timeout=timeout)


class NoStream(SinkError):
    """JetStream answered status 503: no stream holds the subject."""


def _ack_outcome(msg: Msg) -> SinkError | None:
    """None for a PubAck (a duplicate's too), else the failure the reply reports: an API
    error (code 400 is permanent) or a status such as 503 (no stream holds the subject)."""
    if msg.headers and Header.STATUS in msg.headers:
        status = msg.headers[Header.STATUS]
        detail = msg.headers.get(Header.DESCRIPTION) or (
            "no responders: no stream holds the subject" if status == "503" else "")
        if status == "503":
            return NoStream(f"nats: status {status} {detail}")
        return SinkError(f"nats: status {status} {detail}")
    try:
        reply = orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        reply = None
    if not isinstance(reply, dict):
        return SinkError(f"nats: not a PubAck: {msg.data[:200]!r}")
    error = reply.get("error")
    if error is None and "seq" in reply:
        return None
    if not isinstance(error, dict):
        return SinkError(f"nats: not a PubAck: {msg.data[:200]!r}")
    return SinkError(f"nats: PubAck error code={error.get('code')} err_code="
                     f"{error.get('err_code')} description={error.get('description')!r}",
                     transient=error.get("code") != 400)


class NatsSink:
    def __init__(self, settings: NatsSettings, cluster: str = "local") -> None:
        self.settings = settings
        self.subject = Template(settings.subject, cluster, sanitize=True)
        self.streams = StreamGuard(settings, self.subject)
        self._nc: Client | None = None
        self._ok = False
        self._inbox = ""  # "<connection's reply inbox>.": a publish's reply subject adds a token
        self._sequence = 0  # the last token handed out
        self._pending: dict[str, tuple[_Batch, int]] = {}  # token -> its batch and event index
        self._has_room = asyncio.Event()  # set when fewer than max_pending are unacknowledged
        self._denied: str | None = None  # the last permissions violation the server reported

    def _options(self) -> dict[str, Any]:
        s = self.settings
        options: dict[str, Any] = {
            "servers": [u.strip() for u in s.url.split(",")],
            "name": f"kube-event-bridge/{s.name}",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 1,
            "allow_reconnect": True,
            "connect_timeout": 5,
            "disconnected_cb": self._on_disconnect,
            "reconnected_cb": self._on_reconnect,
        }
        return options

    async def _connect(self, options: dict[str, Any]) -> Client:
        s = self.settings
        auth = NatsAuth(tls=s.tls, creds_file=s.creds_file, nkey_seed_file=s.nkey_seed_file,
                        user=s.user, password=s.password)
        try:
            return await nats_security.connect(options, auth, self._on_error)
        except NatsRefused as exc:
            raise SinkError(f"nats sink {s.name}: {s.url}: {exc}", transient=False) from exc
        except (TimeoutError, NatsError, OSError) as exc:
            raise SinkError(f"nats sink {s.name}: cannot reach {s.url}: {exc!r}") from exc

    async def connect(self) -> None:
        s = self.settings
        nc = await self._connect(self._options())
        self._inbox = f"{nc.new_inbox()}."
        await nc.subscribe(f"{self._inbox}*", cb=self._on_ack)
        self._nc = nc
        await self._streams(nc, create=s.create_stream)
        self._ok = True

    async def _streams(self, nc: Client, *, create: bool) -> DestinationError | None:
        """Create the streams (``create_stream``) and check the events stream
        (``sinks.nats_streams``); a failure to tell is logged, and publishes tell later."""
        js = nc.jetstream()
        try:
            if create:
                await self.streams.ensure(js)
            return await self.streams.check(js)
        except (APIError, NatsError, TimeoutError) as exc:
            log.warning("nats sink %s: cannot check stream %s: %r", self.settings.name,
                        self.settings.stream, exc)
            return self.streams.problem

    async def provision(self, scope: Scope, *, dry_run: bool) -> list[Outcome]:
        """Check (and unless ``dry_run`` create) the events and dead-letter streams."""
        s = self.settings
        nc = await self._connect({**self._options(), "allow_reconnect": False})
        try:
            return await provision_streams(s, self.subject, nc.jetstream(), dry_run=dry_run)
        except (TimeoutError, NatsError) as exc:
            raise SinkError(f"nats sink {s.name}: JetStream at {s.url}: {exc!r}") from exc
        finally:
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        denied = permission_denied(exc)
        if denied is not None:  # one per publish: the failed events carry it instead
            self._denied = denied
            return
        log.warning("nats sink %s: %r", self.settings.name, exc)

    async def _on_disconnect(self) -> None:
        """Acks of publishes made over the lost connection will not come: fail them now."""
        self._ok = False
        lost = SinkError("nats: disconnected before the PubAck")
        for batch, index in self._pending.values():
            batch.settle(index, lost)
        self._pending.clear()
        self._has_room.set()

    async def _on_reconnect(self) -> None:
        log.info("nats sink %s: reconnected", self.settings.name)

    async def _on_ack(self, msg: Msg) -> None:
        token = msg.subject[len(self._inbox):]
        if token in self._pending:  # else late (its batch gave up) or not ours
            self._settle(token, _ack_outcome(msg))

    def _settle(self, token: str, outcome: SinkError | None) -> None:
        entry = self._pending.pop(token, None)
        if entry is None:  # already failed by a disconnect
            return
        batch, index = entry
        batch.settle(index, outcome)
        if len(self._pending) < self.settings.max_pending:
            self._has_room.set()

    def _track(self, batch: _Batch, index: int) -> str:
        """A new reply token for event ``index`` of ``batch``: its ack settles that slot."""
        self._sequence += 1
        token = str(self._sequence)
        self._pending[token] = (batch, index)
        batch.missing += 1
        return token

    def _forget(self, batch: _Batch) -> None:
        """Stop waiting for ``batch``: acks still missing stay failures; free their slots."""
        if batch.missing:
            for token in [t for t, (b, _) in self._pending.items() if b is batch]:
                del self._pending[token]
            self._has_room.set()

    async def _room(self) -> bool:
        """Wait until fewer than ``max_pending`` publishes are unacknowledged; False when no
        ack made room within ``ack_timeout``."""
        while len(self._pending) >= self.settings.max_pending:
            self._has_room.clear()
            try:
                await asyncio.wait_for(self._has_room.wait(), self.settings.ack_timeout)
            except TimeoutError:
                return False
        return True

    def _message(self, event: Event) -> tuple[bytes, dict[str, str]]:
        if self.settings.content_mode == "structured":
            return event.structured(), {"Nats-Msg-Id": event.id,
                                        "content-type": "application/cloudevents+json"}
        return event.data or b"", binary_headers(event)

    async def _publish(self, nc: Client, events: Sequence[Event], batch: _Batch) -> bool:
        """Publish every event (acks settle ``batch``); False when it stopped early, having
        failed the events it did not publish."""
        limit = self.settings.max_pending
        for index, event in enumerate(events):
            if len(self._pending) >= limit and not await self._room():
                batch.fail_from(index, SinkError(f"nats: {limit} publishes (max_pending) "
                                                 "unacknowledged for "
                                                 f"{self.settings.ack_timeout}s"))
                return False
            if not nc.is_connected:  # publishing on would let later events overtake
                batch.fail_from(index, SinkError("nats: not connected"))
                return False
            payload, headers = self._message(event)
            token = self._track(batch, index)
            try:
                await _publish(nc, self.subject.render(event), self._inbox + token, payload,
                               headers)
            except MaxPayloadError as exc:
                self._settle(token, SinkError(f"nats: {exc!r}", transient=False))
            except (NatsError, OSError) as exc:
                self._settle(token, SinkError(f"nats: {exc!r}"))
                batch.fail_from(index + 1, SinkError(f"nats: {exc!r}"))
                return False
        return True

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]:
        if self._nc is None:
            await self.connect()
        assert self._nc is not None
        if self.streams.problem is not None:  # unusable at the last look: look again
            problem = await self._streams(self._nc, create=False)
            if problem is not None:
                self._ok = False
                return [problem] * len(events)
        timeout = self.settings.ack_timeout
        unacked = SinkError(f"nats: no PubAck within {timeout}s")
        batch = _Batch(len(events), unacked)
        self._denied = None
        try:
            if await self._publish(self._nc, events, batch):
                await batch.acked(timeout)
        finally:  # also when cancelled: its publishes must not hold max_pending slots
            self._forget(batch)
        results = batch.outcomes
        if self._denied is not None:  # the server dropped publishes: say why acks are missing
            denied = SinkError(f"nats sink {self.settings.name}: {self.settings.url}: "
                               f"{self._denied} (the user's permissions deny it)")
            results = [denied if r is unacked else r for r in results]
        self._ok = all(r is None or not r.transient for r in results)
        if not self._ok:
            return await self._explain(events, results)
        return results

    async def _explain(self, events: Sequence[Event],
                       results: list[SinkError | None]) -> list[SinkError | None]:
        """Publishes no stream held: why (the events stream is missing or contradicts)."""
        first = next((i for i, r in enumerate(results) if isinstance(r, NoStream)), None)
        if first is None or self._nc is None:
            return results
        problem = await self.streams.explain(self._nc.jetstream(),
                                             self.subject.render(events[first]))
        if problem is None:
            return results
        return [problem if isinstance(r, NoStream) else r for r in results]

    async def dead_letter(self, event: Event, reason: str) -> None:
        if self._nc is None:
            raise SinkError(f"nats sink {self.settings.name} is not connected")
        doc = {"reason": reason, "attributes": event.attributes, "data_bytes": event.size()}
        subject = self.settings.dead_letter_subject
        try:  # acknowledged by the stream that holds the subject
            await self._nc.jetstream().publish(subject, orjson.dumps(doc),
                                               timeout=self.settings.ack_timeout,
                                               headers={"Nats-Msg-Id": f"dlq/{event.id}"})
        except NoStreamResponseError as exc:
            raise self.streams.dead_letter_missing(subject) from exc

    async def close(self) -> None:
        if self._nc is not None:
            try:
                await self._nc.drain()
            except (NatsError, OSError):
                await self._nc.close()
        self._nc = None
        self._ok = False

    @property
    def healthy(self) -> bool:
        return self._ok and self._nc is not None and self._nc.is_connected


# nats-py's publish() strips, validates and encodes every header on its own, which is most of
# a binary-mode publish's CPU (17 headers per event). These headers are valid by
# construction: fixed names, and values percent-encoded unless plain (so never CR or LF),
# sent to a sanitised subject. So the HPUB frame is built at once and appended to the client's
# write buffer the way publish() does it, under the same connection checks. Where a nats-py
# release lacks those internals, publish() serves.
_FRAMES = all(hasattr(Client, name) for name in ("_send_command", "_flush_pending"))


async def _publish(nc: Client, subject: str, reply: str, payload: bytes,
                   headers: dict[str, str]) -> None:
    if not _FRAMES:
        await nc.publish(subject, payload, reply=reply, headers=headers)
        return
    if nc.is_closed:
        raise ConnectionClosedError
    if nc.is_draining_pubs:
        raise ConnectionDrainingError
    head = ("NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + "\r\n").encode()
    size = len(head) + len(payload)
    if size > nc.max_payload:
        raise MaxPayloadError
    await nc._send_command(b"".join((f"HPUB {subject} {reply} {len(head)} {size}\r\n".encode(),
                                     head, payload, b"\r\n")))
    if nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()
