"""The NATS sink's JetStream streams: the events stream (``stream``) and the stream that holds
the dead-letter subject; what they should look like, checking and creating them ahead of time
(``provision``) and at run time (``StreamGuard``).

The events stream's subjects are ``stream_subjects``, or by default the subject template's
leading literal tokens followed by ``>`` (``k8s.{group}.{plural}...`` -> ``k8s.>``); it must
cover the template (each placeholder is one token, so the template is covered when
``k8s.*.*.*.*`` is). Its ``duplicate_window`` must be at least the configured one: re-sends
after a failure carry the same ``Nats-Msg-Id``, and JetStream drops them only within the
window. Both are *blocking*: a stream that does not cover the template or has a shorter window
stops delivery at run time, with the reason. ``max_age``, ``storage`` and ``replicas`` that
differ are reported by ``provision`` and logged once. An existing stream is never altered.

The dead-letter subject must be held by some stream; when none does, ``provision`` (or
``create_stream``) creates ``dead_letter_stream`` for it alone, so that bridges with different
event streams can share one dead-letter subject.

At run time a missing events stream shows up when JetStream answers a publish with status 503
(no stream holds the subject): the sink then looks the stream up once and reports a
``DestinationError`` naming it and ``kube-event-bridge provision``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nats.errors import Error as NatsError
from nats.js.api import StorageType, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, NotFoundError

from sinks.provisioning import (
    DestinationError,
    Difference,
    Outcome,
    Status,
    describe,
    provision_hint,
)
from sinks.template import Template, placeholders_in

if TYPE_CHECKING:
    from sinks.nats import NatsSettings

log = logging.getLogger(__name__)

WHAT = "nats stream"


@dataclass(frozen=True)
class StreamSpec:
    """How a stream of the sink should look; ``required`` are the subjects it must cover."""

    name: str
    subjects: tuple[str, ...]
    required: tuple[str, ...]
    duplicate_window: float
    max_age: float
    storage: str
    replicas: int

    def config(self) -> StreamConfig:
        return StreamConfig(name=self.name, subjects=list(self.subjects),
                            duplicate_window=self.duplicate_window, max_age=self.max_age,
                            storage=StorageType(self.storage), num_replicas=self.replicas)

    def summary(self) -> str:
        return (f"subjects={','.join(self.subjects)}, duplicate_window={self.duplicate_window:g}s"
                f", max_age={self.max_age:g}s, storage={self.storage}, replicas={self.replicas}")


def pattern(template: Template) -> str:
    """The subjects the template renders to, as one filter: a token with a placeholder is
    ``*`` ({cluster}, fixed per bridge, is rendered)."""
    tokens = []
    for token in template.template.split("."):
        fields = set(placeholders_in(token))
        if fields - {"cluster"}:
            tokens.append("*")
        else:
            tokens.append(Template(token, template.cluster, sanitize=template.sanitize)
                          .render_values({}))
    return ".".join(tokens)


def default_subjects(template: Template) -> list[str]:
    """The template's leading literal tokens followed by ``>``."""
    literal = []
    for token in pattern(template).split("."):
        if token == "*":
            break
        literal.append(token)
    if not literal:
        raise ValueError(f"subject template {template.template!r} starts with a placeholder: "
                         "set stream_subjects")
    return [".".join([*literal, ">"])]


def covers(stream_subject: str, subject: str) -> bool:
    """Whether the stream subject filter matches every subject the filter ``subject`` does."""
    have, want = stream_subject.split("."), subject.split(".")
    for index, token in enumerate(have):
        if token == ">":
            return len(want) > index
        if index >= len(want):
            return False
        if token != "*" and (token != want[index] or want[index] in ("*", ">")):
            return False
    return len(have) == len(want)


def specs(settings: NatsSettings, template: Template) -> tuple[StreamSpec, StreamSpec]:
    """The events stream's spec and the dead-letter stream's."""
    subjects = tuple(settings.stream_subjects or default_subjects(template))
    s = settings
    events = StreamSpec(s.stream, subjects, (pattern(template),), s.duplicate_window,
                        s.max_age, s.storage, s.replicas)
    dead = StreamSpec(s.dead_letter_stream, (s.dead_letter_subject,), (s.dead_letter_subject,),
                      s.duplicate_window, s.max_age, s.storage, s.replicas)
    return events, dead


def compare(spec: StreamSpec, config: StreamConfig) -> list[Difference]:
    """How an existing stream differs from ``spec``: not covering the subjects or a shorter
    duplicate window are blocking."""
    found: list[Difference] = []
    subjects = config.subjects or []
    uncovered = [s for s in spec.required if not any(covers(h, s) for h in subjects)]
    if uncovered:
        found.append(Difference("subjects", ",".join(subjects) or "(none)",
                                f"a subject covering {','.join(uncovered)}", blocking=True,
                                why="no stream would store these events"))
    window = config.duplicate_window or 0.0
    if window < spec.duplicate_window:
        found.append(Difference("duplicate_window", f"{window:g}s", f"{spec.duplicate_window:g}s",
                                blocking=True, why="re-sent events could be stored twice"))
    if (config.max_age or 0.0) != spec.max_age:
        found.append(Difference("max_age", f"{config.max_age or 0:g}s", f"{spec.max_age:g}s",
                                blocking=False))
    storage = str(getattr(config.storage, "value", config.storage) or "file")  # str or enum
    if storage != spec.storage:
        found.append(Difference("storage", storage, spec.storage, blocking=False))
    if (config.num_replicas or 1) != spec.replicas:
        found.append(Difference("replicas", str(config.num_replicas or 1), str(spec.replicas),
                                blocking=False))
    return found


async def _info(js: JetStreamContext, name: str) -> StreamConfig | None:
    try:
        return (await js.stream_info(name)).config
    except NotFoundError:
        return None


async def _holder(js: JetStreamContext, subject: str) -> str | None:
    """The stream holding ``subject``, if any."""
    try:
        return await js.find_stream_name_by_subject(subject)
    except NotFoundError:
        return None


class StreamGuard:
    """The events stream at run time: checked at connect, again while it is unusable, and
    when a publish finds no stream."""

    def __init__(self, settings: NatsSettings, template: Template) -> None:
        self.settings = settings
        self.events, self.dead = specs(settings, template)
        self.problem: DestinationError | None = None  # while the stream is unusable

    def _hint(self) -> str:
        return provision_hint("create_stream")

    async def ensure(self, js: JetStreamContext) -> None:
        """``create_stream``: create the events stream, and the dead-letter stream when no
        stream holds the dead-letter subject."""
        name = self.settings.name
        if await _info(js, self.events.name) is None:
            await js.add_stream(self.events.config())
            log.info("nats sink %s: created stream %s (%s)", name, self.events.name,
                     self.events.summary())
        if await _holder(js, self.settings.dead_letter_subject) is None:
            await js.add_stream(self.dead.config())
            log.info("nats sink %s: created stream %s for dead letters (%s)", name,
                     self.dead.name, self.dead.summary())

    async def check(self, js: JetStreamContext) -> DestinationError | None:
        """Look the events stream up; sets and returns ``problem`` (None: usable, or missing
        but the subjects may be held by another stream: a publish tells)."""
        config = await _info(js, self.events.name)
        self.problem = None if config is None else self._judge(config)
        return self.problem

    def _judge(self, config: StreamConfig) -> DestinationError | None:
        differences = compare(self.events, config)
        blocking = [d for d in differences if d.blocking]
        if blocking:
            return DestinationError(
                f"nats sink {self.settings.name}: stream {self.events.name} contradicts the "
                f"config: {describe(blocking)}; an existing stream is never altered by the "
                f"bridge: change it (`nats stream edit {self.events.name}`) or name another "
                "stream", destination=self.events.name, problem="contradicts")
        if differences:
            log.warning("nats sink %s: stream %s differs from the config: %s (delivery goes "
                        "on; `kube-event-bridge provision --dry-run` lists every difference)",
                        self.settings.name, self.events.name, describe(differences))
        return None

    async def explain(self, js: JetStreamContext, subject: str) -> DestinationError | None:
        """Why no stream held ``subject`` (a publish was answered 503), or None if that
        cannot be told (the stream exists and covers it now)."""
        try:
            config = await _info(js, self.events.name)
        except (NatsError, APIError, TimeoutError):
            return None
        if config is None:
            return DestinationError(
                f"nats sink {self.settings.name}: stream {self.events.name} does not exist "
                f"(JetStream answered status 503 for subject {subject}: no stream holds it); "
                f"{self._hint()}", destination=self.events.name, problem="missing")
        return self._judge(config)

    def dead_letter_missing(self, subject: str) -> DestinationError:
        return DestinationError(
            f"nats sink {self.settings.name}: no stream holds the dead-letter subject "
            f"{subject}; {self._hint()}", destination=self.dead.name, problem="missing")


async def provision(settings: NatsSettings, template: Template, js: JetStreamContext, *,
                    dry_run: bool) -> list[Outcome]:
    """The events stream's outcome and the dead-letter stream's."""
    events, dead = specs(settings, template)
    outcomes = [await _provision_one(settings.name, js, events, await _info(js, events.name),
                                     dry_run=dry_run)]
    holder = await _holder(js, settings.dead_letter_subject)
    if holder is None and any(covers(s, settings.dead_letter_subject) for s in events.subjects):
        holder = events.name  # it will, once created
    if holder == events.name:
        return outcomes
    if holder is not None and holder != dead.name:
        outcomes.append(Outcome(settings.name, WHAT, holder, Status.OK,
                                f"holds the dead-letter subject {settings.dead_letter_subject}"))
    else:
        outcomes.append(await _provision_one(settings.name, js, dead,
                                             await _info(js, dead.name), dry_run=dry_run))
    return outcomes


async def _provision_one(sink: str, js: JetStreamContext, spec: StreamSpec,
                         config: StreamConfig | None, *, dry_run: bool) -> Outcome:
    if config is None:
        if dry_run:
            return Outcome(sink, WHAT, spec.name, Status.MISSING,
                           f"would create: {spec.summary()}")
        try:
            await js.add_stream(spec.config())
        except APIError as exc:
            return Outcome(sink, WHAT, spec.name, Status.MISSING,
                           f"cannot create ({spec.summary()}): {exc.description or exc}")
        return Outcome(sink, WHAT, spec.name, Status.CREATED, spec.summary())
    differences = compare(spec, config)
    if differences:
        return Outcome(sink, WHAT, spec.name, Status.CONTRADICTS,
                       f"{describe(differences)}; to change it: nats stream edit {spec.name}")
    return Outcome(sink, WHAT, spec.name, Status.OK, spec.summary())
