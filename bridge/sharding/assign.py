"""Stable assignment of streams (and of a hot kind's namespaces) to shards.

Rendezvous (highest-random-weight) hashing: a key belongs to the shard whose weight
``blake2b(shard, key)`` is highest. The weight of a (shard, key) pair never depends on the
number of shards, so going from N to N+1 shards moves only the keys the new shard now wins
(about 1/(N+1) of them, all to the new shard), and removing a shard moves only its own keys.
``blake2b`` is stable across processes and Python versions (``hash()`` is salted per
process, so two workers would disagree).

A stream's key is the engine's stream key: ``plural.group``, or ``plural.group@namespace``
with ``watch.namespaces``. A *split* (hot) kind is watched by every shard; each records and
emits only the objects whose namespace it owns (key ``ns:<namespace>``, cluster-scoped
objects: ``ns:``). An object never changes namespace, so its changes stay on one shard, in
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from hashlib import blake2b


def weight(shard: int, key: str) -> int:
    """The stable weight of ``key`` on ``shard`` (64 bits)."""
    digest = blake2b(f"{shard}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, shards: int) -> int:
    """The shard (0 .. shards-1) that owns ``key``."""
    if shards <= 1:
        return 0
    return max(range(shards), key=lambda shard: weight(shard, key))


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N), with 0 <= I < N."""
    index, sep, count = text.partition("/")
    if not sep or not index.isdigit() or not count.isdigit():
        raise ValueError(f"{text!r} is not INDEX/COUNT (e.g. 0/4)")
    i, n = int(index), int(count)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {text!r}: the index must be in 0..COUNT-1")
    return i, n


@dataclass
class ShardFilter:
    """What shard ``index`` of ``count`` watches and records. ``split``: globs over
    ``group/plural`` or ``group/Kind`` (core group ``core``) of the hot kinds spread by
    namespace."""

    index: int
    count: int
    split: tuple[str, ...] = ()
    _namespaces: dict[str, bool] = field(default_factory=dict, repr=False)

    def splits(self, kind_names: tuple[str, ...]) -> bool:
        """Whether a kind (named by its ``group/plural`` and ``group/Kind``) is split."""
        return any(fnmatchcase(name, pattern) for name in kind_names for pattern in self.split)

    def owns_stream(self, key: str) -> bool:
        return owner(key, self.count) == self.index

    def owns_namespace(self, namespace: str) -> bool:
        """Whether this shard records the objects of ``namespace`` of a split kind
        (cached: called for every change)."""
        owned = self._namespaces.get(namespace)
        if owned is None:
            owned = self._namespaces[namespace] = owner(f"ns:{namespace}",
                                                        self.count) == self.index
        return owned

    @property
    def suffix(self) -> str:
        """Appended to the checkpoint id: each shard has its own checkpoint."""
        return f"-shard-{self.index}-of-{self.count}"
