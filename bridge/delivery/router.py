"""Which sinks receive an event: each sink's filter (kinds, namespaces, event types)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from bridge.events.event import Event
from sinks.base import RouteFilter


def matches(route: RouteFilter, event: Event) -> bool:
    delta = event.delta
    if route.types and delta.type.value not in route.types:
        return False
    if route.kinds:
        name = f"{delta.resource.group or 'core'}/{delta.resource.kind}"
        if not any(fnmatchcase(name, pattern) for pattern in route.kinds):
            return False
    if route.namespaces:
        namespace = delta.namespace or "_cluster"
        if not any(fnmatchcase(namespace, pattern) for pattern in route.namespaces):
            return False
    return True
