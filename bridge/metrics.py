"""Prometheus metrics (prefix ``kube_event_bridge_``; labels never carry object names)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry(auto_describe=True)
_P = "kube_event_bridge_"

events_observed = Counter(
    _P + "events_observed_total", "Changes observed by the watch engine",
    ["group", "kind", "type", "synthetic"], registry=REGISTRY,
)
watch_restarts = Counter(
    _P + "watch_restarts_total", "Watch connections re-opened, by reason",
    ["group", "kind", "reason"], registry=REGISTRY,
)
relists = Counter(
    _P + "relists_total", "Full re-lists (initial sync, 410 Gone, resume failures)",
    ["group", "kind", "reason"], registry=REGISTRY,
)
watched_kinds = Gauge(
    _P + "watched_kinds", "Streams currently being watched", registry=REGISTRY,
)
skipped_kinds = Gauge(
    _P + "skipped_kinds", "Kinds skipped because they are forbidden or vanished",
    ["reason"], registry=REGISTRY,
)
synced_kinds = Gauge(
    _P + "synced_kinds", "Streams whose initial list/resume is complete", registry=REGISTRY,
)
