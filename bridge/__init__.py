"""kube-event-bridge: Kubernetes custom resources to CloudEvents on Kafka and NATS."""

__version__ = "0.1.0"
