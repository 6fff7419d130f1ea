"""Destinations a sink writes to (Kafka topics, NATS streams): the ones a config implies, the
protocol of sinks that check and create them, and the error a sink reports at run time when
one is missing or contradicts its settings.

``kube-event-bridge provision --config FILE`` asks every sink that implements ``Provisioner``
for one ``Outcome`` per destination; the daemon's sinks raise or return ``DestinationError``
for a destination they cannot use, which the delivery worker shows as the sink's down reason
and in ``kube_event_bridge_sink_destination_missing``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from bridge.errors import ConfigError
from sinks.base import SinkError
from sinks.template import Template, placeholders_in

_config_file = ["<this config file>"]  # the daemon's, once named (``name_config_file``)


def name_config_file(path: str) -> None:
    """The config file this process runs with, named in the command errors tell to run."""
    _config_file[0] = path


def provision_command() -> str:
    return f"kube-event-bridge provision --config {_config_file[0]}"


def provision_hint(setting: str) -> str:
    """What to do about a missing destination; ``setting`` lets the bridge create it."""
    return f"run `{provision_command()}` (or let the bridge create it: {setting}: true)"

Problem = Literal["missing", "contradicts"]


class DestinationError(SinkError):
    """A topic or stream the sink needs is missing or its settings contradict the sink's
    (transient: delivery retries it with backoff and goes on once it is provisioned)."""

    def __init__(self, message: str, *, destination: str, problem: Problem) -> None:
        super().__init__(message, transient=True)
        self.destination = destination
        self.problem = problem


class Status(enum.Enum):
    OK = "ok"
    CREATED = "created"
    MISSING = "missing"
    CONTRADICTS = "contradicts"


@dataclass(frozen=True)
class Outcome:
    """One destination's state after a provision run (or what a dry run found)."""

    sink: str
    what: str  # "kafka topic", "nats stream"
    name: str
    status: Status
    detail: str = ""

    def line(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.sink}: {self.what} {self.name}: {self.status.value}{detail}"

    @property
    def failed(self) -> bool:
        return self.status in (Status.MISSING, Status.CONTRADICTS)


@dataclass(frozen=True)
class Difference:
    """One setting of an existing destination that differs from the sink's config. A
    ``blocking`` one makes the destination unusable (delivery stops on it at run time); the
    others are reported by ``provision`` and logged once by the daemon."""

    setting: str
    found: str
    wanted: str
    blocking: bool
    why: str = ""

    def text(self) -> str:
        why = f" ({self.why})" if self.why else ""
        return f"{self.setting}={self.found}, config wants {self.wanted}{why}"


def describe(differences: Iterable[Difference]) -> str:
    return "; ".join(d.text() for d in differences)


@dataclass(frozen=True)
class KindRef:
    """A kind the bridge would watch, as topic templates see it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool


@dataclass(frozen=True)
class Scope:
    """What the bridge would watch right now: the destinations a config implies follow from
    it."""

    kinds: tuple[KindRef, ...]
    namespaces: tuple[str, ...] = ()  # watch.namespaces; empty = all
    types: tuple[str, ...] = ("added", "updated", "deleted")


@runtime_checkable
class Provisioner(Protocol):
    """A sink whose destinations can be checked and created ahead of running."""

    async def provision(self, scope: Scope, *, dry_run: bool) -> list[Outcome]: ...


class UnboundedTemplate(ConfigError, ValueError):
    """A template with one destination per object (or per unlisted namespace)."""


def destinations(template: Template, scope: Scope) -> list[str]:
    """Every destination ``template`` renders to for the kinds in ``scope``, sorted. {name},
    and {namespace} while all namespaces are watched, have no list ahead of time."""
    fields = set(placeholders_in(template.template))
    if "name" in fields:
        raise UnboundedTemplate(f"{template.template!r} has one destination per object "
                                "({name}): they cannot be provisioned ahead")
    found: set[str] = set()
    for kind in scope.kinds:
        namespaces: Sequence[str] = [""]
        if "namespace" in fields:
            if not kind.namespaced:
                namespaces = ["_cluster"]
            elif scope.namespaces:
                namespaces = scope.namespaces
            else:
                raise UnboundedTemplate(
                    f"{template.template!r} has one destination per namespace ({{namespace}}) "
                    "and every namespace is watched: list watch.namespaces, or drop "
                    "{namespace} from the template, to provision")
        for namespace in namespaces:
            for change in scope.types if "type" in fields else [""]:
                found.add(template.render_values({
                    "group": kind.group or "core", "version": kind.version,
                    "plural": kind.plural, "kind": kind.kind,
                    "namespace": namespace, "type": change}))
    return sorted(found)
