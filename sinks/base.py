"""The sink protocol every destination implements, the settings every sink shares, and the
header names of the CloudEvents binary-mode bindings.

A sink receives events in batches and reports, per event and in order, whether it was
durably accepted (``None``) or failed (a ``SinkError``; ``transient`` ones are retried by
delivery, permanent ones go to the dead-letter destination). ``send`` must not return
before the acknowledgements it reports are durable on the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import BridgeError
from bridge.events.event import Event


class SinkError(BridgeError):
    def __init__(self, message: str, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class RouteFilter(BaseModel):
    """Which events a sink receives (empty list = all)."""

    model_config = ConfigDict(extra="forbid")
    kinds: list[str] = Field(default_factory=list, description="globs over `group/Kind`")
    namespaces: list[str] = Field(default_factory=list, description="globs; `_cluster` "
                                  "matches cluster-scoped objects")
    types: list[Literal["added", "updated", "deleted"]] = Field(
        default_factory=list, description="event types (empty = all)")


class SinkSettings(BaseModel):
    """Fields every sink accepts."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="unique name, used in metrics and logs")
    type: str = Field(description="the sink type: jsonl, kafka, nats, null, or a plugin's "
                      "name")
    filter: RouteFilter = Field(default_factory=RouteFilter)
    batch_size: int = Field(1000, ge=1, le=100_000,
                            description="most events handed to the sink per send")


class Sink(Protocol):
    @property
    def settings(self) -> SinkSettings: ...
    async def connect(self) -> None: ...

    async def send(self, events: Sequence[Event]) -> list[SinkError | None]: ...

    async def dead_letter(self, event: Event, reason: str) -> None: ...

    async def close(self) -> None: ...

    @property
    def healthy(self) -> bool: ...


class HeaderNames(dict[str, str]):
    """CloudEvents attribute -> its header name in a binary-mode binding: ``datacontenttype``
    is ``content-type``, every other attribute ``<prefix><name>`` (``ce_`` for Kafka, ``ce-``
    for NATS); each name is made once."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def __missing__(self, attribute: str) -> str:
        name = self[attribute] = ("content-type" if attribute == "datacontenttype"
                                  else f"{self.prefix}{attribute}")
        return name
