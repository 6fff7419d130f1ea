"""The watch engine's settings: per stream (``WatchOptions``) and per engine (``EngineOptions``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.sharding.assign import ShardFilter
from bridge.watch.backoff import Pacing
from bridge.watch.delta import DeltaType
from bridge.watch.noise import NoiseRules


@dataclass(frozen=True)
class WatchOptions:
    page_size: int = 500
    read_timeout: float = 120.0
    min_watch_timeout: int = 300  # server-side timeoutSeconds is jittered in [min, 2*min)
    initial: str = "snapshot"  # or "skip": first start records the inventory, emits nothing
    label_selector: str = ""
    field_selector: str = ""
    watch_list: bool = True  # try sendInitialEvents; falls back when the server refuses
    event_types: frozenset[DeltaType] = frozenset(DeltaType)
    noise: NoiseRules = field(default_factory=NoiseRules)  # updates recorded, not sent


@dataclass
class EngineOptions:
    watch: WatchOptions = field(default_factory=WatchOptions)
    max_in_flight: int = 10000
    list_concurrency: int = 8
    recheck_interval: float = 60.0
    versions: dict[str, str] = field(default_factory=dict)  # "plural.group" -> version
    journal: bool = False  # trackers keep their changes for a checkpoint writer's journal
    pacing: Pacing = field(default_factory=Pacing)
    # the API server counts as unreachable once every stream has failed for this long
    unreachable_after: float = 10.0
    shard: ShardFilter | None = None  # None: every stream, every object (no sharding)
