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
    assert scalein.cost({"state": "busy", "seconds_in_state": 10**12}) == 2**31 - 1


def test_only_changed_live_pods_are_planned():
    pods = [
        {"metadata": {"name": "a", "annotations": {"controller.kubernetes.io/pod-deletion-cost": "-11"}}},
        {"metadata": {"name": "b"}},
        {"metadata": {"name": "c", "deletionTimestamp": "now"}},
    ]
    states = {
        "a": {"state": "idle", "seconds_in_state": 10},
        "b": {"state": "busy", "seconds_in_state": 2},
        "c": {"state": "idle", "seconds_in_state": 50},
    }
    assert scalein.plan_costs(pods, states) == {"b": 1_000_002}
