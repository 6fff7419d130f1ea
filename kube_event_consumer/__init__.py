"""kube-event-consumer: an informer over the bus for kube-event-bridge's consumers.

It reads the bridge's CloudEvents from Kafka (``kube_event_consumer.kafka.KafkaSource``,
needs aiokafka) or NATS JetStream (``kube_event_consumer.nats.NatsSource``, needs nats-py),
deduplicates them, checks each object's order, keeps a materialized view of the current
objects and calls ``on_added / on_updated / on_deleted`` handlers, committing after them.
Guide: docs/consumers.md.
"""

from kube_event_consumer.decode import decode_kafka, decode_nats
from kube_event_consumer.errors import ConsumerError, DecodeError, HandlerError, SourceError
from kube_event_consumer.event import ChangeType, Event, ObjectKey, Tombstone
from kube_event_consumer.informer import Anomaly, Change, Handler, Informer, Stats
from kube_event_consumer.source import Batch, Commit, Message, Source
from kube_event_consumer.view import View

__all__ = [
    "Anomaly", "Batch", "Change", "ChangeType", "Commit", "ConsumerError", "DecodeError", "Event",
    "Handler", "HandlerError", "Informer", "Message", "ObjectKey", "Source", "SourceError",
    "Stats", "Tombstone", "View", "decode_kafka", "decode_nats",
]
