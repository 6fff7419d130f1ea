"""The watch engine against the real kube-apiserver (issue: watch every CRD kind, losslessly)."""

from __future__ import annotations

import asyncio
import json

import pytest
from kubernetes import client as k8s

from bridge import metrics
from bridge.watch.delta import DeltaType
from bridge.watch.engine import EngineOptions
from bridge.watch.reflector import WatchOptions
from bridge.watch.selection import Selection
from bridge.watch.tracker import StreamCheckpoint
from tests.env.world import Endpoints, World, write_kubeconfig
from tests.integration.harness import Cluster, EngineRun, persisted, rv
from tests.kubetools import delete_crd, ensure_namespace
from tests.tcpproxy import TcpProxy

pytestmark = pytest.mark.world


@pytest.fixture
def cluster(kube: k8s.ApiClient) -> Cluster:
    for ns in ("keb-a", "keb-b"):
        ensure_namespace(kube, ns)
    return Cluster(kube)


def _summary(run: EngineRun, name: str) -> list[tuple[str, str, bool]]:
    return [(d.type.value, d.resource_version, d.synthetic) for d in run.of(name)]


async def test_exact_deltas_for_several_kinds(endpoints: Endpoints, cluster: Cluster) -> None:
    deep = cluster.group("deep.er.still")
    flat = cluster.group("flat")
    await cluster.crd(deep, "widgets", "Widget")
    await cluster.crd(flat, "realms", "Realm", scope="Cluster")
    async with EngineRun(endpoints.kubeconfig, cluster.selection()) as run:
        await run.synced()
        assert sorted(run.engine.stream_keys()) == [f"realms.{flat}", f"widgets.{deep}"]
        w1 = await cluster.create(deep, "widgets", "w1", "keb-a", size=1)
        r1 = await cluster.create(flat, "realms", "r1", size=1)
        w1b = await cluster.patch(deep, "widgets", "w1", "keb-a", size=2)
        w1c = await cluster.patch(deep, "widgets", "w1", "keb-a", size=3)
        r1b = await cluster.patch(flat, "realms", "r1", size=2)
        await cluster.delete(deep, "widgets", "w1", "keb-a")
        await cluster.delete(flat, "realms", "r1")
        await run.wait_for(lambda ds: sum(d.type.value == "deleted" for d in ds) == 2,
                           what="two deletions")
        await run.quiet(0.5)
        w1_deltas = _summary(run, "w1")
        assert [t for t, _, _ in w1_deltas] == ["added", "updated", "updated", "deleted"]
        assert [v for _, v, _ in w1_deltas[:3]] == [rv(w1), rv(w1b), rv(w1c)]
        assert not any(s for _, _, s in w1_deltas)
        r1_deltas = _summary(run, "r1")
        assert [(t, v) for t, v, _ in r1_deltas[:2]] == [("added", rv(r1)), ("updated", rv(r1b))]
        assert r1_deltas[2][0] == "deleted"
        w = run.of("w1")[0]
        assert (w.namespace, w.resource.group, w.resource.kind) == ("keb-a", deep, "Widget")
        assert run.of("r1")[0].namespace == ""
        assert [d.sequence for d in run.of("w1")] == sorted(d.sequence for d in run.of("w1"))


async def test_snapshot_on_first_start(endpoints: Endpoints, cluster: Cluster) -> None:
    group = cluster.group("snap")
    await cluster.crd(group, "items", "Item")
    made = [await cluster.create(group, "items", f"i{n}", "keb-a") for n in range(5)]
    options = EngineOptions(watch=WatchOptions(page_size=2))
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), options=options) as run:
        await run.synced()
        await run.quiet(0.3)
        assert sorted((d.name, d.type.value, d.synthetic, d.resource_version)
                      for d in run.deltas) == [
            (m["metadata"]["name"], "added", True, rv(m)) for m in made]
    skip = EngineOptions(watch=WatchOptions(initial="skip"))
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), options=skip) as run:
        await run.synced()
        await cluster.create(group, "items", "late", "keb-a")
        await run.wait_for(lambda ds: len(ds) >= 1, what="the live change")
        await run.quiet(0.3)
        assert [(d.name, d.synthetic) for d in run.deltas] == [("late", False)]


async def test_crd_created_at_run_time_and_deleted_with_objects(
        endpoints: Endpoints, cluster: Cluster, kube: k8s.ApiClient) -> None:
    first = cluster.group("first")
    await cluster.crd(first, "alphas", "Alpha")
    async with EngineRun(endpoints.kubeconfig, cluster.selection()) as run:
        await run.synced()
        later = cluster.group("later")
        await cluster.crd(later, "betas", "Beta")
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(5):
            while f"betas.{later}" not in run.engine.stream_keys():
                await asyncio.sleep(0.02)
        assert loop.time() - started < 5
        await run.synced()
        objs = [await cluster.create(later, "betas", f"b{n}", "keb-b") for n in range(3)]
        await run.wait_for(lambda ds: len(ds) >= 3, what="three adds")
        await asyncio.to_thread(delete_crd, kube, f"betas.{later}")
        await run.wait_for(
            lambda ds: {d.name for d in ds if d.type.value == "deleted"} == {"b0", "b1", "b2"},
            timeout=30, what="deletions of the deleted CRD's objects")
        async with asyncio.timeout(30):
            while f"betas.{later}" in run.engine.stream_keys():
                await asyncio.sleep(0.05)
        await run.quiet(0.5)
        for obj in objs:
            assert [d.type.value for d in run.of(obj["metadata"]["name"])] == [
                "added", "deleted"]
        assert f"alphas.{first}" in run.engine.stream_keys()


async def test_served_version_change_rewatches_without_loss_or_duplicates(
        endpoints: Endpoints, cluster: Cluster, kube: k8s.ApiClient) -> None:
    group = cluster.group("versioned")
    await cluster.crd(group, "gears", "Gear", versions=("v1",))
    async with EngineRun(endpoints.kubeconfig, cluster.selection()) as run:
        await run.synced()
        await cluster.create(group, "gears", "g1", "keb-a", size=1)
        await run.wait_for(lambda ds: len(ds) == 1, what="g1 added")
        ext = k8s.ApiextensionsV1Api(kube)
        crd = await asyncio.to_thread(ext.read_custom_resource_definition, f"gears.{group}")
        crd.spec.versions.append(k8s.V1CustomResourceDefinitionVersion(
            name="v2", served=True, storage=False,
            schema=crd.spec.versions[0].schema))
        await asyncio.to_thread(ext.replace_custom_resource_definition, f"gears.{group}", crd)
        async with asyncio.timeout(10):
            while [k.resource.version for k in run.engine.kinds if k.watched] != ["v2"]:
                await asyncio.sleep(0.05)
        await cluster.patch(group, "gears", "g1", "keb-a", size=2)
        await cluster.create(group, "gears", "g2", "keb-a", version="v2")
        await run.wait_for(lambda ds: len(ds) >= 3, what="changes after the version switch")
        await run.quiet(0.5)
        assert [(d.type.value, d.name) for d in run.deltas] == [
            ("added", "g1"), ("updated", "g1"), ("added", "g2")]
        assert run.deltas[-1].obj["apiVersion"] == f"{group}/v2"


async def checkpointed(endpoints: Endpoints, cluster: Cluster, group: str, plural: str,
                       kind: str, names: list[str]) -> dict[str, StreamCheckpoint]:
    """A CRD with objects in keb-a, snapshotted by an engine run: the checkpoint it saved."""
    await cluster.crd(group, plural, kind)
    for name in names:
        await cluster.create(group, plural, name, "keb-a")
    async with EngineRun(endpoints.kubeconfig, cluster.selection()) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) == len(names), what="snapshot")
        await run.quiet(0.3)
        return persisted(run.engine.checkpoints())


async def test_restart_from_checkpoint_emits_exactly_the_changes(
        endpoints: Endpoints, cluster: Cluster) -> None:
    group = cluster.group("resume")
    saved = await checkpointed(endpoints, cluster, group, "boxes", "Box",
                               [f"k{n}" for n in range(4)])
    before = max(cp.sequence for cp in saved.values())
    # bridge stopped: changes happen meanwhile
    changed = await cluster.patch(group, "boxes", "k1", "keb-a", size=9)
    await cluster.delete(group, "boxes", "k2", "keb-a")
    added = await cluster.create(group, "boxes", "k9", "keb-a")
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), saved) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) >= 3, what="the three changes")
        await run.quiet(0.5)
        assert [(d.type.value, d.name, d.synthetic) for d in run.deltas] == [
            ("updated", "k1", False), ("deleted", "k2", False), ("added", "k9", False)]
        assert [d.resource_version for d in run.deltas][0::2] == [rv(changed), rv(added)]
        assert run.deltas[0].sequence == before + 1


async def test_crd_deleted_while_stopped_has_its_objects_deletions_emitted_on_restart(
        endpoints: Endpoints, cluster: Cluster, kube: k8s.ApiClient) -> None:
    group = cluster.group("husk")
    saved = await checkpointed(endpoints, cluster, group, "husks", "Husk",
                               [f"h{n}" for n in range(3)])
    # bridge stopped: the CRD is deleted, and with it its objects
    await asyncio.to_thread(delete_crd, kube, f"husks.{group}")
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), saved) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) >= 3, what="the three deletions")
        await run.quiet(0.5)
        assert sorted((d.type.value, d.name, d.synthetic, d.resource.kind)
                      for d in run.deltas) == [("deleted", f"h{n}", True, "Husk")
                                               for n in range(3)]
        assert len(persisted(run.engine.checkpoints())[f"husks.{group}"].inventory) == 0
        assert f"husks.{group}" not in run.engine.stream_keys()


async def test_restart_after_gap_emits_the_final_state_diff(
        endpoints: Endpoints, cluster: Cluster, world: World) -> None:
    group = cluster.group("gap")
    await cluster.crd(group, "crates", "Crate")
    for n in range(5):
        await cluster.create(group, "crates", f"c{n}", "keb-b", size=n)
    async with EngineRun(endpoints.kubeconfig, cluster.selection()) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) == 5, what="snapshot")
        await run.quiet(0.3)
        saved = persisted(run.engine.checkpoints())
        last = {d.name: d.resource_version for d in run.deltas}
    await cluster.patch(group, "crates", "c0", "keb-b", size=10)
    final_c0 = await cluster.patch(group, "crates", "c0", "keb-b", size=11)
    await cluster.patch(group, "crates", "c1", "keb-b", size=12)
    await cluster.delete(group, "crates", "c1", "keb-b")
    await cluster.delete(group, "crates", "c2", "keb-b")
    c5 = await cluster.create(group, "crates", "c5", "keb-b")
    await asyncio.to_thread(world.gap)
    async with EngineRun(endpoints.kubeconfig, cluster.selection(), saved) as run:
        await run.synced()
        await run.wait_for(lambda ds: len(ds) >= 4, what="the diff")
        await run.quiet(0.5)
        got = sorted((d.type.value, d.name, d.synthetic, d.resource_version)
                     for d in run.deltas)
        assert got == sorted([
            ("updated", "c0", True, rv(final_c0)),
            ("deleted", "c1", True, last["c1"]),
            ("deleted", "c2", True, last["c2"]),
            ("added", "c5", True, rv(c5)),
        ])
        gone = next(d for d in run.deltas if d.name == "c2")
        assert gone.obj["metadata"]["namespace"] == "keb-b"
        assert gone.obj["kind"] == "Crate"


async def test_forbidden_kind_is_skipped_while_others_flow(
        endpoints: Endpoints, cluster: Cluster, kube: k8s.ApiClient, world: World) -> None:
    allowed, denied = cluster.group("allowed"), cluster.group("denied")
    await cluster.crd(allowed, "oks", "Ok")
    await cluster.crd(denied, "nopes", "Nope")
    user = f"keb-watcher-{cluster.suffix}"
    rbac = k8s.RbacAuthorizationV1Api(kube)
    rbac.create_cluster_role({"metadata": {"name": user}, "rules": [
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [allowed], "resources": ["*"], "verbs": ["get", "list", "watch"]}]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": user},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
        "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]})
    options = EngineOptions(recheck_interval=3600)
    async with EngineRun(world.user_kubeconfig(user), cluster.selection(), None,
                         options) as run:
        await run.synced()
        await cluster.create(allowed, "oks", "fine", "keb-a")
        await cluster.create(denied, "nopes", "hidden", "keb-a")
        await run.wait_for(lambda ds: len(ds) >= 1, what="the allowed kind's event")
        await run.quiet(0.5)
        assert [d.name for d in run.deltas] == ["fine"]
        status = {k.resource.plural: k for k in run.engine.kinds}
        assert not status["nopes"].watched and status["nopes"].reason == "forbidden"
        assert status["oks"].watched
        # what the alerts tell apart: a skipped kind is not a kind that stopped flowing
        sample = metrics.REGISTRY.get_sample_value
        skipped = {"group": denied, "kind": "Nope"}
        assert sample("kube_event_bridge_kind_skipped", skipped) == 1
        assert sample("kube_event_bridge_stream_up", skipped) == 0
        assert sample("kube_event_bridge_kind_skipped", {"group": allowed, "kind": "Ok"}) is None


async def test_watch_cut_and_apiserver_restart_lose_nothing(
        endpoints: Endpoints, cluster: Cluster, world: World) -> None:
    """Cut connections replay from the last resourceVersion seen: every intermediate state
    arrives once. An API server restart (its watch cache starts empty) loses nothing and
    repeats nothing either."""
    group = cluster.group("cut")
    await cluster.crd(group, "links", "Link")
    port = int(endpoints.apiserver_url.rsplit(":", 1)[1])
    expected: dict[str, list[str]] = {}

    async def write(n: int, name: str) -> None:
        if name not in expected:
            obj = await cluster.create(group, "links", name, "keb-a", n=n)
        else:
            obj = await cluster.patch(group, "links", name, "keb-a", n=n)
        expected.setdefault(name, []).append(rv(obj))

    async def caught_up(run: EngineRun) -> None:
        total = sum(len(v) for v in expected.values())
        await run.wait_for(lambda ds: len(ds) >= total, timeout=60, what=f"{total} changes")
        await run.quiet(0.5)

    async with TcpProxy("127.0.0.1", port) as proxy:
        admin = world.admin_kubeconfig()
        user = json.loads(admin.read_text())["users"][0]["user"]
        kubeconfig = write_kubeconfig(admin.with_name("kubeconfig-proxy"),
                                      f"https://127.0.0.1:{proxy.port}", endpoints.ca_file, user)
        async with EngineRun(kubeconfig, cluster.selection()) as run:
            await run.synced()
            for n in range(40):
                await write(n, f"l{n % 5}")
                if n % 7 == 3:
                    await proxy.cut()
                    await asyncio.sleep(0.2 * (n % 3))  # cut before, during and after resume
            await caught_up(run)
            assert proxy.cuts >= 5
            await asyncio.to_thread(world.restart, "kube-apiserver")
            # the restarted server's watch cache starts at "now": once a probe written after
            # the restart arrives, the bridge is watching again and must see every change
            await cluster.create(group, "links", "probe", "keb-a")
            await run.wait_for(lambda ds: any(d.name == "probe" for d in ds), timeout=60,
                               what="the probe")
            for n in range(40, 50):
                await write(n, f"l{n % 5}")
            await caught_up(run)
            for name, rvs in expected.items():
                assert [d.resource_version for d in run.of(name)] == rvs, name


async def test_namespace_label_and_event_type_filters(endpoints: Endpoints,
                                                      cluster: Cluster) -> None:
    group = cluster.group("filters")
    await cluster.crd(group, "knobs", "Knob")
    await cluster.crd(group, "globals", "Global", scope="Cluster")
    options = EngineOptions(watch=WatchOptions(
        label_selector="team=blue", event_types=frozenset({DeltaType.ADDED,
                                                           DeltaType.DELETED})))
    selection = Selection(include=cluster.selection().include, namespaces=("keb-a",))
    async with EngineRun(endpoints.kubeconfig, selection, options=options) as run:
        await run.synced()
        # one stream per namespace for namespaced kinds; cluster-scoped kinds stay one stream
        assert sorted(run.engine.stream_keys()) == [f"globals.{group}",
                                                    f"knobs.{group}@keb-a"]
        for ns in ("keb-a", "keb-b"):
            body = {"apiVersion": f"{group}/v1", "kind": "Knob",
                    "metadata": {"name": f"k-{ns}", "labels": {"team": "blue"}}}
            await asyncio.to_thread(cluster.objs.create_namespaced_custom_object, group, "v1",
                                    ns, "knobs", body)
        red = {"apiVersion": f"{group}/v1", "kind": "Knob",
               "metadata": {"name": "red", "labels": {"team": "red"}}}
        await asyncio.to_thread(cluster.objs.create_namespaced_custom_object, group, "v1",
                                "keb-a", "knobs", red)
        await cluster.patch(group, "knobs", "k-keb-a", "keb-a", size=2)  # updates filtered out
        await cluster.delete(group, "knobs", "k-keb-a", "keb-a")
        await run.wait_for(lambda ds: any(d.type is DeltaType.DELETED for d in ds),
                           what="the deletion")
        await run.quiet(0.5)
        assert [(d.type.value, d.name) for d in run.deltas] == [
            ("added", "k-keb-a"), ("deleted", "k-keb-a")]
