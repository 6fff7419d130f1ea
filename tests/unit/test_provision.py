"""Provisioning without servers: the destinations a config implies, how existing Kafka topics
and NATS streams are judged, the run-time topic guard (with a fake admin), and a missing
destination as the delivery worker shows it (down reason, metric)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from nats.js.api import StorageType, StreamConfig

from bridge.delivery.worker import SinkWorker
from bridge.events.event import Event
from bridge.metrics import REGISTRY
from sinks.base import SinkError
from sinks.kafka import KafkaSettings
from sinks.kafka_topics import TopicGuard, TopicSpec, TopicState, alter_command, compare, specs
from sinks.nats import NatsSettings
from sinks.nats_streams import compare as compare_stream
from sinks.nats_streams import covers, default_subjects, pattern
from sinks.nats_streams import specs as stream_specs
from sinks.provisioning import DestinationError, KindRef, Scope, UnboundedTemplate, destinations
from sinks.template import Template
from tests.unit.test_sink_faults import FAST, ScriptedSink, events, until

DB = KindRef("demo.example.com", "v1", "databases", "Database", namespaced=True)
TENANT = KindRef("platform.demo.example.com", "v1", "tenants", "Tenant", namespaced=False)
POD = KindRef("", "v1", "pods", "Pod", namespaced=True)
SCOPE = Scope((DB, TENANT, POD))


def kafka(**settings: object) -> KafkaSettings:
    return KafkaSettings(name="bus", bootstrap_servers="b:9092", **settings)  # type: ignore[arg-type]


# ---- the destinations a config implies --------------------------------------------------------

def test_one_topic_per_kind_core_as_core_and_cluster_rendered() -> None:
    assert destinations(Template("k8s.{cluster}.{group}.{plural}", "eu1"), SCOPE) == [
        "k8s.eu1.core.pods", "k8s.eu1.demo.example.com.databases",
        "k8s.eu1.platform.demo.example.com.tenants"]


def test_types_and_listed_namespaces_multiply_the_topics() -> None:
    scope = Scope((DB, TENANT), namespaces=("a", "b"), types=("added", "deleted"))
    found = destinations(Template("t.{kind}.{namespace}.{type}", "c"), scope)
    assert found == ["t.Database.a.added", "t.Database.a.deleted", "t.Database.b.added",
                     "t.Database.b.deleted", "t.Tenant._cluster.added",
                     "t.Tenant._cluster.deleted"]


@pytest.mark.parametrize("template", ["t.{name}", "t.{namespace}"])
def test_a_topic_per_object_or_unlisted_namespace_cannot_be_provisioned(template: str) -> None:
    with pytest.raises(UnboundedTemplate):
        destinations(Template(template, "c"), SCOPE)


# ---- Kafka topics -----------------------------------------------------------------------------

def test_specs_follow_tombstones_and_retention() -> None:
    events_spec, dead = specs(kafka(tombstones=True, partitions=6, replication_factor=3,
                                    min_insync_replicas=2))
    assert events_spec.configs == {"cleanup.policy": "compact", "min.insync.replicas": "2"}
    assert (events_spec.partitions, events_spec.replication_factor) == (6, 3)
    assert dead.configs["cleanup.policy"] == "delete"
    kept, _ = specs(kafka(tombstones=True, retention_ms=1000))
    assert kept.configs == {"cleanup.policy": "compact,delete", "retention.ms": "1000"}
    assert specs(kafka())[0].configs == {"cleanup.policy": "delete"}


def test_a_delete_only_topic_with_tombstones_on_is_blocking() -> None:
    spec, _ = specs(kafka(tombstones=True))
    found = compare(spec, TopicState(3, 1, {"cleanup.policy": "delete"}))
    assert [(d.setting, d.blocking) for d in found] == [("cleanup.policy", True)]
    assert "kafka-configs.sh" in alter_command("t", spec, found)
    assert "--add-config cleanup.policy=compact" in alter_command("t", spec, found)


def test_sizing_differences_are_reported_but_not_blocking() -> None:
    spec, _ = specs(kafka(partitions=6, retention_ms=5000))
    found = compare(spec, TopicState(3, 1, {"cleanup.policy": "delete", "retention.ms": "9"}))
    assert {d.setting: d.blocking for d in found} == {"partitions": False,
                                                       "retention.ms": False}
    assert compare(spec, TopicState(6, 1, {"cleanup.policy": "delete",
                                            "retention.ms": "5000"})) == []
    both = TopicSpec(1, 1, {"cleanup.policy": "compact,delete"}, tombstones=True)
    assert compare(both, TopicState(1, 1, {"cleanup.policy": "delete,compact"})) == []
    assert "cleanup.policy=[compact,delete]" in alter_command(
        "t", both, compare(both, TopicState(1, 1, {"cleanup.policy": "delete"})))


def test_unreadable_configs_are_not_judged() -> None:
    spec, _ = specs(kafka(tombstones=True))
    assert compare(spec, TopicState(3, 1, {}, "error 29: denied")) == []


class FakeAdmin:
    """Topics that exist (name -> state); ``auto`` = the broker creates topics on metadata."""

    def __init__(self, topics: dict[str, TopicState], auto: bool = False) -> None:
        self.topics = dict(topics)
        self.auto = auto
        self.calls: list[str] = []
        self.created: list[tuple[str, TopicSpec]] = []

    async def auto_create(self, topic: str) -> None:
        self.calls.append("auto_create")
        if self.auto:
            self.topics.setdefault(topic, TopicState(1, 1, {"cleanup.policy": "delete"}))

    async def state(self, topics: list[str]) -> dict[str, TopicState | None]:
        self.calls.append("state")
        return {t: self.topics.get(t) for t in topics}

    async def create(self, topic: str, spec: TopicSpec) -> str:
        self.created.append((topic, spec))
        self.topics[topic] = TopicState(spec.partitions, spec.replication_factor,
                                        dict(spec.configs))
        return ""

    async def close(self) -> None:
        return None


@pytest.fixture(autouse=True)
def quick_auto_create(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sinks.kafka_topics.AUTO_CREATE_WAIT", 0.01)


async def test_a_missing_topic_names_it_and_the_command_then_is_found_once_created() -> None:
    admin = FakeAdmin({"ok": TopicState(3, 1, {"cleanup.policy": "delete"})})
    guard = TopicGuard(kafka(), admin)  # type: ignore[arg-type]
    problems = await guard.check({"ok", "gone"})
    assert list(problems) == ["gone"]
    error = problems["gone"]
    assert isinstance(error, DestinationError) and error.transient
    assert (error.destination, error.problem) == ("gone", "missing")
    assert "topic gone does not exist" in str(error)
    assert "kube-event-bridge provision --config" in str(error)
    assert "create_topics: true" in str(error)
    assert (await guard.check({"gone"})).keys() == {"gone"}
    assert admin.calls.count("auto_create") == 1  # a broker that did not create is not asked again
    admin.topics["gone"] = TopicState(3, 1, {"cleanup.policy": "delete"})  # provisioned
    assert await guard.check({"ok", "gone"}) == {}
    admin.calls.clear()
    assert await guard.check({"ok", "gone"}) == {}  # cached: the hot path asks nobody
    assert admin.calls == []


async def test_create_topics_creates_a_missing_topic_with_the_configured_spec() -> None:
    admin = FakeAdmin({})
    guard = TopicGuard(kafka(create_topics=True, tombstones=True, partitions=4), admin)  # type: ignore[arg-type]
    assert await guard.check({"new"}) == {}
    assert [(t, s.partitions, s.configs["cleanup.policy"]) for t, s in admin.created] == [
        ("new", 4, "compact")]
    assert await guard.check({"dlq"}, dead_letter=True) == {}
    assert admin.created[-1][1].configs["cleanup.policy"] == "delete"


async def test_a_topic_the_bridge_may_not_create_says_so() -> None:
    class Denied(FakeAdmin):
        async def create(self, topic: str, spec: TopicSpec) -> str:
            return "error 29: Authorization failed."

    problem = (await TopicGuard(kafka(create_topics=True), Denied({})).check({"t"}))["t"]  # type: ignore[arg-type]
    assert "could not create it (create_topics: true): error 29" in str(problem)


async def test_a_broker_that_auto_creates_is_used_but_its_settings_are_still_judged() -> None:
    admin = FakeAdmin({}, auto=True)
    assert await TopicGuard(kafka(), admin).check({"t"}) == {}  # type: ignore[arg-type]
    assert "auto_create" in admin.calls
    tombstones = TopicGuard(kafka(tombstones=True), FakeAdmin({}, auto=True))  # type: ignore[arg-type]
    problem = (await tombstones.check({"t"}))["t"]
    assert isinstance(problem, DestinationError) and problem.problem == "contradicts"
    assert "cleanup.policy=delete, config wants compact" in str(problem)


# ---- NATS streams -----------------------------------------------------------------------------

def test_subject_patterns_and_default_stream_subjects() -> None:
    template = Template("k8s.{cluster}.{group}.{plural}.{namespace}.{name}", "eu.1",
                        sanitize=True)
    assert pattern(template) == "k8s.eu_1.*.*.*.*"
    assert default_subjects(template) == ["k8s.eu_1.>"]
    with pytest.raises(ValueError, match="stream_subjects"):
        NatsSettings(name="js", url="nats://x", subject="{group}.{plural}")


@pytest.mark.parametrize("have, want, result", [
    ("k8s.>", "k8s.*.*", True), ("k8s.*.*", "k8s.*.*", True), ("k8s.*", "k8s.*.*", False),
    ("k8s.a.*", "k8s.*.*", False), ("other.>", "k8s.*", False), ("k8s.>", "k8s", False),
    ("kube-event-bridge.dlq", "kube-event-bridge.dlq", True), (">", "a.b", True),
])
def test_covers(have: str, want: str, result: bool) -> None:
    assert covers(have, want) is result


def test_a_stream_not_covering_the_subjects_or_with_a_shorter_window_is_blocking() -> None:
    settings = NatsSettings(name="js", url="nats://x", stream="K8S", duplicate_window=120,
                            replicas=3)
    spec, dead = stream_specs(settings, Template(settings.subject, "c", sanitize=True))
    assert spec.subjects == ("k8s.>",) and dead.subjects == ("kube-event-bridge.dlq",)
    bad = StreamConfig(name="K8S", subjects=["k8s.x.>"], duplicate_window=30,
                       storage=StorageType.MEMORY, num_replicas=3)
    found = {d.setting: d.blocking for d in compare_stream(spec, bad)}
    assert found == {"subjects": True, "duplicate_window": True, "storage": False}
    good = StreamConfig(name="K8S", subjects=["k8s.>"], duplicate_window=600, num_replicas=3)
    assert compare_stream(spec, good) == []


# ---- what the delivery worker makes of a missing destination ------------------------------------

def destination_sample(sink: str, destination: str) -> float | None:
    return REGISTRY.get_sample_value("kube_event_bridge_sink_destination_missing",
                                     {"sink": sink, "destination": destination,
                                      "problem": "missing"})


async def test_a_missing_destination_is_the_down_reason_and_a_metric_until_it_exists() -> None:
    state = {"missing": True}
    error = DestinationError("kafka sink unit-dest: topic t.a does not exist; run "
                             "`kube-event-bridge provision --config <this config file>`",
                             destination="t.a", problem="missing")

    def reply(evs: Sequence[Event]) -> list[SinkError | None]:
        return [error if state["missing"] else None for _ in evs]

    sink = ScriptedSink("unit-dest", reply)
    acked: list[str] = []
    worker = SinkWorker(sink, lambda evs: acked.extend(e.id for e in evs), **FAST)
    worker.submit(events(3))
    task = asyncio.create_task(worker.run())
    await until(lambda: sink.sends >= 3)
    assert worker.down_reason == str(error)
    assert destination_sample("unit-dest", "t.a") == 1
    assert acked == []
    state["missing"] = False
    await until(lambda: len(acked) == 3)
    assert worker.down_reason is None
    assert destination_sample("unit-dest", "t.a") == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def test_a_topic_that_cannot_be_described_is_used_unchecked() -> None:
    spec, _ = specs(kafka(tombstones=True))
    assert compare(spec, TopicState(0, 0, unchecked="error 29")) == []
