"""Reading the bridge's NATS JetStream stream (nats-py).

With a ``durable`` consumer, its ack floor is the committed position: at start the view is
rebuilt from the last message per subject up to that floor (``bootstrap``
``last-per-subject``: right when the subject names one object, as the bridge's default
``...{namespace}.{name}`` template does; ``all`` reads every message instead), handed to the
handlers as ``replayed``; then the durable is re-created to deliver every message after the
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
from kube_event_consumer.source import Batch, Message


@dataclass
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
                self._restore = await js.pull_subscribe(
                    self.subjects, stream=self.stream, config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                        ack_policy=AckPolicy.NONE, inactive_threshold=30.0))
                start = self._floor + 1
            else:
                start = 1
            self._live = await js.pull_subscribe(
                self.subjects, durable=self.durable, stream=self.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start,
                    ack_policy=AckPolicy.EXPLICIT if self.durable else AckPolicy.NONE,
                    max_ack_pending=-1, inactive_threshold=None if self.durable else 30.0))
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
        caught_up = not msgs or msgs[-1].metadata.num_pending == 0
        return Batch(messages, caught_up, self._acker(msgs))

    async def _restoring(self, sub: JetStreamContext.PullSubscription) -> Batch:
        """The last message per subject, those up to the ack floor (the later ones come
        from the durable, every one of them)."""
        msgs = await self._fetch(sub)
        floor = self._floor
        messages = [Message(_decode(msg), True) for msg in msgs
                    if msg.metadata.sequence.stream <= floor]
        if not msgs or msgs[-1].metadata.num_pending == 0:
            await sub.unsubscribe()
            self._restore = None
        return Batch(messages)

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        try:
            return await sub.fetch(self.batch_size, timeout=0.5)
        except nats.errors.TimeoutError:
            return []

    def _acker(self, msgs: list[Msg]) -> Any:
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


def _decode(msg: Msg) -> Any:
    try:
        return decode_nats(msg.headers, msg.data)
    except DecodeError as exc:
        return exc
