"""What a watchable resource is, and how Kubernetes orders API versions."""

from __future__ import annotations

import re
from dataclasses import dataclass

_VERSION = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, int, tuple[int, ...]]:
    """Sort key, higher is preferred: Kubernetes-style versions GA > beta > alpha, higher
    numbers first; any other version after them, alphabetically."""
    m = _VERSION.match(version)
    if m is None:
        return (0, 0, 0, 0, tuple(-ord(c) for c in version))
    stage = {"alpha": 1, "beta": 2, None: 3}[m.group(2)]
    return (1, stage, int(m.group(1)), int(m.group(3) or 0), ())


def preferred_version(versions: list[str]) -> str:
    """The version discovery would prefer among ``versions``."""
    return max(versions, key=version_priority)


@dataclass(frozen=True, slots=True)
class Resource:
    """A listable/watchable collection: group/version/plural plus what events need."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """Version-independent identity: ``plural.group`` (``plural`` for core)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def collection_path(self, namespace: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.version}/{self.plural}"
