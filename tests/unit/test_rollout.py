"""Rollouts that never stop a busy old worker (operator/daemonpool_operator/rollout.py): which pods are old,
how many old pods the Deployment controller may remove at once, and when to hold. Literal oracles: the
figures are worked by hand from the Deployment controller's rules (ResolveFenceposts, reconcileOldReplicaSets)."""

from daemonpool_operator import rollout


def pod(name, h, created, ready=True):
    return {
        "metadata": {"name": name, "labels": {"pod-template-hash": h}, "creationTimestamp": created},
        "status": {"ready": ready},
    }


def test_no_rollout_no_old_pods():
    assert rollout.old_pods([pod("a", "h1", "2026-12-01T00:00:00Z"), pod("b", "h1", "2026-12-01T00:01:00Z")]) == []
    assert rollout.old_pods([]) == []


def test_the_new_replicaset_is_the_one_whose_first_pod_is_the_newest():
    pods = [
        pod("old-a", "h1", "2026-12-01T00:00:00Z"),
        pod("new-a", "h2", "2026-12-01T00:05:00Z"),
        # a scale-up in the middle of the rollout added a pod to the old ReplicaSet (proportional scaling):
        # it is the newest pod, but its ReplicaSet is still the old one
        pod("old-b", "h1", "2026-12-01T00:06:00Z"),
    ]
    assert [p["metadata"]["name"] for p in rollout.old_pods(pods)] == ["old-a", "old-b"]


def test_how_many_old_pods_the_controller_may_remove_at_once():
    assert rollout.removable_at_once({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, 4) == 1
    assert rollout.removable_at_once({"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 1}}, 4) == 3
    # 25 % of 10: surge rounds up (3), unavailable down (2); the API's defaults when unset
    assert rollout.removable_at_once({"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}, 10) == 5
    assert rollout.removable_at_once({}, 10) == 5
    # 10 % of 3: surge rounds up to 1, unavailable down to 0
    assert rollout.removable_at_once({"rollingUpdate": {"maxSurge": "10%", "maxUnavailable": "10%"}}, 3) == 1
    # both 0 after rounding: the controller takes maxUnavailable as 1
    assert rollout.removable_at_once({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "10%"}}, 3) == 1


def test_hold_while_a_busy_ready_old_worker_could_be_among_the_next_removed():
    old = [
        pod("busy-ready", "h1", "t"),
        pod("idle-ready", "h1", "t"),
        pod("finished", "h1", "t", ready=False),
        pod("silent", "h1", "t"),
    ]
    states = {
        "busy-ready": {"state": "busy"},
        "idle-ready": {"state": "idle"},
        "finished": {"state": "idle", "draining": True},
        "silent": None,
    }
    assert rollout.count_old(old, states) == (1, 2)  # a silent ready pod is neither
    assert rollout.hold(1, 2, 2) is False
    assert rollout.hold(1, 2, 3) is True
    assert rollout.hold(0, 0, 3) is False, "nothing busy: nothing to wait for"
    # a busy pod that is not ready is the first the ReplicaSet removes: nothing a hold would save, but it counts
    # as expendable only because it is going anyway; the runtime keeps a retiring busy worker ready
    assert rollout.count_old([pod("b", "h1", "t", ready=False)], {"b": {"state": "busy"}}) == (0, 1)


def test_held_only_when_paused_by_the_operator_and_the_patches():
    assert rollout.held({"spec": {"paused": True}, "metadata": {"annotations": {rollout.HELD: "x"}}})
    assert not rollout.held({"spec": {"paused": True}, "metadata": {}})
    assert not rollout.held({"spec": {}, "metadata": {"annotations": {rollout.HELD: "x"}}})
    assert not rollout.held(None)
    assert rollout.hold_patch(True) == {
        "metadata": {"annotations": {"daemonpool.dev/rollout-held": "busy old workers"}},
        "spec": {"paused": True},
    }
    patch = {"metadata": {"labels": {"a": "b"}}, "spec": {"replicas": 2}}
    assert rollout.release_patch(patch) == {
        "metadata": {"labels": {"a": "b"}, "annotations": {"daemonpool.dev/rollout-held": None}},
        "spec": {"replicas": 2, "paused": False},
    }
