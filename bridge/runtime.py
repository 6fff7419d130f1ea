"""Process-wide tuning for the hot path, applied once the daemon (or a benchmark) has started.

The watch path allocates many short-lived, acyclic containers (parsed JSON objects) that
reference counting frees at once, yet with CPython's default thresholds the cyclic garbage
collector runs a generation-0 pass every ~30 events and keeps re-scanning everything in
flight. Freezing what start-up created (modules, config, clients) and raising the
thresholds cut the collector's share of the CPU; measured with ``make bench``
(docs/benchmarks.md).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # start-up objects move to the permanent generation: never scanned again
    gc.set_threshold(*GC_THRESHOLDS)
