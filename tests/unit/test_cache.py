"""The cache's stamp (operator/daemonpool_operator/cache.py, World.stamp): it moves whenever anything kept for
a pool may have changed (the pool, its Deployment, a pod: set, dropped or listed away), stays put otherwise,
and is forgotten with the last thing kept for the pool. The autoscaler loads and parses a pool again only
when it moves."""

import json

import pytest

from daemonpool_operator import cache

KEY = ("ns", "p")


def pool(rv="1"):
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": rv}}


def deployment(rv="2"):
    return {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "d1",
            "resourceVersion": rv,
            "labels": {"daemonpool.dev/pool": "p"},
            "ownerReferences": [{"kind": "DaemonPool", "name": "p", "uid": "u1", "controller": True}],
        }
    }


def pod(rv="3", name="p-abc-1"):
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": f"pod-{name}",
            "resourceVersion": rv,
            "labels": {"daemonpool.dev/pool": "p", "pod-template-hash": "abc"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-abc", "controller": True}],
        },
        "status": {},
    }


def test_the_stamp_moves_on_every_change_and_only_then():
    w = cache.World()
    assert w.stamp(KEY) == 0
    w.set_pool(pool())
    seen = [w.stamp(KEY)]
    assert w.stamp(KEY) == seen[-1], "nothing changed: the same stamp"
    for change in (
        lambda: w.set_deployment(deployment()),
        lambda: w.set_pod(pod()),
        lambda: w.set_pod(pod(rv="4")),
        lambda: w.listed("pods", "ns", set(), "10"),  # a listing without the pod: dropped
        lambda: w.set_pool(pool(rv="5")),
    ):
        change()
        assert w.stamp(KEY) not in seen, "a change moves the stamp"
        seen.append(w.stamp(KEY))
    assert w.stamp(("ns", "other")) == 0


def test_the_stamp_goes_with_the_last_thing_kept():
    w = cache.World()
    w.set_pool(pool())
    w.set_deployment(deployment())
    w.drop_pool(pool())
    assert w.stamp(KEY) != 0, "the Deployment is still kept"
    w.drop_deployment(deployment())
    assert w.stamp(KEY) == 0 and w._stamps == {}


# -- what is kept, word for word; objects deleted and made again under the same name -------------------------
# Literal oracles from the cache's docstrings (a pod as status.py sees it, nothing else), written against the
# mutants hack/mutation found surviving: the pod summary's fields that status relies on, and the events of an
# object deleted and created again under the same name.


def full_pod():
    return {
        "metadata": {
            "name": "p-abc-1",
            "namespace": "ns",
            "uid": "pod-1",
            "resourceVersion": "9",
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "deletionTimestamp": "2026-12-01T11:00:00Z",
            "labels": {"daemonpool.dev/pool": "p", "pod-template-hash": "abc", "team": "x"},
            "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5", "note": "n"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-abc", "controller": True}],
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"containers": [{"name": "worker", "image": "img:1"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "hostIP": "10.0.0.1",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True", "reason": "r"},
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes", "x": 1},
            ],
            "initContainerStatuses": [
                {
                    "name": "init",
                    "image": "i:1",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "t"}},
                }
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "img:1",
                    "imageID": "sha",
                    "ready": True,
                    "restartCount": 3,
                    "started": True,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                    "lastState": {
                        "terminated": {"reason": "Error", "exitCode": 2, "message": "m" * 400, "startedAt": "t"}
                    },
                },
                {
                    "name": "side",
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {"terminated": {"exitCode": 0}},
                },
            ],
        },
    }


def test_a_pod_summary_word_for_word():
    assert cache.summarize_pod(full_pod()) == {
        "metadata": {
            "name": "p-abc-1",
            "labels": {"pod-template-hash": "abc"},
            "creationTimestamp": "2026-12-01T10:00:00Z",
            "deletionTimestamp": "2026-12-01T11:00:00Z",
            "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5"},
        },
        "status": {
            "podIP": "10.0.0.5",
            "phase": "Running",
            "ready": True,
            "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
            ],
            "initContainerStatuses": [
                {"name": "init", "image": "i:1", "restartCount": 0, "ready": False, "state": {"running": {}}}
            ],
            "containerStatuses": [
                {
                    "name": "worker",
                    "image": "img:1",
                    "restartCount": 3,
                    "ready": True,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 2, "message": "m" * 300}},
                },
                {
                    "name": "side",
                    "image": None,
                    "restartCount": 0,
                    "ready": False,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {"terminated": {"exitCode": 0}},
                },
            ],
        },
    }


def test_a_bare_pod_summary_keeps_only_its_name():
    assert cache.summarize_pod({"metadata": {"name": "x"}}) == {"metadata": {"name": "x"}, "status": {}}
    assert cache.summarize_pod({}) == {"metadata": {"name": None}, "status": {}}
    bare = {
        "metadata": {"name": "x", "labels": {"pod-template-hash": "h"}, "annotations": {"a": "b"}},
        "status": {
            "phase": "",
            "conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "w", "state": {"terminated": {"exitCode": 1}}}],
        },
    }
    assert cache.summarize_pod(bare) == {
        "metadata": {"name": "x", "labels": {"pod-template-hash": "h"}, "creationTimestamp": ""},
        "status": {
            "ready": False,
            "containerStatuses": [{"name": "w", "image": None, "restartCount": 0, "ready": False, "state": {}}],
        },
    }


def test_what_is_kept_of_a_pool_drops_managed_fields_and_the_last_applied_copy():
    w = cache.World()
    body = pool()
    body["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    body["metadata"]["annotations"] = {cache.LAST_APPLIED: "{...}", "keep": "me"}
    body["spec"] = {"peers": 2}
    w.set_pool(body)
    assert w.pool(KEY) == {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": "1",
            "annotations": {"keep": "me"},
        },
        "spec": {"peers": 2},
    }
    assert body["metadata"]["managedFields"] and cache.LAST_APPLIED in body["metadata"]["annotations"], "not edited"
    assert w._pools[KEY].data == json.dumps(w.pool(KEY), separators=(",", ":")).encode(), "compact JSON"
    only = pool()
    only["metadata"]["annotations"] = {cache.LAST_APPLIED: "{...}"}
    w.set_pool(only)
    assert w.pool(KEY)["metadata"]["annotations"] == {}


def test_the_sizes():
    w = cache.World()
    w.set_pool(pool())
    w.set_deployment(deployment())
    w.set_pod(pod())
    w.set_pod(pod(name="p-abc-2"))
    w.drop_pod(pod(name="p-abc-2"))
    assert w.sizes() == {"pools": 1, "deployments": 1, "pods": 1, "gone": 1}


def test_a_pool_deleted_and_made_again_under_the_same_name():
    w = cache.World()
    w.set_pool(pool())
    w.drop_pool(pool())
    assert w.pool(KEY) is None
    w.set_pool(pool(rv="7"))  # a late answer about the deleted one (same uid, newer rv): refused for good
    assert w.pool(KEY) is None
    again = pool(rv="8")
    again["metadata"]["uid"] = "u2"
    w.set_pool(again)
    assert w.pool(KEY)["metadata"]["uid"] == "u2"
    w.drop_pool(pool())  # the old one's DELETED again (a relist): the new one stays
    assert w.pool(KEY)["metadata"]["uid"] == "u2"
    older = pool(rv="6")
    older["metadata"]["uid"] = "u2"
    w.set_pool(older)  # an older event of the new one: the newer kept
    assert w.pool(KEY)["metadata"]["resourceVersion"] == "8"
    same = pool(rv="8")
    same["metadata"]["uid"] = "u2"
    same["spec"] = {"peers": 4}
    w.set_pool(same)  # the same version (a write's answer): the latest seen wins
    assert w.pool(KEY)["spec"] == {"peers": 4}
    opaque = pool(rv="x")
    opaque["metadata"]["uid"] = "u2"
    opaque["spec"] = {"peers": 5}
    w.set_pool(opaque)  # resourceVersions are opaque by contract: when in doubt, the latest seen wins
    assert w.pool(KEY)["spec"] == {"peers": 5}


def test_a_deployment_deleted_and_made_again_under_the_same_name():
    w = cache.World()
    w.set_deployment(deployment())
    w.drop_deployment(deployment())
    assert w.deployment(KEY) is None
    w.set_deployment(deployment(rv="5"))
    assert w.deployment(KEY) is None, "the deleted one's late answer"
    new = deployment(rv="6")
    new["metadata"]["uid"] = "d2"
    w.set_deployment(new)
    assert w.deployment(KEY)["metadata"]["uid"] == "d2"
    unlabelled = deployment()
    unlabelled["metadata"]["labels"] = {}
    assert w.set_deployment(unlabelled) is None and w.drop_deployment(unlabelled) is None


def test_a_pod_that_is_not_made_by_the_pools_replicasets_is_never_kept():
    w = cache.World()
    w.set_pod(pod())
    copycat = pod()  # same name and labels, but a bare pod: anybody can copy labels
    copycat["metadata"]["ownerReferences"] = []
    assert w.set_pod(copycat) == KEY and w.pods(KEY) == [] and w._pods == {}
    for ref in (
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-abc", "controller": False},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "p-abc", "controller": True},
        {"apiVersion": "v1", "kind": "ReplicaSet", "name": "p-abc", "controller": True},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-xyz", "controller": True},
    ):
        other = pod()
        other["metadata"]["ownerReferences"] = [ref]
        assert not cache.a_worker_of(other, "p"), ref
    first_wins = pod()
    first_wins["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-abc", "controller": True},
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-xyz", "controller": True},
    ]
    assert cache.a_worker_of(first_wins, "p")
    nohash = pod()
    del nohash["metadata"]["labels"]["pod-template-hash"]
    assert not cache.a_worker_of(nohash, "p") and not cache.a_worker_of({}, "p")
    w.set_pod(pod(name="p-abc-2"))
    w.set_pod({**copycat, "metadata": {**copycat["metadata"], "name": "p-abc-3"}})
    assert [p["metadata"]["name"] for p in w.pods(KEY)] == ["p-abc-2"], "the copycat dropped, the worker kept"


def test_a_pod_deleted_and_made_again_under_the_same_name():
    w = cache.World()
    w.set_pod(pod())
    w.drop_pod(pod())
    assert w.pods(KEY) == [] and w._pods == {}
    w.set_pod(pod(rv="9"))
    assert w.pods(KEY) == [], "the deleted one's late answer"
    again = pod(rv="10")
    again["metadata"]["uid"] = "pod-new"
    w.set_pod(again)
    w.drop_pod(pod())  # the old one's DELETED again: the new one stays
    assert [p["metadata"]["name"] for p in w.pods(KEY)] == ["p-abc-1"]
    assert w.drop_pod({"metadata": {"name": "x", "namespace": "ns"}}) is None


@pytest.mark.parametrize("kind", ["daemonpools", "deployments"])
def test_a_listing_drops_only_what_it_no_longer_has_and_is_not_newer(kind):
    w = cache.World()
    put = w.set_pool if kind == "daemonpools" else w.set_deployment
    get = w.pool if kind == "daemonpools" else w.deployment
    make = pool if kind == "daemonpools" else deployment
    put(make(rv="20"))
    assert w.listed(kind, "ns", set(), "19") == set() and get(KEY) is not None, "written since the listing"
    assert w.listed(kind, "other", set(), "30") == set() and get(KEY) is not None, "another namespace's listing"
    uid = "u1" if kind == "daemonpools" else "d1"
    assert w.listed(kind, "ns", {uid}, "30") == set() and get(KEY) is not None, "still listed"
    assert w.listed("customresourcedefinitions", None, set(), "30") == set() and get(KEY) is not None
    assert w.listed(kind, None, set(), "20") == {KEY} and get(KEY) is None, "as old as the listing: gone"
    put(make(rv="20"))
    assert get(KEY) is None, "remembered gone at the listing's version"
    put(make(rv="21"))
    assert get(KEY) is not None, "news newer than the listing brings it back"
    assert w.listed(kind, "ns", set(), None) == {KEY} and get(KEY) is None, "no listing version: dropped"
    put(make(rv="99"))
    assert get(KEY) is None, "and forgotten for good"


def test_a_listing_of_pods_keeps_the_pools_other_pods():
    w = cache.World()
    w.set_pod(pod(rv="5"))
    w.set_pod(pod(rv="50", name="p-abc-2"))
    assert w.listed("pods", "ns", set(), "10") == {KEY}
    assert [p["metadata"]["name"] for p in w.pods(KEY)] == ["p-abc-2"]
    assert w.listed("pods", "ns", set(), "60") == {KEY} and w._pods == {}


def test_gone_uids_are_remembered_within_a_bound_oldest_first():
    g = cache._Gone(size=2)
    g.add(None)
    assert len(g) == 0
    g.add("a")
    g.add("b", 5)
    g.add("a")  # seen again: the newest now
    g.add("c", 7)
    assert len(g) == 2 and list(g._at) == ["a", "c"]
    assert g.refuses({"metadata": {"uid": "a", "resourceVersion": "999"}}), "deleted: forever"
    assert not g.refuses({"metadata": {"uid": "b", "resourceVersion": "1"}}), "forgotten"
    assert g.refuses({"metadata": {"uid": "c", "resourceVersion": "7"}})
    assert g.refuses({"metadata": {"uid": "c", "resourceVersion": "x"}}), "an opaque version: refused"
    assert not g.refuses({"metadata": {"uid": "c", "resourceVersion": "8"}})
    assert not g.refuses({}) and cache._Gone()._size == 20000


def test_dropping_a_pod_of_a_pool_never_seen_and_the_stamps_of_pod_changes():
    w = cache.World()
    assert w.drop_pod(pod()) == KEY and w._pods == {}, "a DELETED for a pod never kept: nothing to do"
    w.set_pod(pod())
    assert w.pods(KEY) == [], "but remembered gone: its late news is refused"
    w.set_pool(pool())
    w.set_pod(pod(name="p-abc-2"))
    before = w.stamp(KEY)
    w.drop_pod(pod(name="p-abc-2"))
    assert w.stamp(KEY) != before, "a dropped pod moves its pool's stamp"
    w.set_pod(pod(name="p-abc-3"))
    before = w.stamp(KEY)
    copycat = pod(name="p-abc-3")
    copycat["metadata"]["ownerReferences"] = []
    w.set_pod(copycat)
    assert w.stamp(KEY) != before and w.stamp(None) == 0, "a worker turned copycat moves the stamp"


def test_a_listing_looks_at_every_kept_object_past_one_still_listed():
    w = cache.World()
    first, second = pool(rv="5"), pool(rv="6")
    second["metadata"].update(name="q", uid="u2")
    w.set_pool(first)
    w.set_pool(second)
    assert w.listed("daemonpools", "ns", {"u1"}, "10") == {("ns", "q")}
    assert w.pool(KEY) is not None and w.pool(("ns", "q")) is None


def test_a_kept_summary_is_compact_json():
    w = cache.World()
    w.set_pod(full_pod())
    data = w._pods[KEY]["p-abc-1"].data
    assert b", " not in data and b": " not in data and json.loads(data) == cache.summarize_pod(full_pod())
