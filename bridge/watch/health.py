"""Whether a stream flows: the pulse its reflector reports and its supervisor reads.

A stream is *up* once data flows (a watch read, a list page, or a watch that stayed open for
a second) and until an attempt fails; it is *failing* from the first failure until data flows
again, and ``failing_since`` says since when. A stream that has not flowed yet and has not
failed either (starting, listing) is neither. It is *healthy* when it is up and its last
connection (list or watch) lasted ``period`` seconds: time spent backing off between
connections never counts.
"""

from __future__ import annotations

from collections.abc import Callable


class StreamHealth:
    __slots__ = ("_clock", "connected_at", "disconnected_at", "error", "failing_since",
                 "on_change", "reason", "up", "up_since")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.up = False
        self.up_since: float | None = None
        self.failing_since: float | None = None
        self.reason = ""  # why the last attempt failed (a restart reason), "" while flowing
        self.error = ""  # what it failed with
        self.on_change: Callable[[], None] | None = None  # called when ``up`` changes
        self.connected_at: float | None = None
        self.disconnected_at: float | None = None

    def connected(self) -> None:
        """A connection (list or watch) opened (called by the reflector)."""
        self.connected_at, self.disconnected_at = self._clock(), None

    def disconnected(self) -> None:
        """The attempt's connection ended (called by the reflector)."""
        if self.connected_at is not None and self.disconnected_at is None:
            self.disconnected_at = self._clock()

    def flowing(self) -> None:
        """Data flows (called by the reflector, cheap when already up)."""
        if self.up:
            return
        self.up, self.up_since = True, self._clock()
        self.failing_since, self.reason, self.error = None, "", ""
        if self.on_change is not None:
            self.on_change()

    def failed(self, reason: str, error: str) -> None:
        """An attempt failed (called by the supervisor)."""
        self.reason, self.error = reason, error
        if self.failing_since is None:
            self.failing_since = self._clock()
        if self.up:
            self.up, self.up_since = False, None
            if self.on_change is not None:
                self.on_change()

    def healthy(self, period: float) -> bool:
        """Up, over a last connection that lasted (so far) at least ``period`` seconds."""
        if not self.up or self.connected_at is None:
            return False
        end = self.disconnected_at if self.disconnected_at is not None else self._clock()
        return end - self.connected_at >= period

    def failing_for(self) -> float | None:
        """Seconds since the stream started failing, None while it is not failing."""
        if self.failing_since is None:
            return None
        return self._clock() - self.failing_since
