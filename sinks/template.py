"""Topic/subject templates: ``k8s.{group}.{plural}`` and friends.

Placeholders: {cluster} {group} {version} {plural} {kind} {namespace} {name} {type}. The core
group renders as ``core`` and a cluster-scoped object's namespace as ``_cluster``. With
``sanitize`` (NATS subjects) every value has ``.``, ``*``, ``>`` and whitespace replaced by
``_``, so one placeholder is always exactly one subject token.
"""

from __future__ import annotations

import re
import string

from bridge.errors import ConfigError
from bridge.events.event import Event

PLACEHOLDERS = ("cluster", "group", "version", "plural", "kind", "namespace", "name", "type")
_UNSAFE = re.compile(r"[.*>\s]")


class TemplateError(ConfigError, ValueError):
    """A topic/subject template that cannot be rendered (a ``ValueError`` too, so that the
    config model's validators report it as a validation error of its field)."""


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
        fields = set(placeholders_in(template))
        self._by_namespace = "namespace" in fields
        self._by_name = "name" in fields
        self._by_type = "type" in fields
        # per (resource, namespace, type): the rendering, or the values when {name} varies
        self._cache: dict[tuple[str, ...], tuple[str | None, dict[str, str]]] = {}

    def _clean(self, value: str) -> str:
        return (_UNSAFE.sub("_", value) or "_") if self.sanitize else value

    def render_values(self, values: dict[str, str]) -> str:
        """The template with these placeholder values (and the cluster's), cleaned like an
        event's: what ``provision`` creates ahead of the events."""
        return self.template.format_map(
            {k: self._clean(v) for k, v in {**values, "cluster": self.cluster}.items()})

    def render(self, event: Event) -> str:
        delta = event.delta
        res = delta.resource
        key = (res.group, res.version, res.plural,  # kind follows from group and plural
               delta.namespace if self._by_namespace else "",
               delta.type.value if self._by_type else "")
        entry = self._cache.get(key)
        if entry is None:
            values = {k: self._clean(v) for k, v in {
                "cluster": self.cluster,
                "group": res.group or "core",
                "version": res.version,
                "plural": res.plural,
                "kind": res.kind,
                "namespace": delta.namespace or "_cluster",
                "type": delta.type.value,
            }.items()}
            entry = (None if self._by_name else self.template.format_map(values), values)
            if len(self._cache) < 100_000:
                self._cache[key] = entry
        rendered, values = entry
        if rendered is not None:
            return rendered
        return self.template.format_map({**values, "name": self._clean(delta.name)})
