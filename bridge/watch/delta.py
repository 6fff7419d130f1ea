"""A Delta: one observed change of one object, the engine's unit of output."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.kube.resources import Resource


class DeltaType(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(slots=True, eq=False)
class Delta:
    """One change of one object. ``synthetic``: derived from a re-list diff or a snapshot,
    not seen on the watch; ``stream`` and ``sequence``: which tracker acknowledges it, and
    where. Outside the reflector's hot path, name the arguments after ``resource_version``
    (``synthetic=..., stream=..., sequence=...``)."""

    type: DeltaType
    resource: Resource
    obj: dict[str, Any]
    uid: str
    resource_version: str
    synthetic: bool
    stream: str
    sequence: int
    observed_at: float = field(default=0.0)
    namespace: str = ""
    name: str = ""

    def release(self) -> None:
        """Drop the object once its event is built: an in-flight delta then holds no parsed
        JSON, which keeps memory and the garbage collector's work small."""
        self.obj = _RELEASED


_RELEASED: dict[str, Any] = {}
