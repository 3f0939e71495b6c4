"""Idle-first scale-in: the deletion costs, from the workers' own answers. Pure."""

from daemonpool_operator import scalein


def test_idle_below_unknown_below_busy_longest_idle_lowest_longest_busy_highest():
    costs = {
        "idle-long": scalein.cost({"state": "idle", "seconds_in_state": 600}),
        "idle-short": scalein.cost({"state": "idle", "seconds_in_state": 0}),
        "unknown": scalein.cost(None),
        "stopping": scalein.cost({"state": "stopping", "seconds_in_state": 3}),
        "busy-short": scalein.cost({"state": "busy", "seconds_in_state": 1}),
        "busy-long": scalein.cost({"state": "busy", "seconds_in_state": 7200}),
    }
    order = sorted(costs, key=costs.get)
    assert order[:2] == ["idle-long", "idle-short"] and order[-2:] == ["busy-short", "busy-long"]
    assert costs["unknown"] == costs["stopping"] == 0
    assert all(-(2**31) <= c < 2**31 for c in costs.values())
    assert scalein.cost({"state": "busy", "seconds_in_state": 10**15}) == 1_000_039, "a trillion seconds at most"


def test_time_counts_on_a_doubling_scale():
    seconds = [0, 0.9, 1, 2.9, 3, 6.9, 7, 100, 600, 7200]
    assert [scalein.bucket(s) for s in seconds] == [0, 0, 1, 1, 2, 2, 3, 6, 9, 12]
    assert [scalein.cost({"state": "idle", "seconds_in_state": s}) for s in (0, 5, 30)] == [-1, -3, -5]
    assert scalein.cost({"state": "busy", "seconds_in_state": 100}) == 1_000_006
    assert scalein.cost({"state": "unknown", "seconds_in_state": 100}) == 0


def test_only_changed_live_pods_are_planned():
    pods = [
        {"metadata": {"name": "a", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-4"}}},
        {"metadata": {"name": "b"}},
        {"metadata": {"name": "c", "deletionTimestamp": "now"}},
    ]
    states = {
        "a": {"state": "idle", "seconds_in_state": 10},
        "b": {"state": "busy", "seconds_in_state": 2},
        "c": {"state": "idle", "seconds_in_state": 50},
    }
    assert scalein.plan_costs(pods, states) == {"b": 1_000_001}
    states["a"]["seconds_in_state"] = 14  # still on the same step of the doubling scale: not patched again
    assert scalein.plan_costs(pods, states) == {"b": 1_000_001}
