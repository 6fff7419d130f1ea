"""Synthetic but realistic watch traffic: 1-2 KB custom objects over several kinds."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

GROUP = "bench.example.com"
KINDS = [("widgets", "Widget"), ("gadgets", "Gadget"), ("gizmos", "Gizmo"),
         ("doohickeys", "Doohickey")]


def make_object(plural: str, kind: str, n: int, rv: int, uid: str, rng: random.Random,
                ) -> dict[str, Any]:
    labels = {f"label-{i}": f"value-{rng.randrange(1000)}" for i in range(4)}
    return {
        "apiVersion": f"{GROUP}/v1", "kind": kind,
        "metadata": {
            "name": f"{plural}-{n:06d}", "namespace": f"team-{n % 20}", "uid": uid,
            "resourceVersion": str(rv), "generation": 1 + rv % 7,
            "creationTimestamp": "2026-11-22T00:00:00Z", "labels": labels,
            "annotations": {"owner": "bench", "note": "x" * rng.randrange(100, 400)},
            "managedFields": [{"manager": "kubectl", "operation": "Apply",
                               "apiVersion": f"{GROUP}/v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:spec": {"f:replicas": {}}}}],
        },
        "spec": {"replicas": rng.randrange(1, 9), "image": f"registry/app:{rv % 97}",
                 "env": [{"name": f"VAR_{i}", "value": "v" * 20} for i in range(8)],
                 "resources": {"cpu": "250m", "memory": "256Mi"}},
        "status": {"ready": bool(rv % 2), "observedGeneration": rv % 7,
                   "conditions": [{"type": "Ready", "status": "True",
                                   "lastTransitionTime": "2026-11-22T00:00:00Z"}]},
    }


def watch_lines(events: int, objects_per_kind: int = 500, seed: int = 1,
                start_rv: int = 2) -> dict[str, list[bytes]]:
    """Per collection path, newline-free JSON watch events (ADDED, then MODIFIED mostly,
    some DELETED); each object ~1.5 KB."""
    rng = random.Random(seed)
    out: dict[str, list[bytes]] = {f"/apis/{GROUP}/v1/{p}": [] for p, _ in KINDS}
    live: dict[tuple[int, int], str] = {}
    rv = start_rv
    for _ in range(events):
        k = rng.randrange(len(KINDS))
        n = rng.randrange(objects_per_kind)
        plural, kind = KINDS[k]
        uid = live.get((k, n))
        if uid is None:
            uid = str(uuid.UUID(int=rng.getrandbits(128)))
            live[(k, n)] = uid
            kind_of_event = "ADDED"
        elif rng.random() < 0.05:
            del live[(k, n)]
            kind_of_event = "DELETED"
        else:
            kind_of_event = "MODIFIED"
        obj = make_object(plural, kind, n, rv, uid, rng)
        out[f"/apis/{GROUP}/v1/{plural}"].append(
            orjson.dumps({"type": kind_of_event, "object": obj}))
        rv += 1
    return out
