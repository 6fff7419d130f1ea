"""Settings every single-node test broker shares (the plain one and the secured one)."""

from __future__ import annotations

from pathlib import Path


def single_node(data: Path, *, auto_create: bool) -> list[str]:
    """``server.properties`` lines for storage, internal topics and threads of a one-broker
    KRaft cluster (replication 1)."""
    return [
        f"log.dirs={data}",
        "num.partitions=3",
        f"auto.create.topics.enable={str(auto_create).lower()}",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=3",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=3",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2",
        "num.io.threads=4",
        "log.retention.hours=24",
    ]
