"""Topic/subject templates: ``k8s.{group}.{plural}`` and friends.

Placeholders: {cluster} {group} {version} {plural} {kind} {namespace} {name} {type}. The core
group renders as ``core`` and a cluster-scoped object's namespace as ``_cluster``. With
``sanitize`` (NATS subjects) every value has ``.``, ``*``, ``>`` and whitespace replaced by
``_``, so one placeholder is always exactly one subject token.
"""

from __future__ import annotations

import re
import string

from bridge.events.event import Event

PLACEHOLDERS = ("cluster", "group", "version", "plural", "kind", "namespace", "name", "type")
_UNSAFE = re.compile(r"[.*>\s]")


class TemplateError(ValueError):
    pass


def placeholders_in(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise TemplateError(f"{template!r}: {exc}") from exc


def check(template: str) -> None:
    unknown = [f for f in placeholders_in(template) if f not in PLACEHOLDERS]
    if unknown:
        raise TemplateError(
            f"unknown placeholder {{{unknown[0]}}} in {template!r}; "
            f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")


class Template:
    def __init__(self, template: str, cluster: str, sanitize: bool = False) -> None:
        check(template)
        self.template = template
        self.cluster = cluster
        self.sanitize = sanitize
        self._fields = set(placeholders_in(template))
        self._cache: dict[tuple[str, ...], str] = {}

    def render(self, event: Event) -> str:
        delta = event.delta
        res = delta.resource
        values = {
            "cluster": self.cluster,
            "group": res.group or "core",
            "version": res.version,
            "plural": res.plural,
            "kind": res.kind,
            "namespace": delta.namespace or "_cluster",
            "name": delta.name,
            "type": delta.type.value,
        }
        key = tuple(values[f] for f in sorted(self._fields))
        found = self._cache.get(key)
        if found is None:
            if self.sanitize:
                values = {k: _UNSAFE.sub("_", v) or "_" for k, v in values.items()}
            found = self.template.format_map(values)
            if len(self._cache) < 100_000 and "name" not in self._fields:
                self._cache[key] = found
        return found
