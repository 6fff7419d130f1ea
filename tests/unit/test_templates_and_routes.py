from __future__ import annotations

import pytest

from bridge.delivery.router import matches
from bridge.events.builder import EventBuilder
from bridge.watch.delta import DeltaType
from sinks.base import RouteFilter
from sinks.template import Template, TemplateError, check
from tests.unit.test_events import GLOBAL, delta


def test_kafka_and_nats_templates() -> None:
    event = EventBuilder().build(delta())
    assert Template("k8s.{group}.{plural}", "c1").render(event) == "k8s.a.b.example.com.things"
    nats = Template("k8s.{group}.{namespace}.{name}.{type}", "c1", sanitize=True)
    assert nats.render(event) == "k8s.a_b_example_com.ns.n1.added"
    cluster = EventBuilder().build(delta(DeltaType.DELETED, GLOBAL, ns=""))
    assert nats.render(cluster) == "k8s.a_b_example_com._cluster.n1.deleted"
    assert Template("{cluster}-{kind}-{version}", "east").render(event) == "east-Thing-v1"
    dotted = EventBuilder().build(delta(DeltaType.UPDATED, GLOBAL, ns=""))
    dotted.delta.name = "web.v2 *"
    assert nats.render(dotted) == "k8s.a_b_example_com._cluster.web_v2__.updated"
    assert nats.render(event) == "k8s.a_b_example_com.ns.n1.added"  # cached parts, own name


def test_unknown_placeholder_is_an_error() -> None:
    with pytest.raises(TemplateError, match=r"\{plurals\}"):
        check("k8s.{group}.{plurals}")
    with pytest.raises(TemplateError):
        check("k8s.{group")


def test_route_filters() -> None:
    event = EventBuilder().build(delta(DeltaType.UPDATED))
    assert matches(RouteFilter(), event)
    assert matches(RouteFilter(kinds=["*.example.com/Thing"], namespaces=["n*"],
                               types=["updated"]), event)
    assert not matches(RouteFilter(types=["deleted"]), event)
    assert not matches(RouteFilter(kinds=["core/*"]), event)
    assert not matches(RouteFilter(namespaces=["_cluster"]), event)
