"""Retry pacing: exponential backoff with jitter, and the pacing rules of a watch stream.

``Backoff`` is the bare sequence (delivery and the checkpoint writer use it too). ``Pacing``
holds the rules every stream of the watch engine follows, after client-go's reflector:

- a failed attempt waits ``Backoff.next_delay()``: exponential (``initial`` x ``factor``^n)
  with jitter, capped at ``maximum`` (30 s); a server's ``Retry-After`` (429/503) is honoured:
  the wait is never shorter than what it asked (up to ``max_retry_after``);
- a watch that ends within ``very_short`` seconds without a single event is a failure
  (client-go's ``VeryShortWatchError``), so a server that closes every watch at once sees a
  few requests a minute, not thousands a second;
- the backoff resets only after a healthy period: a connection (list or watch) that flowed
  for ``healthy_after`` seconds; never merely because a connection was accepted, and time
  spent backing off never counts;
- a watch that the server ends normally (its timeout) is re-opened at once only when it was
  healthy that long; otherwise the next attempt waits ``next_delay()`` as well. A 410 Gone
  is paced the same way: its re-list starts at once after a healthy watch, else after the
  backoff (as client-go's).

``clock`` and ``sleep`` are the time source (tests pass a virtual one).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


class Backoff:
    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt


@dataclass(frozen=True)
class Pacing:
    """How the watch engine paces retries (defaults: client-go's reflector)."""

    initial: float = 0.8
    maximum: float = 30.0
    factor: float = 2.0
    healthy_after: float = 10.0  # flowing this long resets the backoff
    very_short: float = 1.0  # a watch ending sooner without events is a failure
    max_retry_after: float = 300.0  # a longer Retry-After is cut to this
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def backoff(self) -> Backoff:
        return Backoff(self.initial, self.maximum, self.factor)

    def delay(self, backoff: Backoff, retry_after: float | None = None) -> float:
        """The wait before the next attempt: the backoff's next delay, or longer when the
        server asked for longer."""
        delay = backoff.next_delay()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay
