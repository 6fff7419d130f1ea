"""The configuration model. It validates the YAML file, and also produces
``config/schema.json`` and ``docs/config-reference.md`` (``python -m bridge.config.docs``)."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from sinks.base import SinkSettings
from sinks.jsonl import JsonlSettings
from sinks.kafka import KafkaSettings
from sinks.kafka_security import SaslSettings
from sinks.nats import NatsSettings
from sinks.null import NullSettings
from sinks.tls import TlsSettings

BUILTIN_SINK_SETTINGS: dict[str, type[SinkSettings]] = {
    "jsonl": JsonlSettings, "kafka": KafkaSettings, "nats": NatsSettings, "null": NullSettings}
BUILTIN_SINKS = tuple(BUILTIN_SINK_SETTINGS)
EventType = Literal["added", "updated", "deleted"]
ALL_EVENT_TYPES: tuple[EventType, ...] = ("added", "updated", "deleted")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(Strict):
    """The operator endpoints: `/metrics`, `/healthz` (alive), `/readyz` (initial sync done and
    every sink up)."""

    address: str = Field("0.0.0.0", description="listen address of /metrics /healthz /readyz")
    port: int = Field(9090, ge=0, le=65535, description="0 disables the HTTP server")


def _json_pointers(paths: list[str]) -> list[str]:
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} is not a JSON pointer: start it with '/'")
    return paths


class IgnoreUpdatesRule(Strict):
    """A noise filter: updates of matching kinds that are recorded (checkpoint and inventory
    advance) but not sent, and counted in `events_suppressed_total`. Adds and deletes are
    always sent. Every rule matching a kind applies; an update is suppressed when either test
    says it is noise. Only an update whose previous state the bridge knows can be suppressed:
    the first update of an object not seen since before the rule existed is sent. See the
    README section *Noise filters* for what consumers then see."""

    kind: str = Field(description='glob over "group/plural" or "group/Kind" (core group: '
                      '"core"), like `watch.exclude`')
    status_only: bool = Field(False, description="suppress an update that leaves "
                              "`metadata.generation` unchanged: status changes, and also "
                              "label, annotation and finalizer changes (the API server bumps "
                              "the generation only for spec changes and when a deletion "
                              "starts); objects without a generation are always sent")
    pointers: list[str] = Field(default_factory=list, description="suppress an update whose "
                                "only differences are at these JSON pointers (`*` matches "
                                "every array element or object value, e.g. "
                                "/status/conditions/*/lastHeartbeatTime; /status for "
                                "status-only changes that keep label changes); "
                                "/metadata/resourceVersion, /metadata/managedFields and "
                                "/metadata/generation are implied")

    _pointers = field_validator("pointers")(_json_pointers)

    @model_validator(mode="after")
    def _something(self) -> IgnoreUpdatesRule:
        if not self.status_only and not self.pointers:
            raise ValueError("a rule needs status_only: true or pointers")
        return self


class WatchSettings(Strict):
    """What is watched: every served CRD kind by default (discovered live), plus the built-in kinds
    you name; filters are applied server-side where the API allows."""

    crds: Literal["all", "none"] = Field("all", description="watch every served CRD kind, "
                                         "discovered live")
    builtins: list[str] = Field(default_factory=list, description='built-in kinds, e.g. '
                                '"apps/v1/deployments", "v1/configmaps"')
    include: list[str] = Field(default_factory=list, description="if set, only kinds "
                               'matching one of these globs over "group/plural" or '
                               '"group/Kind" (core group: "core")')
    exclude: list[str] = Field(default_factory=list, description="kinds never watched "
                               "(same globs)")
    namespaces: list[str] = Field(default_factory=list, description="empty = all namespaces; "
                                  "otherwise one stream per listed namespace")
    label_selector: str = Field("", description="server-side label selector")
    field_selector: str = Field("", description="server-side field selector")
    event_types: list[EventType] = Field(default_factory=lambda: list(ALL_EVENT_TYPES),
                                        description="change types sent; the others are "
                                        "recorded (the checkpoint moves) but not sent")
    initial: Literal["snapshot", "skip"] = Field(
        "snapshot", description="first start without a checkpoint: one synthetic `added` "
        "per existing object, or nothing")
    versions: dict[str, str] = Field(default_factory=dict, description='"plural.group" -> '
                                     "API version to watch instead of the preferred one")
    page_size: int = Field(500, ge=1, le=10_000, description="objects per page of a "
                           "paginated list (when the streaming watch-list is not used)")
    list_concurrency: int = Field(8, ge=1, le=256,
                                  description="simultaneous initial lists/re-lists")
    read_timeout: float = Field(120.0, ge=5, description="seconds without a byte before a "
                                "watch connection is considered dead")
    watch_list: bool = Field(True, description="use the streaming watch-list "
                             "(sendInitialEvents) where the server supports it")
    recheck_interval: float = Field(60.0, ge=1, description="seconds between re-checks of "
                                    "forbidden or vanished kinds")
    ignore_updates: list[IgnoreUpdatesRule] = Field(
        default_factory=list, description="noise filters: updates not sent (per kind glob)")


class RedactionSettings(Strict):
    """Fields removed from event payloads of matching kinds."""

    kind: str = Field(description='glob over "group/Kind"')
    paths: list[str] = Field(description="JSON pointers to remove, e.g. /spec/password")

    _pointers = field_validator("paths")(_json_pointers)


class EventSettings(Strict):
    """How changes become CloudEvents (the README's *The event format*): type prefix,
    partition key, payload redaction and the size policy."""

    type_prefix: str = Field("io.k8s.resource",
                             description="CloudEvents type = <prefix>.added|updated|deleted")
    partition_key: Literal["uid", "namespace/name"] = Field(
        "uid", description="the `partitionkey` attribute and Kafka record key: per-object "
        "order holds for events with the same key")
    previous: Literal["none", "state", "patch"] = Field(
        "none", description='updates also carry the previous state or an RFC 6902 patch; '
        'data becomes {"object": ..., "previous"|"patch": ...} (costs memory: the last '
        "state of every object is kept)")
    strip_managed_fields: bool = Field(True, description="remove `metadata.managedFields` "
                                       "from `data`")
    redact: list[RedactionSettings] = Field(default_factory=list, description="JSON pointers "
                                            "removed from `data`, per kind glob")
    allow_secret_data: bool = Field(False, description="Secret data/stringData are removed "
                                    "unless this is true")
    max_bytes: int = Field(1_000_000, ge=4096, description="size policy limit per event")
    drop_fields: list[str] = Field(
        default_factory=lambda: [
            "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"],
        description="removed first from an oversized event")
    oversize: Literal["reference", "dead-letter"] = Field(
        "reference", description="still too big: send metadata plus `dataref`, or "
        "dead-letter it")


class CheckpointSettings(Strict):
    """Where resume positions and inventories are stored: a base plus a write-ahead journal.
    Every change is journaled before it is handed to a sink (so whatever may have left the
    process is known after a crash); acknowledgements are journaled within `interval`; the
    base is rewritten only when the journal outgrows `compact_ratio` times it."""

    store: Literal["file", "configmap", "kafka", "nats-kv"] = Field(
        "file", description="where: a local directory, ConfigMaps in the cluster, a compacted "
        "Kafka topic or a NATS KV bucket (docs/checkpoints.md compares them)")
    path: str = Field("./.kube-event-bridge", description="file store: directory")
    interval: float = Field(1.0, ge=0.05, le=60, description="seconds within which "
                            "acknowledged changes reach the store (a crash repeats at most "
                            "about this much)")
    min_write_interval: float | None = Field(
        None, ge=0, le=10, description="seconds between two store writes, bounding writes "
        "per second (journal writes wait and carry more); default 0.2 for the configmap "
        "store (5 API writes/s), 0 for the others")
    compact_ratio: float = Field(1.0, gt=0, le=100, description="a new base is written "
                                 "when the journal since the last one outgrows this many "
                                 "times its size (bytes written stay within 1 + 1/ratio "
                                 "times the changes)")
    id: str = Field("default", description="names this bridge's checkpoint in a shared store")
    namespace: str = Field("", description="configmap store: namespace (default: own)")
    bootstrap_servers: str = Field("", description="kafka store")
    topic: str = Field("kube-event-bridge.checkpoints", description="kafka store: compacted "
                       "topic")
    tls: TlsSettings | None = Field(None, description="kafka and nats-kv stores: TLS, the "
                                    "same keys as a sink's `tls`")
    sasl: SaslSettings | None = Field(None, description="kafka store: SASL, the same keys as "
                                      "a kafka sink's `sasl`")
    replication_factor: int = Field(1, ge=1, le=32, description="kafka store: replicas of the "
                                    "topic when the bridge creates it; 1 suits a single-broker "
                                    "test cluster, use 3 in production")
    min_insync_replicas: int = Field(1, ge=1, le=32, description="kafka store: "
                                     "`min.insync.replicas` of the topic it creates (a write "
                                     "waits for this many replicas); use 2 in production")
    url: str = Field("", description="nats-kv store: server URL")
    bucket: str = Field("kube_event_bridge", description="nats-kv store: KV bucket")
    creds_file: str = Field("", description="nats-kv store: NATS credentials file (user JWT "
                            "+ nkey seed), as a nats sink's `creds_file`")
    nkey_seed_file: str = Field("", description="nats-kv store: nkey seed file, as a nats "
                                "sink's `nkey_seed_file`")

    @model_validator(mode="after")
    def _store_fields(self) -> CheckpointSettings:
        if self.store == "kafka" and not self.bootstrap_servers:
            raise ValueError("checkpoint store kafka needs bootstrap_servers")
        if self.store == "nats-kv" and not self.url:
            raise ValueError("checkpoint store nats-kv needs url")
        return self

    @model_validator(mode="after")
    def _kafka_store_fields(self) -> CheckpointSettings:
        if self.store != "kafka" and self.sasl is not None:
            raise ValueError("checkpoint sasl applies to the kafka store only")
        if self.store not in ("kafka", "nats-kv") and self.tls is not None:
            raise ValueError("checkpoint tls applies to the kafka and nats-kv stores only")
        if self.store != "nats-kv" and (self.creds_file or self.nkey_seed_file):
            raise ValueError("checkpoint creds_file and nkey_seed_file apply to the nats-kv "
                             "store only")
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"checkpoint min_insync_replicas ({self.min_insync_replicas}) "
                             f"exceeds replication_factor ({self.replication_factor})")
        return self


class LogSettings(Strict):
    """Structured logs on standard error."""

    format: Literal["json", "console"] = Field("console", description="one JSON object "
                                               "per line, or human-readable lines")
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="the "
                                                               "least severe level written")


class LeaderElectionSettings(Strict):
    """Active/standby replicas coordinated through a `coordination.k8s.io` Lease."""

    enabled: bool = Field(False, description="off: this process always leads")
    namespace: str = Field("", description="namespace of the Lease (default: own)")
    name: str = Field("kube-event-bridge", description="name of the Lease")
    lease_duration: float = Field(15.0, ge=2, description="seconds a Lease whose record does "
                                  "not change (as observed locally) stays held; then a "
                                  "standby takes it")
    renew_deadline: float = Field(10.0, ge=1, description="seconds within which the leader "
                                  "must renew, or it stops (exit 1); shorter than "
                                  "lease_duration")
    retry_period: float = Field(2.0, ge=0.2, description="seconds between renewals (and "
                                "between a standby's attempts)")


class ShardingSettings(Strict):
    """Scale out: streams spread over `shards` by a stable hash, each shard with its own
    checkpoint (`checkpoint.id` + `-shard-I-of-N`) and sink clients; run as `workers`
    processes on one host (docs/scaling.md)."""

    workers: Literal["auto"] | int = Field(1, description="worker processes on this host, "
                                           "each running one shard under one supervisor "
                                           "process; auto = the CPU count; 1 = one process "
                                           "(no supervisor)")
    shards: int | None = Field(None, ge=1, le=1024, description="total number of shards "
                               "(default: the number of workers)")
    index: int | None = Field(None, ge=0, description="run only this shard (0-based), as "
                              "`run --shard INDEX/SHARDS` does; unset: every shard")
    split: list[str] = Field(default_factory=list, description="hot kinds (globs over "
                             '"group/plural" or "group/Kind") spread by namespace hash: '
                             "every shard watches them and records only the objects of the "
                             "namespaces it owns")

    previous: int | None = Field(None, ge=1, le=1024, description="the number of shards "
                                 "before a change (1: unsharded): a shard whose checkpoint "
                                 "is empty adopts its streams from the previous shards' "
                                 "checkpoints (stop the previous processes first; "
                                 "docs/scaling.md)")
    leases: bool = Field(False, description="replicas: claim shards through per-shard "
                         "Leases `<leader_election.name>-shard-I` (leader_election's "
                         "namespace and timings); each replica runs a worker process for "
                         "each shard it holds, at most ceil(shards / live replicas); needs "
                         "`shards`")

    @field_validator("workers")
    @classmethod
    def _workers(cls, workers: Literal["auto"] | int) -> Literal["auto"] | int:
        if workers != "auto" and not 1 <= workers <= 256:
            raise ValueError("workers is auto or 1..256")
        return workers

    @model_validator(mode="after")
    def _index(self) -> ShardingSettings:
        workers = self.worker_count()
        if self.leases and (self.shards is None or self.workers != 1):
            raise ValueError("sharding.leases needs `shards` (the fixed total) and no "
                             "`workers` (a replica runs one worker per shard it claims)")
        if workers > 1 and self.shards is not None and self.shards != workers:
            raise ValueError(f"sharding.shards ({self.shards}) must equal the number of "
                             f"workers ({workers}): each worker runs one shard")
        if self.index is not None and self.index >= self.count():
            raise ValueError(f"sharding.index {self.index} is not below the number of shards "
                             f"({self.count()})")
        return self

    def worker_count(self) -> int:
        return (os.cpu_count() or 1) if self.workers == "auto" else self.workers

    def count(self) -> int:
        """The total number of shards."""
        return self.shards if self.shards is not None else self.worker_count()


def _not_builtin(schema: dict[str, Any]) -> None:
    """A plugin's ``type`` is none of the built-in ones (so that exactly one ``oneOf`` branch
    of the JSON schema matches a sink)."""
    schema["properties"]["type"]["not"] = {"enum": list(BUILTIN_SINKS)}


class PluginSinkSettings(SinkSettings):
    """A sink from a Python entry point (group ``kube_event_bridge.sinks``); its own options
    are validated by the plugin."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_not_builtin)


def _sink_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BUILTIN_SINKS else "plugin"


AnySink = Annotated[
    Annotated[JsonlSettings, Tag("jsonl")]
    | Annotated[KafkaSettings, Tag("kafka")]
    | Annotated[NatsSettings, Tag("nats")]
    | Annotated[NullSettings, Tag("null")]
    | Annotated[PluginSinkSettings, Tag("plugin")],
    Discriminator(_sink_tag),
]


class Config(Strict):
    cluster: str = Field("local", description="cluster name used in event `source`")
    kubeconfig: str | None = Field(None, description="path; absent = in-cluster service "
                                   "account, then $KUBECONFIG / ~/.kube/config")
    context: str | None = Field(None, description="kubeconfig context")
    http: HttpSettings = Field(default_factory=HttpSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    sinks: list[AnySink] = Field(description="where events go; at least one")
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    logging: LogSettings = Field(default_factory=LogSettings)
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    sharding: ShardingSettings = Field(default_factory=ShardingSettings)
    max_in_flight: int = Field(10_000, ge=1, description="events handed on and not yet "
                               "acknowledged; reading pauses when full (backpressure; a "
                               "network read already started may add its events on top)")
    shutdown_grace: float = Field(20.0, ge=0, description="seconds to flush on SIGTERM")

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, sinks: list[SinkSettings]) -> list[SinkSettings]:
        if not sinks:
            raise ValueError("no sinks configured: add at least one (e.g. "
                             '{name: out, type: jsonl, path: "-"})')
        seen: set[str] = set()
        for sink in sinks:
            if sink.name in seen:
                raise ValueError(f"duplicate sink name {sink.name!r}: names must be unique")
            seen.add(sink.name)
        return sinks

    @model_validator(mode="after")
    def _exactly_once(self) -> Config:
        """An exactly-once Kafka sink shares the checkpoint store's transactional producer:
        the store must be `kafka` on the same cluster; its TLS/SASL default to the sink's."""
        sinks = self.exactly_once_sinks()
        if not sinks:
            return self
        names = ", ".join(s.name for s in sinks)
        if len(sinks) > 1:
            raise ValueError(f"sinks {names}: at most one kafka sink may use delivery "
                             "exactly-once (its events and the checkpoint are committed in "
                             "one transaction)")
        sink, c = sinks[0], self.checkpoint
        if c.store != "kafka":
            raise ValueError(f"sink {names}: delivery exactly-once needs `checkpoint: {{store: "
                             f"kafka, bootstrap_servers: {sink.bootstrap_servers}}}` (the "
                             "checkpoint is committed in the same Kafka transaction as the "
                             f"events); the checkpoint store is {c.store!r}")
        if _servers(c.bootstrap_servers) != _servers(sink.bootstrap_servers):
            raise ValueError(f"sink {names}: delivery exactly-once needs the checkpoint on "
                             f"the same Kafka cluster: checkpoint.bootstrap_servers is "
                             f"{c.bootstrap_servers!r}, the sink's {sink.bootstrap_servers!r}")
        if c.tls is None and c.sasl is None:
            c.tls, c.sasl = sink.tls, sink.sasl
        elif (c.tls, c.sasl) != (sink.tls, sink.sasl):
            raise ValueError(f"sink {names}: delivery exactly-once shares one producer with "
                             "the checkpoint store, so checkpoint.tls/sasl must equal the "
                             "sink's (or be left out: they default to the sink's)")
        return self

    def exactly_once_sinks(self) -> list[KafkaSettings]:
        return [s for s in self.sinks
                if isinstance(s, KafkaSettings) and s.delivery == "exactly-once"]


def _servers(bootstrap: str) -> set[str]:
    return {server.strip() for server in bootstrap.split(",") if server.strip()}
