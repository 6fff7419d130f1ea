"""Remove fields from event payloads: per-kind JSON pointers, and Secret data always
(unless explicitly allowed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any


@dataclass(frozen=True)
class RedactionRule:
    kind: str  # glob over "group/Kind" ("core/Secret", "*.example.com/*", "*")
    paths: tuple[str, ...]  # RFC 6901 JSON pointers, e.g. "/spec/password"


@dataclass(frozen=True)
class Redactor:
    rules: tuple[RedactionRule, ...] = ()
    allow_secret_data: bool = False
    _cache: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = field(
        default_factory=dict, compare=False, hash=False)

    def _paths(self, group: str, kind: str) -> tuple[tuple[str, ...], ...]:
        key = (group, kind)
        found = self._cache.get(key)
        if found is None:
            name = f"{group or 'core'}/{kind}"
            pointers = [p for r in self.rules if fnmatchcase(name, r.kind) for p in r.paths]
            if not group and kind == "Secret" and not self.allow_secret_data:
                pointers += ["/data", "/stringData"]
            found = self._cache[key] = tuple(_split(p) for p in pointers)
        return found

    def apply(self, group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        paths = self._paths(group, kind)
        for path in paths:
            obj = _without(obj, path)
        return obj


def _split(pointer: str) -> tuple[str, ...]:
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer (it must start with '/')")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


def _without(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """A copy of ``obj`` without ``path`` (copies only along the path; never mutates)."""
    head, rest = path[0], path[1:]
    if head not in obj:
        return obj
    if not rest:
        return {k: v for k, v in obj.items() if k != head}
    child = obj[head]
    if not isinstance(child, dict):
        return obj
    return {**obj, head: _without(child, rest)}
