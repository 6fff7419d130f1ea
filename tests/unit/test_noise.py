"""Noise filters: rules, pointer removal, the generation test, digests in the inventory and
the journal, and the reflector suppressing updates (live and after a gap)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from bridge.app import engine_options
from bridge.checkpoint.codec import decode_segment, encode_segments
from bridge.config.model import Config
from bridge.kube.resources import Resource
from bridge.metrics import REGISTRY
from bridge.watch.delta import DeltaType
from bridge.watch.inventory import Entry, Inventory
from bridge.watch.noise import IMPLIED, NoiseFilter, NoiseRule, NoiseRules, without
from bridge.watch.tracker import Record, StreamCheckpoint
from tests.unit.fakeapi import FakeApi
from tests.unit.test_reflector import PATH, THINGS, running, settle

PODS = Resource("", "v1", "pods", "Pod", True)
HEARTBEAT = "/status/conditions/*/lastHeartbeatTime"
LAST_APPLIED = "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration"


def thing(generation: int | None = 1, **status: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "a", "uid": "u1", "resourceVersion": "10",
                            "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                                            "{}", "team": "x"},
                            "managedFields": [{"manager": "kubectl"}]}
    if generation is not None:
        meta["generation"] = generation
    return {"apiVersion": "x.example.com/v1", "kind": "Thing", "metadata": meta,
            "spec": {"size": 1},
            "status": {"phase": "Ready", **status,
                       "conditions": [{"type": "Ready", "lastHeartbeatTime": "t0"},
                                      {"type": "Synced", "lastHeartbeatTime": "t0"}]}}


def entry_of(noise: NoiseFilter, obj: dict[str, Any]) -> Entry:
    return Entry(obj["metadata"]["resourceVersion"], "", "a", noise.fingerprint(obj))


def suppressed(reason: str, kind: str = "Thing", group: str = "x.example.com") -> float:
    return REGISTRY.get_sample_value("kube_event_bridge_events_suppressed_total", {
        "group": group, "kind": kind, "reason": reason}) or 0.0


# ---- rules ---------------------------------------------------------------------------------


def test_rules_match_the_globs_of_watch_exclude_and_merge() -> None:
    rules = NoiseRules((NoiseRule("x.example.com/things", pointers=(HEARTBEAT,)),
                        NoiseRule("*/Thing", status_only=True),
                        NoiseRule("core/pods", pointers=("/status",))))
    merged = rules.for_resource(THINGS)
    assert merged is not None and merged.status_only
    assert merged.pointers == tuple(sorted({HEARTBEAT, *IMPLIED}))
    pods = rules.for_resource(PODS)
    assert pods is not None and not pods.status_only
    assert rules.for_resource(Resource("apps", "v1", "deployments", "Deployment", True)) is None
    # status_only alone needs no digest (nor the implied pointers)
    only = NoiseRules((NoiseRule("*", status_only=True),)).for_resource(THINGS)
    assert only is not None and only.pointers == ()
    assert only.fingerprint(thing(generation=3)) == "3/"


def test_config_rules_reach_the_watch_options() -> None:
    config = Config.model_validate({
        "sinks": [{"name": "out", "type": "null"}],
        "watch": {"ignore_updates": [{"kind": "*.example.com/*", "status_only": True},
                                     {"kind": "core/Node", "pointers": [HEARTBEAT]}]}})
    noise = engine_options(config).watch.noise
    assert noise == NoiseRules((NoiseRule("*.example.com/*", True, ()),
                                NoiseRule("core/Node", False, (HEARTBEAT,))))


@pytest.mark.parametrize("rule", [{"kind": "*"}, {"kind": "*", "pointers": ["status"]}])
def test_a_rule_without_a_test_or_with_a_bad_pointer_is_invalid(rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"status_only|JSON pointer"):
        Config.model_validate({"sinks": [{"name": "out", "type": "null"}],
                               "watch": {"ignore_updates": [rule]}})


# ---- pointer removal ------------------------------------------------------------------------


def test_pointer_removal_copies_along_the_path_and_never_mutates() -> None:
    obj = thing()
    before = copy.deepcopy(obj)
    out = without(obj, ("metadata", "annotations", "kubectl.kubernetes.io/last-applied-"
                        "configuration"))
    assert out["metadata"]["annotations"] == {"team": "x"}
    assert out["spec"] is obj["spec"]  # untouched branches are shared
    assert obj == before


def test_pointer_removal_of_array_elements_and_wildcards() -> None:
    obj = thing()
    conditions = without(obj, ("status", "conditions", "*", "lastHeartbeatTime"))
    assert conditions["status"]["conditions"] == [{"type": "Ready"}, {"type": "Synced"}]
    first = without(obj, ("status", "conditions", "0"))
    assert first["status"]["conditions"] == [{"type": "Synced", "lastHeartbeatTime": "t0"}]
    assert "status" not in without(obj, ("status", "*"))
    for missing in (("nope", "x"), ("status", "conditions", "7"), ("spec", "size", "deeper"),
                    ("status", "conditions", "x")):
        assert without(obj, missing) is obj


# ---- fingerprints and the tests --------------------------------------------------------------


def test_status_only_compares_the_generation() -> None:
    noise = NoiseFilter(THINGS, status_only=True, pointers=())
    old = entry_of(noise, thing(generation=4))
    assert noise.reason(old, entry_of(noise, thing(generation=4, phase="Failed"))) == \
        "status_only"
    assert noise.reason(old, entry_of(noise, thing(generation=5))) is None


def test_objects_without_a_generation_are_always_sent() -> None:
    noise = NoiseFilter(PODS, status_only=True, pointers=())
    old = entry_of(noise, thing(generation=None))
    assert old.digest == "/"
    assert noise.reason(old, entry_of(noise, thing(generation=None, phase="x"))) is None


def test_pointers_ignore_only_the_listed_differences() -> None:
    noise = NoiseRules((NoiseRule("*", pointers=(HEARTBEAT, LAST_APPLIED)),)).for_resource(
        THINGS)
    assert noise is not None
    base = thing()
    old = entry_of(noise, base)
    beat = thing()
    beat["metadata"]["resourceVersion"] = "11"  # implied
    beat["metadata"]["managedFields"] = [{"manager": "kubelet"}]  # implied
    beat["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{1}"
    beat["status"]["conditions"][1]["lastHeartbeatTime"] = "t9"
    assert noise.reason(old, entry_of(noise, beat)) == "pointers"
    for change in ({"phase": "Failed"},):
        assert noise.reason(old, entry_of(noise, thing(**change))) is None
    labelled = thing()
    labelled["metadata"]["annotations"]["team"] = "y"
    assert noise.reason(old, entry_of(noise, labelled)) is None


def test_unknown_previous_state_is_sent() -> None:
    noise = NoiseFilter(THINGS, status_only=True, pointers=())
    current = entry_of(noise, thing())
    assert noise.reason(None, current) is None
    assert noise.reason(Entry("9", "", "a"), current) is None  # a record without a digest


def test_a_changed_pointer_list_never_matches_an_old_digest() -> None:
    one = NoiseFilter(THINGS, status_only=False, pointers=("/status",))
    two = NoiseFilter(THINGS, status_only=False, pointers=("/status", "/spec"))
    assert one.fingerprint(thing()) != two.fingerprint(thing())
    assert two.reason(entry_of(one, thing()), entry_of(two, thing())) is None


# ---- where the digest lives --------------------------------------------------------------------


def test_the_inventory_keeps_digests_only_where_given() -> None:
    inv = Inventory()
    inv.put("u1", Entry("10", "ns", "a", "4/0123456789abcdef"))
    inv.put("u2", Entry("11", "ns", "b"))
    back = Inventory.loads(inv.dumps())
    assert back.get("u1") == Entry("10", "ns", "a", "4/0123456789abcdef")
    assert back.get("u2") == Entry("11", "ns", "b", "")
    plain, digested = Inventory(), Inventory()
    plain.put("u", Entry("10", "ns", "a"))
    digested.put("u", Entry("10", "ns", "a", "4/0123456789abcdef"))
    assert len(digested.dumps()) - len(plain.dumps()) == len("\x004/0123456789abcdef")


def test_journal_rows_carry_the_digest_only_where_given() -> None:
    records = [Record(1, "u1", Entry("10", "", "a", "2/ab"), "10"),
               Record(2, "u2", Entry("11", "", "b"), "11"), Record(3, "u1", None, "12")]
    [segment] = encode_segments([("things", None, records)], limit=10_000)
    [(key, _, intents)] = list(decode_segment(segment))
    assert key == "things"
    assert intents == [(1, "u1", Entry("10", "", "a", "2/ab")), (2, "u2", Entry("11", "", "b")),
                       (3, "u1", None)]
    assert b'"11","","b"]' in segment  # no empty digest written


def test_segments_with_digests_stay_within_the_limit() -> None:
    records = [Record(i, f"u{i:04d}", Entry(str(i), "", f"n{i}", "12/0123456789abcdef"), None)
               for i in range(1000)]
    segments = encode_segments([("things", None, records)], limit=10_000)
    assert len(segments) > 3 and all(len(s) < 11_000 for s in segments)


# ---- the reflector -----------------------------------------------------------------------------


async def touch(api: FakeApi, uid: str, change: Any) -> None:
    """A MODIFIED event after ``change`` edited the stored object."""
    change(api.objects[PATH][uid])
    await api.update(PATH, uid)


def status(obj: dict[str, Any], value: str) -> None:
    obj["status"] = {"phase": value}


async def test_status_only_updates_are_recorded_and_acked_not_sent() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    a = await api.create(PATH, "a")
    uid = a["metadata"]["uid"]
    a["metadata"]["generation"] = 1
    rules = NoiseRules((NoiseRule("x.example.com/Thing", status_only=True),))
    before = suppressed("status_only")
    async with running(api, noise=rules) as (reflector, out):
        await settle(out, 1)
        await touch(api, uid, lambda o: status(o, "Ready"))
        await touch(api, uid, lambda o: status(o, "Busy"))

        def bump(o: dict[str, Any]) -> None:
            o["spec"]["size"] = 2
            o["metadata"]["generation"] = 2

        await touch(api, uid, bump)
        await settle(out, 2)
        await api.delete(PATH, uid)
        await settle(out, 3)
        assert out.summary() == [("added", "a", True), ("updated", "a", False),
                                 ("deleted", "a", False)]
        assert out.deltas[1].obj["spec"]["size"] == 2
        tracker = reflector.tracker
        assert tracker.in_flight == 0
        assert tracker.committed.sequence == 5  # the suppressed updates committed too
        assert tracker.committed.resource_version == str(api.rv)
    assert suppressed("status_only") - before == 2


async def test_a_suppressed_update_still_moves_the_inventory() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    a = await api.create(PATH, "a")
    uid = a["metadata"]["uid"]
    a["metadata"]["generation"] = 1
    rules = NoiseRules((NoiseRule("*", pointers=("/status",)),))
    async with running(api, noise=rules) as (reflector, out):
        await settle(out, 1)
        await touch(api, uid, lambda o: status(o, "Ready"))
        await asyncio.sleep(0.1)
        entry = reflector.tracker.committed.inventory.get(uid)
        assert entry is not None and entry.resource_version == str(api.rv)
        assert entry.digest.startswith("/")  # pointers only: no generation kept
        assert out.summary() == [("added", "a", True)]


@pytest.mark.parametrize("watch_list", [True, False])
async def test_a_gap_diff_sends_no_update_whose_only_change_is_ignored(
        watch_list: bool) -> None:
    api = FakeApi(watch_list=watch_list)
    api.objects[PATH] = {}
    objs = [await api.create(PATH, name) for name in "abc"]
    uids = [o["metadata"]["uid"] for o in objs]
    rules = NoiseRules((NoiseRule("*", pointers=("/status",)),))
    async with running(api, noise=rules) as (reflector, out):
        await settle(out, 3)
        checkpoint = reflector.tracker.committed
    saved = StreamCheckpoint(checkpoint.resource_version, checkpoint.sequence,
                             checkpoint.inventory.copy())
    await touch(api, uids[0], lambda o: status(o, "Ready"))
    await api.update(PATH, uids[1], size=5)
    await api.delete(PATH, uids[2])
    api.compact()  # the resume answers 410: re-list and diff
    before = suppressed("pointers")
    async with running(api, saved, noise=rules) as (reflector, out):
        await settle(out, 2)
        assert sorted(out.summary()) == [("deleted", "c", True), ("updated", "b", True)]
        entry = reflector.tracker.committed.inventory.get(uids[0])
        assert entry is not None and entry.resource_version == objs[0]["metadata"][
            "resourceVersion"]
    assert suppressed("pointers") - before == 1


async def test_adds_and_deletes_are_never_suppressed_and_other_kinds_keep_no_digest() -> None:
    api = FakeApi()
    api.objects[PATH] = {}
    rules = NoiseRules((NoiseRule("*", pointers=("/spec", "/metadata/name")),))
    async with running(api, noise=rules) as (reflector, out):
        await asyncio.sleep(0.1)
        a = await api.create(PATH, "a")
        b = await api.create(PATH, "b")
        await api.delete(PATH, a["metadata"]["uid"])
        await settle(out, 3)
        assert [d.type for d in out.deltas] == [DeltaType.ADDED, DeltaType.ADDED,
                                                DeltaType.DELETED]
        assert reflector.tracker.get(b["metadata"]["uid"]) is not None
    other = NoiseRules((NoiseRule("core/*", status_only=True),))
    async with running(api, noise=other) as (reflector, out):
        await settle(out, 1)
        assert reflector.noise is None
        entry = reflector.tracker.get(b["metadata"]["uid"])
        assert entry is not None and entry.digest == ""


def test_an_object_emptied_by_the_removal_counts_as_absent() -> None:
    obj = {"metadata": {"name": "a"}, "status": {"heartbeatTime": "t1"}}
    assert without(obj, ("status", "heartbeatTime")) == {"metadata": {"name": "a"}}
    kept = {"status": {"heartbeatTime": "t1", "phase": "x"}}
    assert without(kept, ("status", "heartbeatTime")) == {"status": {"phase": "x"}}
