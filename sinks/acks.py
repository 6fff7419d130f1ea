"""Waiting for a batch's broker acknowledgements under one time-out (shared by the sinks)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def settle(pending: list[Awaitable[Any] | BaseException],
                 timeout: float) -> list[BaseException | None]:
    """One outcome per entry, in order: None (acknowledged) or the exception. Entries that
    are already exceptions pass through; acknowledgements still missing after ``timeout``
    are cancelled (which also frees the clients' in-flight slots) and count as failed."""
    waiting = {i: asyncio.ensure_future(p) for i, p in enumerate(pending)
               if not isinstance(p, BaseException)}
    if waiting:
        await asyncio.wait(waiting.values(), timeout=timeout)
    outcomes: list[BaseException | None] = []
    for i, entry in enumerate(pending):
        if isinstance(entry, BaseException):
            outcomes.append(entry)
            continue
        future = waiting[i]
        if not future.done():
            future.cancel()
            outcomes.append(TimeoutError(f"no acknowledgement within {timeout}s"))
        elif future.cancelled():
            outcomes.append(asyncio.CancelledError("acknowledgement cancelled"))
        else:
            outcomes.append(future.exception())
    return outcomes
