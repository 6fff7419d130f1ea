"""Build the configured checkpoint store."""

from __future__ import annotations

from bridge.checkpoint.configmap import ConfigMapStore
from bridge.checkpoint.file import FileStore
from bridge.checkpoint.kafkastore import KafkaStore
from bridge.checkpoint.natskv import NatsKvStore
from bridge.checkpoint.store import CheckpointStore
from bridge.config.model import Config
from bridge.kube.transport import Transport
from sinks.kafka import producer_options
from sinks.nats_security import NatsAuth


def build_store(config: Config, transport: Transport) -> CheckpointStore:
    c = config.checkpoint
    if c.store == "configmap":
        return ConfigMapStore(transport, c.namespace, c.id)
    if c.store == "kafka":
        shared = [producer_options(sink, config.events.max_bytes)
                  for sink in config.exactly_once_sinks()]  # its producer is the store's
        return KafkaStore(c.bootstrap_servers, c.topic, c.id, tls=c.tls, sasl=c.sasl,
                          replication_factor=c.replication_factor,
                          min_insync_replicas=c.min_insync_replicas,
                          producer_options=shared[0] if shared else None)
    if c.store == "nats-kv":
        return NatsKvStore(c.url, c.bucket, c.id, auth=NatsAuth(
            tls=c.tls, creds_file=c.creds_file, nkey_seed_file=c.nkey_seed_file))
    return FileStore(c.path, f"{c.id}.checkpoint")
