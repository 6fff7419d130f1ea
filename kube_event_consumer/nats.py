"""Reading the bridge's NATS JetStream stream (nats-py).

With a ``durable`` consumer, its ack floor is the committed position: at start the view is
rebuilt from the messages up to that floor, handed to the handlers as ``replayed``
(``bootstrap`` ``last-per-subject``: the last message per subject, and the whole history of
the few subjects where that is not enough, see ``_restoring``; right when a subject names
one object by its name, as the bridge's ``...{namespace}.{name}`` template does; ``all``
reads every message instead); then the durable is re-created to deliver every message after the
floor at once (rather than after its ack wait), and each batch is acknowledged after its
handlers returned. One durable per informer. Without a durable, the whole stream is read
and nothing is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from kube_event_consumer.decode import decode_nats
from kube_event_consumer.errors import DecodeError, SourceError
from kube_event_consumer.event import ChangeType, Event
from kube_event_consumer.source import Batch, Commit, Message

_HISTORY_SUBJECTS = 200  # filter subjects per history reader

@dataclass(kw_only=True)
class NatsSource:
    """``subjects``: the filter subject (``>``: the whole stream). ``options``: more
    ``nats.connect`` arguments (credentials, TLS, ...)."""

    url: str
    stream: str
    subjects: str = ">"
    durable: str | None = None
    bootstrap: Literal["last-per-subject", "all"] = "last-per-subject"
    batch_size: int = 500
    options: dict[str, Any] = field(default_factory=dict)
    _nc: Client | None = field(default=None, init=False, repr=False)
    _js: JetStreamContext | None = field(default=None, init=False, repr=False)
    _restore: JetStreamContext.PullSubscription | None = field(default=None, init=False,
                                                              repr=False)
    _live: JetStreamContext.PullSubscription | None = field(default=None, init=False,
                                                           repr=False)
    _floor: int = field(default=0, init=False, repr=False)
    _empty: bool = field(default=False, init=False, repr=False)  # nothing pending at start
    # subjects whose history must be read (None once the last-per-subject pass is over)
    _ambiguous: list[str] | None = field(default_factory=list, init=False, repr=False)
    _histories: list[list[str]] = field(default_factory=list, init=False, repr=False)

    async def start(self) -> None:
        try:
            nc = self._nc = await nats.connect(self.url, **self.options)
            js = self._js = nc.jetstream()
            await js.stream_info(self.stream)
            if self.durable:
                try:
                    info = await js.consumer_info(self.stream, self.durable)
                    self._floor = info.ack_floor.stream_seq if info.ack_floor else 0
                    await js.delete_consumer(self.stream, self.durable)
                except nats.js.errors.NotFoundError:
                    self._floor = 0
            if self._floor and self.bootstrap == "last-per-subject":
                self._restore = await self._reader(DeliverPolicy.LAST_PER_SUBJECT,
                                                   [self.subjects])
                start = self._floor + 1
            else:
                start = 1
            self._live = await js.pull_subscribe(
                self.subjects, durable=self.durable, stream=self.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                    ack_policy=AckPolicy.EXPLICIT if self.durable else AckPolicy.NONE,
                    max_ack_pending=-1, inactive_threshold=None if self.durable else 30.0))
            self._empty = not (await self._live.consumer_info()).num_pending
        except (nats.errors.Error, OSError) as exc:
            raise SourceError(f"nats {self.url} stream {self.stream}: {exc!r}") from exc

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()
            self._nc = None

    async def next_batch(self) -> Batch:
        try:
            if self._restore is not None:
                return await self._restoring(self._restore)
            if self._live is None:
                raise SourceError("NatsSource.next_batch before start")
            msgs = await self._fetch(self._live)
        except (nats.errors.Error, OSError) as exc:
            raise SourceError(f"nats {self.url} stream {self.stream}: {exc!r}") from exc
        floor = self._floor
        messages = [Message(_decode(msg), msg.metadata.sequence.stream <= floor)
                    for msg in msgs]
        # an empty fetch may only mean a slow server: it counts only if nothing was pending
        caught_up = msgs[-1].metadata.num_pending == 0 if msgs else self._empty
        return Batch(messages, caught_up, self._acker(msgs))

    async def _reader(self, policy: DeliverPolicy,
                      subjects: list[str]) -> JetStreamContext.PullSubscription | None:
        """An ephemeral, unacknowledged consumer of ``subjects`` (None: nothing to read)."""
        assert self._js is not None
        sub = await self._js.pull_subscribe(
            subjects[0], stream=self.stream, config=ConsumerConfig(
                deliver_policy=policy, ack_policy=AckPolicy.NONE, inactive_threshold=30.0,
                filter_subjects=subjects if len(subjects) > 1 else None))
        if (await sub.consumer_info()).num_pending:
            return sub
        await sub.unsubscribe()
        return None

    async def _restoring(self, sub: JetStreamContext.PullSubscription) -> Batch:
        """Rebuilding the view up to the ack floor (everything after it comes from the
        durable). First the last message per subject: enough for a subject whose last
        message is an add or update up to the floor. A subject can hold two objects, though
        (a name deleted and re-created: a re-list diff may send the new uid's add before the
        old uid's deletion), so for a subject whose last message is a deletion or comes
        after the floor, its whole history up to the floor is read next."""
        msgs = await self._fetch(sub)
        floor = self._floor
        kept: list[Message] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            payload = _decode(msg)
            if self._ambiguous is None:  # history: what lies up to the floor
                if seq <= floor:
                    kept.append(Message(payload, True))
            elif seq > floor or (isinstance(payload, Event)
                                 and payload.type is ChangeType.DELETED):
                self._ambiguous.append(msg.subject)
            else:
                kept.append(Message(payload, True))
        if msgs and msgs[-1].metadata.num_pending == 0:  # (nothing pending: see _reader)
            await sub.unsubscribe()
            self._restore = await self._next_history()
        return Batch(kept)

    async def _next_history(self) -> JetStreamContext.PullSubscription | None:
        """A reader of the next ambiguous subjects' whole history (``_HISTORY_SUBJECTS``
        subjects at a time), or None when none is left."""
        ambiguous, self._ambiguous = self._ambiguous or [], None
        self._histories.extend(ambiguous[n:n + _HISTORY_SUBJECTS]
                               for n in range(0, len(ambiguous), _HISTORY_SUBJECTS))
        while self._histories:
            sub = await self._reader(DeliverPolicy.ALL, self._histories.pop(0))
            if sub is not None:
                return sub
        return None

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await sub.fetch(self.batch_size, timeout=0.5)
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from inside fetch
            return []

    def _acker(self, msgs: list[Msg]) -> Commit | None:
        nc = self._nc
        if not self.durable or not msgs or nc is None:
            return None

        async def ack() -> None:
            try:
                for msg in msgs:
                    await msg.ack()
                await nc.flush()
            except (nats.errors.Error, OSError) as exc:
                raise SourceError(f"nats ack: {exc!r}") from exc
        return ack


def _decode(msg: Msg) -> Event | DecodeError:
    try:
        return decode_nats(msg.headers, msg.data)
    except DecodeError as exc:
        return exc
