"""Prometheus metrics (prefix ``kube_event_bridge_``; labels never carry object names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
_P = "kube_event_bridge_"

# ---- watching ------------------------------------------------------------------------------
events_observed = Counter(
    _P + "events_observed_total", "Changes observed by the watch engine",
    ["group", "kind", "type", "synthetic"], registry=REGISTRY)
watch_restarts = Counter(
    _P + "watch_restarts_total", "Watch connections re-opened, by reason",
    ["group", "kind", "reason"], registry=REGISTRY)
relists = Counter(
    _P + "relists_total", "Full re-lists (410 Gone, resume failures)",
    ["group", "kind", "reason"], registry=REGISTRY)
watched_kinds = Gauge(
    _P + "watched_kinds", "Streams currently being watched", registry=REGISTRY)
skipped_kinds = Gauge(
    _P + "skipped_kinds", "Kinds skipped because they are forbidden or vanished",
    ["reason"], registry=REGISTRY)
kind_skipped = Gauge(
    _P + "kind_skipped", "1 while the kind is skipped (forbidden or vanished; "
    "skipped_kinds says which); absent otherwise", ["group", "kind"], registry=REGISTRY)
api_requests = Counter(
    _P + "api_requests_total", "Requests made to the Kubernetes API server",
    ["verb", "code"], registry=REGISTRY)
stream_restarts = Counter(
    _P + "stream_restarts_total", "Streams restarted with backoff after a failure, by reason "
    "(connection, http_NNN, very_short_watch, malformed, error)",
    ["group", "kind", "reason"], registry=REGISTRY)
stream_up = Gauge(
    _P + "stream_up", "1 while every stream of the kind flows; 0 while one is failing, "
    "backing off, not flowing yet, or skipped", ["group", "kind"], registry=REGISTRY)
source_up = Gauge(
    _P + "source_up", "0 once every stream has failed continuously for longer than "
    "unreachable_after (the API server is unreachable), else 1", registry=REGISTRY)

events_suppressed = Counter(
    _P + "events_suppressed_total", "Updates a noise filter (watch.ignore_updates) recorded "
    "but did not send, by reason (status_only, pointers)",
    ["group", "kind", "reason"], registry=REGISTRY)

# ---- delivery ------------------------------------------------------------------------------
events_published = Counter(
    _P + "events_published_total", "Events durably acknowledged by a sink",
    ["sink", "kind", "type"], registry=REGISTRY)
events_failed = Counter(
    _P + "events_failed_total", "Failed event sends (each retry counts)",
    ["sink", "transient"], registry=REGISTRY)
dead_lettered = Counter(
    _P + "events_dead_lettered_total", "Events sent to a dead-letter destination",
    ["sink", "reason"], registry=REGISTRY)
oversized = Counter(
    _P + "events_oversized_total", "Events above the size limit, by outcome",
    ["outcome"], registry=REGISTRY)
publish_latency = Histogram(
    _P + "publish_latency_seconds", "Time for a sink to acknowledge one batch",
    ["sink"], registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
lag = Histogram(
    _P + "end_to_end_lag_seconds", "From observing a change to every sink acknowledging it "
    "(one sample per acknowledged batch: its oldest change)",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
in_flight = Gauge(
    _P + "events_in_flight", "Events handed to sinks and not yet acknowledged",
    registry=REGISTRY)
destination_missing = Gauge(
    _P + "sink_destination_missing", "1 while a sink's destination (Kafka topic, NATS stream) "
    "is missing (problem=missing) or its settings contradict the config "
    "(problem=contradicts): run `kube-event-bridge provision`",
    ["sink", "destination", "problem"], registry=REGISTRY)
sink_up = Gauge(
    _P + "sink_up", "1 while the sink accepts events, 0 while it fails", ["sink"],
    registry=REGISTRY)

is_leader = Gauge(
    _P + "is_leader", "1 while this instance holds the leader Lease (or runs without "
    "leader election)", registry=REGISTRY)
leader_transitions = Gauge(
    _P + "leader_transitions", "The leader Lease's spec.leaseTransitions as last read by this "
    "instance: how often leadership changed hands, cluster-wide", ["lease"], registry=REGISTRY)

# ---- checkpoints ---------------------------------------------------------------------------
checkpoint_saves = Counter(
    _P + "checkpoint_saves_total", "Checkpoint saves, by result", ["result"],
    registry=REGISTRY)
checkpoint_writes = Counter(
    _P + "checkpoint_writes_total", "Checkpoint store writes: journal segments and bases",
    ["kind"], registry=REGISTRY)
checkpoint_bytes = Counter(
    _P + "checkpoint_bytes_written_total", "Bytes written to the checkpoint store",
    ["kind"], registry=REGISTRY)
checkpoint_age = Gauge(
    _P + "checkpoint_age_seconds", "Seconds since the last successful checkpoint save",
    registry=REGISTRY)
synced_streams = Gauge(
    _P + "synced_streams", "Streams whose initial sync is complete", registry=REGISTRY)
transactions = Counter(
    _P + "transactions_total", "Kafka transactions of exactly-once sinks, by outcome "
    "(committed, aborted: an aborted one is retried)", ["sink", "result"], registry=REGISTRY)
transaction_events = Counter(
    _P + "transaction_events_total", "Events committed in Kafka transactions (re-sends after "
    "an abort count again)", ["sink"], registry=REGISTRY)
