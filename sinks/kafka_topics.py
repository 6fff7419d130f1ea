"""The Kafka sink's topics: what each should look like, checking and creating them ahead of
time (``provision``) and at run time (``TopicGuard``, once per topic).

A topic's wanted settings come from the sink's config: ``partitions``, ``replication_factor``,
``cleanup.policy`` (``compact`` when ``tombstones`` are on, ``compact,delete`` if
``retention_ms`` is also set, else ``delete``), ``retention.ms`` and ``min.insync.replicas``
when set. The dead-letter topic gets the same, with ``cleanup.policy=delete`` (dead letters of
one object must not compact each other away). An existing topic is never altered; how it
differs is reported (with the command that would change it). At run time only a *blocking*
difference stops delivery to the topic: ``tombstones: true`` on a topic that does not compact
(the tombstones would never remove anything). Other differences are logged once.

A missing topic at run time: with ``create_topics: true`` the bridge creates it; otherwise it
asks for the topic's metadata with auto-creation allowed, which a broker with
``auto.create.topics.enable=true`` answers by creating it with its defaults (as the producer
always did), and a broker without answers "unknown topic": a ``DestinationError`` naming the
topic and ``kube-event-bridge provision``. Checks use the admin API (Metadata without
auto-creation, DescribeConfigs, CreateTopics); if DescribeConfigs is not allowed, settings are
not checked (logged once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from sinks.base import SinkError
from sinks.provisioning import (
    DestinationError,
    Difference,
    Outcome,
    Scope,
    Status,
    describe,
    destinations,
    provision_command,
    provision_hint,
)
from sinks.template import Template

if TYPE_CHECKING:
    from sinks.kafka import KafkaSettings

log = logging.getLogger(__name__)

UNKNOWN_TOPIC = 3
LEADER_NOT_AVAILABLE = 5
TOPIC_EXISTS = 36
CREATE_WAIT = 5.0  # seconds to wait for a topic being created to be described
AUTO_CREATE_WAIT = 2.0  # seconds to wait for a broker's auto-creation to show
WHAT = "kafka topic"


@dataclass(frozen=True)
class TopicSpec:
    """How a topic of the sink should look."""

    partitions: int
    replication_factor: int
    configs: dict[str, str]
    tombstones: bool = False

    def summary(self) -> str:
        configs = ", ".join(f"{k}={v}" for k, v in sorted(self.configs.items()))
        return (f"partitions={self.partitions}, replication_factor={self.replication_factor}, "
                f"{configs}")


def specs(settings: KafkaSettings) -> tuple[TopicSpec, TopicSpec]:
    """The event topics' spec and the dead-letter topic's."""
    configs: dict[str, str] = {}
    if settings.retention_ms is not None:
        configs["retention.ms"] = str(settings.retention_ms)
    if settings.min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    policy = "delete"
    if settings.tombstones:
        policy = "compact,delete" if settings.retention_ms is not None else "compact"
    events = TopicSpec(settings.partitions, settings.replication_factor,
                       {**configs, "cleanup.policy": policy}, settings.tombstones)
    dead = TopicSpec(settings.partitions, settings.replication_factor,
                     {**configs, "cleanup.policy": "delete"})
    return events, dead


@dataclass(frozen=True)
class TopicState:
    """An existing topic as the broker describes it (``configs`` empty with ``configs_error``
    when they could not be read; ``unchecked`` says why it could not be described at all,
    e.g. not authorized: then it is used as it is and the producer reports what fails)."""

    partitions: int
    replication_factor: int
    configs: dict[str, str] = field(default_factory=dict)
    configs_error: str = ""
    unchecked: str = ""


def _policy(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def compare(spec: TopicSpec, state: TopicState) -> list[Difference]:
    """How ``state`` differs from ``spec``; only a non-compacting topic with tombstones on is
    blocking."""
    found: list[Difference] = []
    if state.unchecked:
        return found
    if state.partitions != spec.partitions:
        found.append(Difference("partitions", str(state.partitions), str(spec.partitions),
                                blocking=False, why="not altered: more partitions would move "
                                "keys to other partitions"))
    if state.replication_factor != spec.replication_factor:
        found.append(Difference("replication_factor", str(state.replication_factor),
                                str(spec.replication_factor), blocking=False))
    if state.configs_error:
        return found
    for name, wanted in sorted(spec.configs.items()):
        value = state.configs.get(name, "")
        if name == "cleanup.policy":
            if _policy(value) == _policy(wanted):
                continue
            blocking = spec.tombstones and "compact" not in _policy(value)
            found.append(Difference(name, value, wanted, blocking=blocking,
                                    why="tombstones: true needs a compacted topic"
                                    if blocking else ""))
        elif value != wanted:
            found.append(Difference(name, value or "?", wanted, blocking=False))
    return found


def alter_command(topic: str, spec: TopicSpec, differences: list[Difference]) -> str:
    """The ``kafka-configs.sh`` command that sets the differing topic configs (a list value
    in brackets); partitions and replication factor are not changed this way."""
    configs = [(d.setting, spec.configs[d.setting]) for d in differences
               if d.setting in spec.configs]
    if not configs:
        return ""
    joined = ",".join(f"{k}=[{v}]" if "," in v else f"{k}={v}" for k, v in configs)
    return (f"kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics "
            f"--entity-name {topic} --add-config {joined}")


class TopicAdmin:
    """The admin requests the checks need, on one lazily started admin client."""

    def __init__(self, options: dict[str, Any], timeout: float) -> None:
        self._options = {**options, "request_timeout_ms": int(timeout * 1000)}
        self._admin: AIOKafkaAdminClient | None = None

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**self._options)
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
        self._admin = None

    async def describe(self, topics: list[str]) -> dict[str, TopicState | None]:
        """Each topic's partitions and replication factor, None for an unknown topic (or one
        still being created)."""
        admin = await self._client()
        answer = await admin._send_request(  # describe_topics() would allow auto-creation
            MetadataRequest(topics, allow_auto_topic_creation=False))
        found: dict[str, TopicState | None] = {}
        for entry in answer.to_object()["topics"]:
            partitions, code = entry["partitions"], entry["error_code"]
            if code not in (0, UNKNOWN_TOPIC, LEADER_NOT_AVAILABLE):
                found[entry["topic"]] = TopicState(0, 0, unchecked=f"error {code}")
                continue
            if code == UNKNOWN_TOPIC or not partitions:  # unknown, or still being created
                found[entry["topic"]] = None
                continue
            found[entry["topic"]] = TopicState(
                len(partitions), max(len(p["replicas"]) for p in partitions))
        return found

    async def auto_create(self, topic: str) -> None:
        """Ask for the topic's metadata allowing auto-creation: a broker with
        ``auto.create.topics.enable=true`` starts creating it (and answers "unknown" all the
        same: only a later ``describe`` tells)."""
        admin = await self._client()
        await admin._send_request(MetadataRequest([topic], allow_auto_topic_creation=True))

    async def configs(self, topics: list[str]) -> dict[str, tuple[dict[str, str], str]]:
        """Each topic's configs, or why they could not be read."""
        admin = await self._client()
        answers = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        found: dict[str, tuple[dict[str, str], str]] = {}
        for answer in answers:
            for resource in answer.to_object()["resources"]:
                if resource["error_code"]:
                    found[resource["resource_name"]] = (
                        {}, f"error {resource['error_code']}: {resource['error_message']}")
                    continue
                found[resource["resource_name"]] = (
                    {e["config_names"]: e["config_value"] or ""
                     for e in resource["config_entries"]}, "")
        return found

    async def state(self, topics: list[str]) -> dict[str, TopicState | None]:
        """``describe`` plus the configs of the topics that exist."""
        found = await self.describe(topics)
        existing = [t for t, s in found.items() if s is not None and not s.unchecked]
        if existing:
            configs = await self.configs(existing)
            for topic in existing:
                state = found[topic]
                assert state is not None
                values, error = configs.get(topic, ({}, "not described"))
                found[topic] = TopicState(state.partitions, state.replication_factor,
                                          values, error)
        return found

    async def create(self, topic: str, spec: TopicSpec) -> str:
        """Create ``topic``; "" on success (or when it exists by now), else why not."""
        admin = await self._client()
        answer = await admin.create_topics([NewTopic(
            topic, num_partitions=spec.partitions, replication_factor=spec.replication_factor,
            topic_configs=spec.configs)])
        _, code, message = answer.topic_errors[0]
        if code in (0, TOPIC_EXISTS):
            return ""
        return f"error {code}: {message}"


def _missing(name: str, topic: str, create_error: str | None) -> DestinationError:
    if create_error is not None:
        return DestinationError(
            f"kafka sink {name}: topic {topic} does not exist and the bridge could not create "
            f"it (create_topics: true): {create_error}; grant the bridge CREATE on it, or "
            f"run `{provision_command()}` as a user allowed to",
            destination=topic, problem="missing")
    hint = provision_hint("create_topics")
    return DestinationError(
        f"kafka sink {name}: topic {topic} does not exist and the broker does not create "
        f"topics on first use (auto.create.topics.enable=false); {hint}",
        destination=topic, problem="missing")


def _contradicts(name: str, topic: str, spec: TopicSpec,
                 differences: list[Difference]) -> DestinationError:
    command = alter_command(topic, spec, differences)
    return DestinationError(
        f"kafka sink {name}: topic {topic} contradicts the config: {describe(differences)}; "
        f"an existing topic is never altered by the bridge: change it"
        + (f" (`{command}`)" if command else "") + " or name another topic",
        destination=topic, problem="contradicts")


class TopicGuard:
    """Checks each topic once, before the first event goes to it: the sink sends only to
    topics found usable (cached), and reports a ``DestinationError`` for the others, which are
    checked again on the next attempt (delivery retries with backoff)."""

    def __init__(self, settings: KafkaSettings, admin: TopicAdmin) -> None:
        self.settings = settings
        self.admin = admin
        self.events, self.dead = specs(settings)
        self.usable: set[str] = set()
        self._warned_configs = False
        self._broker_creates: bool | None = None  # auto-creation seen on this broker
        self._create_error: str | None = None  # why the last create_topics attempt failed

    async def check(self, topics: set[str],
                    dead_letter: bool = False) -> dict[str, SinkError]:
        """The problem of each topic that cannot be used (empty on the hot path: every topic
        known usable)."""
        if topics <= self.usable:
            return {}
        new = sorted(topics - self.usable)
        try:
            return await self._check(new, self.dead if dead_letter else self.events)
        except KafkaError as exc:
            error = SinkError(f"kafka sink {self.settings.name}: cannot check topics "
                              f"{', '.join(new)}: {exc!r}")
            return dict.fromkeys(new, error)

    async def _check(self, new: list[str], spec: TopicSpec) -> dict[str, SinkError]:
        problems: dict[str, SinkError] = {}
        states = await self.admin.state(new)
        for topic in new:
            state = states.get(topic)
            if state is None:
                state = await self._obtain(topic, spec)
            if state is None:
                problems[topic] = _missing(self.settings.name, topic, self._create_error)
                continue
            problem = self._judge(topic, spec, state)
            if problem is not None:
                problems[topic] = problem
            else:
                self.usable.add(topic)
        return problems

    async def _obtain(self, topic: str, spec: TopicSpec) -> TopicState | None:
        """Create a missing topic (``create_topics``), or let a broker that auto-creates
        topics do it; its state then, or None while it is missing. Once a broker did not
        auto-create a topic it is not asked to again."""
        name = self.settings.name
        if self.settings.create_topics:
            error = self._create_error = await self.admin.create(topic, spec) or None
            if error:
                return None
            log.info("kafka sink %s: created topic %s (%s)", name, topic, spec.summary())
            return await self._described(topic, CREATE_WAIT)
        if self._broker_creates is False:
            return None
        await self.admin.auto_create(topic)
        state = await self._described(topic, AUTO_CREATE_WAIT)
        self._broker_creates = state is not None
        if state is not None:
            log.info("kafka sink %s: topic %s was created by the broker's auto-creation "
                     "with the broker's defaults", name, topic)
        return state

    async def _described(self, topic: str, wait: float) -> TopicState | None:
        """The topic's state once it can be described (its leaders are being elected), or
        None after ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while True:
            state = (await self.admin.state([topic])).get(topic)
            if state is not None or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.1)

    def _judge(self, topic: str, spec: TopicSpec, state: TopicState) -> DestinationError | None:
        name = self.settings.name
        problem = state.unchecked or state.configs_error
        if problem and not self._warned_configs:
            self._warned_configs = True
            log.warning("kafka sink %s: cannot describe topic %s (%s): its settings are not "
                        "checked", name, topic, problem)
        differences = compare(spec, state)
        if any(d.blocking for d in differences):
            return _contradicts(name, topic, spec, [d for d in differences if d.blocking])
        if differences:
            log.warning("kafka sink %s: topic %s differs from the config: %s (delivery goes "
                        "on; `kube-event-bridge provision --dry-run` lists every difference)",
                        name, topic, describe(differences))
        return None


async def provision(settings: KafkaSettings, cluster: str, admin: TopicAdmin, scope: Scope, *,
                    dry_run: bool) -> list[Outcome]:
    """One outcome per topic the config implies (the dead-letter topic last)."""
    events, dead = specs(settings)
    wanted = [(t, events) for t in destinations(Template(settings.topic, cluster), scope)]
    wanted.append((settings.dead_letter_topic, dead))
    try:
        states = await admin.state([t for t, _ in wanted])
        return [await _provision_one(settings, admin, topic, spec, states.get(topic),
                                     dry_run=dry_run) for topic, spec in wanted]
    except KafkaError as exc:
        raise SinkError(f"kafka sink {settings.name}: cannot reach "
                        f"{settings.bootstrap_servers}: {exc!r}") from exc


async def _provision_one(settings: KafkaSettings, admin: TopicAdmin, topic: str,
                         spec: TopicSpec, state: TopicState | None, *,
                         dry_run: bool) -> Outcome:
    name = settings.name
    if state is None:
        if dry_run:
            return Outcome(name, WHAT, topic, Status.MISSING, f"would create: {spec.summary()}")
        error = await admin.create(topic, spec)
        if error:
            return Outcome(name, WHAT, topic, Status.MISSING, f"cannot create: {error}")
        return Outcome(name, WHAT, topic, Status.CREATED, spec.summary())
    differences = compare(spec, state)
    if differences:
        command = alter_command(topic, spec, differences)
        detail = describe(differences) + (f"; to change it: {command}" if command else "")
        return Outcome(name, WHAT, topic, Status.CONTRADICTS, detail)
    if state.unchecked:
        return Outcome(name, WHAT, topic, Status.OK, f"not checked: cannot describe "
                       f"it ({state.unchecked})")
    checked = "" if not state.configs_error else (
        f" (configs not checked: {state.configs_error})")
    return Outcome(name, WHAT, topic, Status.OK, spec.summary() + checked)
