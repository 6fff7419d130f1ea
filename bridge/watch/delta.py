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
    type: DeltaType
    resource: Resource
    obj: dict[str, Any]
    uid: str
    resource_version: str
    synthetic: bool
    stream: str
    sequence: int
    observed_at: float = field(default=0.0)

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name") or "")
