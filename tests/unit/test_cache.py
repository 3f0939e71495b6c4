"""The cache's stamp (operator/daemonpool_operator/cache.py, World.stamp): it moves whenever anything kept for
a pool may have changed (the pool, its Deployment, a pod: set, dropped or listed away), stays put otherwise,
and is forgotten with the last thing kept for the pool. The autoscaler loads and parses a pool again only
when it moves."""

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
