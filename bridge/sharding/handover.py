"""Changing the number of shards: a new shard adopts its streams from the previous shards'
checkpoints (``sharding.previous``).

A shard whose own checkpoint is empty reads every checkpoint of the previous layout
(``<id>-shard-J-of-M``, or the unsharded ``<id>`` when ``previous`` is 1) and takes the
streams it owns now:

- a stream that was in one previous checkpoint and is not split keeps its position and
  inventory: it resumes where the previous shard stopped;
- a split (hot) kind, or a stream found in several previous checkpoints, gets the union of
  their inventories (for a split kind only the objects of the namespaces it owns now) and
  no position: it re-lists and diffs against what was delivered, so changes and deletions
  made meanwhile are sent, and nothing already delivered is repeated.

Its own checkpoint is written before anything is read (as at every start), so it adopts
once. The previous processes must be stopped first: a file store's lock refuses to open a
checkpoint another process holds (the start fails and is retried), the Kafka store fences
its previous writer; with the configmap and nats-kv stores, stop them first.
"""

from __future__ import annotations

import logging

from bridge.checkpoint.factory import build_store
from bridge.checkpoint.replay import restore
from bridge.config.model import Config
from bridge.kube.transport import Transport
from bridge.sharding.assign import ShardFilter
from bridge.watch.inventory import Inventory
from bridge.watch.tracker import StreamCheckpoint

log = logging.getLogger(__name__)


def previous_ids(base_id: str, previous: int) -> list[str]:
    if previous <= 1:
        return [base_id]
    return [base_id + ShardFilter(j, previous).suffix for j in range(previous)]


def kind_names(key: str, checkpoint: StreamCheckpoint) -> tuple[str, ...]:
    plural, _, group = key.partition("@")[0].partition(".")
    group = group or "core"
    return (f"{group}/{plural}", f"{group}/{checkpoint.kind}")


def adopt(previous: list[dict[str, StreamCheckpoint]],
          shard: ShardFilter) -> dict[str, StreamCheckpoint]:
    """The streams ``shard`` owns, from the previous shards' checkpoints."""
    sources: dict[str, list[StreamCheckpoint]] = {}
    for checkpoints in previous:
        for key, checkpoint in checkpoints.items():
            sources.setdefault(key, []).append(checkpoint)
    adopted: dict[str, StreamCheckpoint] = {}
    for key, found in sorted(sources.items()):
        split = shard.splits(kind_names(key, found[0]))
        if not split and not shard.owns_stream(key):
            continue
        if len(found) == 1 and not split:
            adopted[key] = found[0]
            continue
        inventory = Inventory()
        uncertain: set[str] = set()
        for checkpoint in found:
            uncertain |= checkpoint.uncertain
            for uid, entry in checkpoint.inventory.items():
                if not split or shard.owns_namespace(entry.namespace):
                    inventory.put(uid, entry)
        first = found[0]
        adopted[key] = StreamCheckpoint(
            None, max(c.sequence for c in found), inventory, first.version, first.kind,
            first.crd, uncertain)
    return adopted


async def adopt_previous(config: Config, transport: Transport,
                         shard: ShardFilter) -> dict[str, StreamCheckpoint]:
    """Read the previous layout's checkpoints (each store opened, read and closed) and
    adopt this shard's streams."""
    previous = config.sharding.previous
    assert previous is not None
    base_id = config.checkpoint.id.removesuffix(shard.suffix)
    loaded = []
    for old_id in previous_ids(base_id, previous):
        old = config.model_copy(update={"checkpoint": config.checkpoint.model_copy(
            update={"id": old_id})})
        store = build_store(old, transport)
        try:
            stored = await store.load()
            loaded.append(restore(stored.base, stored.segments))
        finally:
            await store.close()
    adopted = adopt(loaded, shard)
    log.info("shard %d/%d: adopted %d streams from the %d previous checkpoints (%s)",
             shard.index, shard.count, len(adopted), len(loaded),
             ", ".join(previous_ids(base_id, previous)))
    return adopted
