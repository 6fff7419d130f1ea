"""Which resources are watched, and why: include/exclude globs over ``group/plural`` and
``group/Kind`` (the core group is written ``core``)."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from bridge.kube.resources import Resource

# The bridge's own checkpoint ConfigMaps carry this label; a ConfigMap stream excludes it
# server-side so the bridge never re-emits its own writes.
CHECKPOINT_LABEL = "kube-event-bridge.io/checkpoint"

# Never watched unless a rule names them in ``include`` explicitly: their data is secret.
SENSITIVE = ("core/secrets",)


@dataclass(frozen=True)
class Selection:
    crds: bool = True
    builtins: tuple[str, ...] = ()  # "apps/v1/deployments", "v1/configmaps"
    include: tuple[str, ...] = ()  # empty: everything not excluded
    exclude: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()  # empty: all namespaces, one stream per resource

    def decide(self, resource: Resource, builtin: bool) -> tuple[bool, str]:
        """Whether ``resource`` is watched, and the rule that decided it."""
        names = kind_names(resource)
        if builtin and any(n in SENSITIVE for n in names) and not self._named_in_include(names):
            return False, "sensitive built-in (excluded unless listed in watch.include)"
        for pattern in self.exclude:
            if any(fnmatchcase(n, pattern) for n in names):
                return False, f"watch.exclude {pattern!r}"
        if self.include:
            for pattern in self.include:
                if any(fnmatchcase(n, pattern) for n in names):
                    return True, f"watch.include {pattern!r}"
            return False, "not matched by watch.include"
        if builtin:
            return True, "watch.builtins"
        if not self.crds:
            return False, "watch.crds is off"
        return True, "watch.crds: all"

    @staticmethod
    def label_selector(resource: Resource, configured: str) -> str:
        if resource.group == "" and resource.plural == "configmaps":
            return ",".join(s for s in (configured, f"!{CHECKPOINT_LABEL}") if s)
        return configured

    def _named_in_include(self, names: tuple[str, ...]) -> bool:
        return any(n == pattern for n in names for pattern in self.include)


def kind_names(resource: Resource) -> tuple[str, ...]:
    group = resource.group or "core"
    return (f"{group}/{resource.plural}", f"{group}/{resource.kind}")


def parse_builtin(spec: str) -> tuple[str, str, str]:
    """``apps/v1/deployments`` -> (apps, v1, deployments); ``v1/configmaps`` -> ("", v1, ...)."""
    parts = spec.strip("/").split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        group = "" if parts[0] == "core" else parts[0]
        return group, parts[1], parts[2]
    raise ValueError(f"{spec!r} is not group/version/plural (or version/plural for core)")
