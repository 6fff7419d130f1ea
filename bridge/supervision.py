"""Who owns a long-lived task: the supervision design of the daemon.

Every long-lived task has an owner, and a task never ends in silence:

- **Streams** (one reflector per watched kind, and CRD discovery) are owned by the watch
  layer's stream supervisor (``bridge.watch.supervisor``): whatever a stream raises, it is
  restarted with backoff (re-list and diff, or resume), counted in
  ``kube_event_bridge_stream_restarts_total{group,kind,reason}``, and shown as not flowing
  in readiness and ``kube_event_bridge_stream_up`` until it flows again.
- **Daemon-level tasks** (delivery workers and dispatch, the checkpoint writer, the lease
  keeper, progress) are owned by a ``Supervisor``: any of them ending for an unexpected
  reason (an exception, or returning while it should run forever) is fatal. The supervisor
  records the first cause, the daemon stops sending and writing, logs it and exits 1, and
  the orchestrator restarts the process, which resumes from the checkpoint. A lost Lease and
  a fenced checkpoint end the same way. Nothing is acknowledged on the way out.
- Cancellation by the supervisor's own ``stop()`` is the only normal end; a task that ends
  cancelled otherwise (a ``CancelledError`` escaping a library) is a failure like any other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    """Owns daemon-level tasks; the first one to end unexpectedly makes ``failed`` set."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self.failed = asyncio.Event()
        self.cause: str | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def fail(self, cause: str) -> None:
        """Report a fatal condition found outside a task (first cause wins)."""
        if self.cause is None:
            self.cause = cause
            log.error("fatal: %s; stopping (exit 1) so that the process restarts from the "
                      "checkpoint", cause)
        self.failed.set()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._stopping:
            return
        if task.cancelled():  # e.g. a library's CancelledError escaping a sink: not normal
            self.fail(f"task {task.get_name()!r} was cancelled unexpectedly")
            return
        exc = task.exception()
        if exc is not None:
            log.error("task %r failed", task.get_name(), exc_info=exc)
            self.fail(f"task {task.get_name()!r} failed: {exc!r}")
        else:
            self.fail(f"task {task.get_name()!r} ended unexpectedly")

    async def stop(self) -> None:
        """Cancel every task still running and wait for them (a normal end)."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
