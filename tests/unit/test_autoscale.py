"""The autoscaler's decisions (operator/daemonpool_operator/autoscale.py), with literal oracles: each expected
number is worked out by hand from the documented formula, not computed by the code under test."""

import pytest

from daemonpool_operator import autoscale
from daemonpool_operator.model_autoscale import Autoscale

Signal = autoscale.Signal


def spec(**kw):
    kw.setdefault("maxPeers", 10)
    return Autoscale.model_validate(kw)


def st(state, inflight=None, capacity=1, seconds=0.0, **more):
    s = {"state": state, "seconds_in_state": seconds, "capacity": capacity, **more}
    if inflight is not None:
        s["inflight"] = inflight
    return s


def test_busy_counts_workers_worth_of_items_in_flight():
    states = [st("busy", 2, capacity=4), st("busy", 1, capacity=1), st("idle", 0, capacity=2), None, st("unknown")]
    sig = autoscale.busy_of(states)
    assert sig.busy == pytest.approx(1.5)  # 2/4 + 1/1 + 0/2; the silent and the unknown count nothing
    assert sig.answered == 4


@pytest.mark.parametrize(
    ("busy", "backlog", "per_worker", "expected"),
    [
        (0.0, None, None, 1),  # nothing to do: minPeers (1)
        (3.2, None, None, 4),  # 3.2 / 0.8 = 4 exactly (not 5 from 4.000000000000001)
        (3.3, None, None, 5),  # 4.125 -> 5
        (1.0, 95, 10, 10),  # backlog asks ceil(9.5) = 10, busy asks 2
        (1.0, 500, 10, 10),  # backlog asks 50: maxPeers 10
        (9.0, 5, 10, 10),  # busy asks ceil(11.25) = 12: maxPeers 10
    ],
)
def test_the_count_wanted_follows_the_documented_formula(busy, backlog, per_worker, expected):
    extra = {"backlog": {"source": "workers", "itemsPerWorker": per_worker}} if per_worker else {}
    want, why = autoscale.wanted(spec(**extra), Signal(busy=busy, answered=3, backlog=backlog))
    assert want == expected
    assert "busy" in why


def test_scale_up_is_at_once_but_waits_for_new_workers_to_answer_before_growing_more():
    a = spec(maxPeers=50, minPeers=0, backlog={"source": "http", "url": "http://q/backlog", "itemsPerWorker": 1})
    # From zero: at most scaleUpStep (4) at once.
    d = autoscale.decide(a, 0, Signal(0.0, 0, 40), [], now=100.0)
    assert (d.target, d.kind) == (4, "up")
    # The 4 have not answered yet: 0 + max(4, 0) = 4, kept.
    d = autoscale.decide(a, 4, Signal(0.0, 0, 40), [], now=101.0)
    assert (d.target, d.kind) == (4, "up-wait")
    # 4 answer: 4 + max(4, 4) = 8; 10 answer: 10 + 10 = 20; 20 answer: 40 (the backlog asks 40).
    assert autoscale.decide(a, 4, Signal(0.0, 4, 40), [], now=102.0).target == 8
    assert autoscale.decide(a, 10, Signal(0.0, 10, 40), [], now=103.0).target == 20
    assert autoscale.decide(a, 20, Signal(0.0, 20, 40), [], now=104.0).target == 40
    # 2 of 8 answer: 2 + max(4, 2) = 6 is below 8: kept at 8.
    assert autoscale.decide(a, 8, Signal(0.0, 2, 40), [], now=105.0).target == 8


def test_scale_down_waits_for_the_stable_window_and_goes_to_its_largest_want():
    a = spec(stableSeconds=60)
    history = [(0.0, 6), (30.0, 4), (50.0, 3)]
    # At t=55 the window (t >= -5) holds 6: keep 6.
    d = autoscale.decide(a, 6, Signal(1.0, 6, None), history, now=55.0)
    assert (d.target, d.kind) == (6, "window")
    # At t=70 the window (t >= 10) holds 4 and 3, and now's 2 (busy 1.0 / 0.8 -> 2): down to 4.
    d = autoscale.decide(a, 6, Signal(1.0, 6, None), history, now=70.0)
    assert (d.target, d.kind) == (4, "down")


def test_a_steady_load_keeps_the_count():
    a = spec()
    history = [(t, 5) for t in range(0, 100, 1)]
    d = autoscale.decide(a, 5, Signal(4.0, 5, None), history, now=100.0)  # 4 / 0.8 = 5
    assert (d.target, d.kind) == (5, "keep")


def test_a_count_outside_the_bounds_comes_back_within_them():
    a = spec(minPeers=2, maxPeers=4)
    assert autoscale.decide(a, 0, Signal(0.0, 0, None), [], now=0.0).target == 2
    d = autoscale.decide(a, 9, Signal(9.0, 9, None), [], now=0.0)
    assert (d.target, d.kind) == (4, "bounds")


def test_victims_are_idle_long_enough_not_draining_longest_idle_first():
    states = {
        "a": st("idle", 0, seconds=50.0),
        "b": st("idle", 0, seconds=5.0),  # idle, but not for 10 s
        "c": st("busy", 1, seconds=500.0),
        "d": st("idle", 0, seconds=80.0),
        "e": st("idle", 0, seconds=90.0, draining=True),
        "f": None,
        "g": st("unknown", seconds=1000.0),
        "h": st("idle", 0, seconds=50.0),
    }
    assert autoscale.victims(states, 2, idle_seconds=10) == ["d", "a"]
    assert autoscale.victims(states, 9, idle_seconds=10) == ["d", "a", "h"]
    assert autoscale.victims(states, 0, idle_seconds=10) == []


def test_the_backlog_workers_report_is_the_largest_as_they_share_one_queue():
    states = [st("idle", backlog=7), st("busy", 1, backlog=9), st("idle"), None]
    assert autoscale.workers_backlog(states) == 9
    assert autoscale.workers_backlog([st("idle"), None]) is None
