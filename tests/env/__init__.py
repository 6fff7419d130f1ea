"""The local test world: real kube-apiserver + etcd, Kafka and NATS on loopback."""
