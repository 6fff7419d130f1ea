"""A workload of creates, updates and deletes across several CRD kinds, recording the API
server's answers as the truth the auditor checks sinks against."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import dataclass, field

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.auditor import Truth
from tests.kubetools import crd_manifest, create_crd, ensure_namespace


@dataclass
class Kind:
    group: str
    plural: str
    kind: str
    namespaced: bool = True


@dataclass
class Workload:
    api: k8s.ApiClient
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespace: str = "keb-work"
    truth: Truth = field(default_factory=Truth)
    seed: int = 7

    def __post_init__(self) -> None:
        base = f"w{self.suffix}.keb.example.com"
        self.kinds = [Kind(f"alpha.{base}", "alphas", "Alpha"),
                      Kind(f"beta.gamma.{base}", "betas", "Beta"),
                      Kind(f"delta.{base}", "deltas", "Delta", namespaced=False)]
        self.include = f"*.{base}/*"
        self.objs = k8s.CustomObjectsApi(self.api)
        self.live: dict[tuple[int, str], str] = {}  # (kind index, name) -> uid
        self.rng = random.Random(self.seed)
        self.counter = 0

    def setup(self) -> None:
        ensure_namespace(self.api, self.namespace)
        for kind in self.kinds:
            create_crd(self.api, crd_manifest(
                kind.group, kind.plural, kind.kind,
                scope="Namespaced" if kind.namespaced else "Cluster"))

    # ---- single writes (sync; run them in threads) ----------------------------------------

    def _create(self, k: int, name: str) -> None:
        kind = self.kinds[k]
        body = {"apiVersion": f"{kind.group}/v1", "kind": kind.kind,
                "metadata": {"name": name}, "spec": {"n": self.counter}}
        if kind.namespaced:
            made = self.objs.create_namespaced_custom_object(kind.group, "v1", self.namespace,
                                                             kind.plural, body)
        else:
            made = self.objs.create_cluster_custom_object(kind.group, "v1", kind.plural, body)
        uid = made["metadata"]["uid"]
        self.live[(k, name)] = uid
        self.truth.wrote(uid, made["metadata"]["resourceVersion"])

    def _update(self, k: int, name: str) -> None:
        kind = self.kinds[k]
        body = {"spec": {"n": self.counter}}
        if kind.namespaced:
            made = self.objs.patch_namespaced_custom_object(kind.group, "v1", self.namespace,
                                                            kind.plural, name, body)
        else:
            made = self.objs.patch_cluster_custom_object(kind.group, "v1", kind.plural, name,
                                                         body)
        self.truth.wrote(self.live[(k, name)], made["metadata"]["resourceVersion"])

    def _delete(self, k: int, name: str) -> None:
        kind = self.kinds[k]
        if kind.namespaced:
            self.objs.delete_namespaced_custom_object(kind.group, "v1", self.namespace,
                                                      kind.plural, name)
        else:
            self.objs.delete_cluster_custom_object(kind.group, "v1", kind.plural, name)
        self.truth.delete(self.live.pop((k, name)))

    def step(self, objects_per_kind: int) -> None:
        """One random change: create a missing object, else mostly update, sometimes
        delete (names are reused, so re-creations get new uids)."""
        self.counter += 1
        k = self.rng.randrange(len(self.kinds))
        name = f"o{self.rng.randrange(objects_per_kind)}"
        try:
            if (k, name) not in self.live:
                self._create(k, name)
            elif self.rng.random() < 0.15:
                self._delete(k, name)
            else:
                self._update(k, name)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def probes(self) -> list[str]:
        """Create one more object of every kind now; returns the event ids they must produce
        (each kind is its own stream, and streams recover independently)."""
        ids = []
        for k in range(len(self.kinds)):
            name = f"probe{self.counter}"
            self.counter += 1
            self._create(k, name)
            uid = self.live[(k, name)]
            ids.append(f"{uid}/{self.truth.states[uid][-1]}")
        return ids

    async def run(self, changes: int, objects_per_kind: int = 10, pause: float = 0.0) -> None:
        for _ in range(changes):
            await asyncio.to_thread(self.step, objects_per_kind)
            if pause:
                await asyncio.sleep(pause)
