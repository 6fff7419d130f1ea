"""One shard's view of the configuration: its own checkpoint (and so its own Kafka
transactional id), its stream filter."""

from __future__ import annotations

from bridge.config.model import Config
from bridge.sharding.assign import ShardFilter


def for_shard(config: Config, index: int, count: int) -> Config:
    """``config`` as shard ``index`` of ``count`` runs it (one process, one shard)."""
    suffix = ShardFilter(index, count).suffix
    checkpoint = config.checkpoint.model_copy(update={"id": config.checkpoint.id + suffix})
    sharding = config.sharding.model_copy(update={"index": index, "shards": count,
                                                  "workers": 1})
    return config.model_copy(update={"checkpoint": checkpoint, "sharding": sharding})


def shard_filter(config: Config) -> ShardFilter | None:
    """The stream filter of a config made by ``for_shard`` (None: not a shard, every
    stream)."""
    s = config.sharding
    if s.index is None or s.count() <= 1:
        return None
    return ShardFilter(s.index, s.count(), tuple(s.split))
