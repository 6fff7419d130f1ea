"""Sink types: the built-in ones and third-party plugins from the Python entry-point group
``kube_event_bridge.sinks``.

A plugin entry point names a class with a ``Settings`` attribute (a pydantic model subclassing
``sinks.base.SinkSettings`` whose ``type`` is the plugin's name) and a constructor taking
``(settings, cluster)``. Example in ``docs/sink-plugins.md``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from bridge.errors import ConfigError
from sinks.base import Sink, SinkSettings
from sinks.jsonl import JsonlSettings, JsonlSink
from sinks.kafka import KafkaSettings, KafkaSink, Transactions
from sinks.nats import NatsSettings, NatsSink
from sinks.null import NullSettings, NullSink

ENTRY_POINT_GROUP = "kube_event_bridge.sinks"


class UnknownSinkType(ConfigError, LookupError):
    """A sink ``type`` that is neither built in nor a registered plugin."""


def plugin_class(type_name: str) -> Any:
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == type_name:
            return entry.load()
    known = ", ".join(["jsonl", "kafka", "nats", "null", *plugin_names()])
    raise UnknownSinkType(f"unknown sink type {type_name!r}; known types: {known} (plugins "
                          f"register in the entry-point group {ENTRY_POINT_GROUP!r})")


def plugin_names() -> list[str]:
    return sorted(e.name for e in entry_points(group=ENTRY_POINT_GROUP))


def plugin_settings(settings: SinkSettings) -> SinkSettings:
    """Validate a plugin sink's options with the plugin's own model."""
    cls = plugin_class(settings.type)
    model: type[SinkSettings] = cls.Settings
    return model.model_validate(settings.model_dump())


def build(settings: SinkSettings, cluster: str, max_event_bytes: int, *,
          transactions: Transactions | None = None) -> Sink:
    """``transactions``: the checkpoint store's producer, for an exactly-once Kafka sink."""
    if isinstance(settings, JsonlSettings):
        return JsonlSink(settings)
    if isinstance(settings, KafkaSettings):
        eo = settings.delivery == "exactly-once"
        return KafkaSink(settings, cluster, max_event_bytes,
                         transactions=transactions if eo else None)
    if isinstance(settings, NatsSettings):
        return NatsSink(settings, cluster)
    if isinstance(settings, NullSettings):
        return NullSink(settings)
    cls = plugin_class(settings.type)
    sink: Sink = cls(plugin_settings(settings), cluster)
    return sink
