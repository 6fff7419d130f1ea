"""Sharding: which shard owns which stream (``assign``), and how shards run as worker
processes on one host (``bridge.workers``) or as replicas claiming shard Leases."""
