"""One shard's view of the configuration: its own checkpoint (and so its own Kafka
transactional id), its stream filter and, for replicas, its own Lease."""

from __future__ import annotations

from bridge.config.model import Config
from bridge.sharding.assign import ShardFilter


def for_shard(config: Config, index: int, count: int) -> Config:
    """``config`` as shard ``index`` of ``count`` runs it (one process, one shard)."""
    suffix = ShardFilter(index, count).suffix
    checkpoint = config.checkpoint.model_copy(update={"id": config.checkpoint.id + suffix})
    sharding = config.sharding.model_copy(update={"index": index, "shards": count,
                                                  "workers": 1, "leases": False})
    update: dict[str, object] = {"checkpoint": checkpoint, "sharding": sharding}
    if config.sharding.leases:  # the shard is held through its own Lease
        le = config.leader_election
        update["leader_election"] = le.model_copy(update={
            "enabled": True, "name": f"{le.name}-shard-{index}"})
    return config.model_copy(update=update)


def shard_filter(config: Config) -> ShardFilter | None:
    """The stream filter of a config made by ``for_shard`` (None: not a shard, every
    stream)."""
    s = config.sharding
    if s.index is None or s.count() <= 1:
        return None
    return ShardFilter(s.index, s.count(), tuple(s.split))
