"""The work queue: coalescing, one key never twice at once, backoff on failure."""

import threading
import time

import pytest

from daemonpool_operator.workqueue import Retry, WorkQueue

from testkit.clock import Clock


def test_a_key_added_many_times_is_processed_once():
    seen = []
    q = WorkQueue(seen.append)
    for _ in range(100):
        q.add("a")
    q.add("b")
    assert q.drain() == 2 and seen == ["a", "b"]


def test_a_key_added_while_processing_runs_again_after_never_concurrently():
    running, overlaps, runs = set(), [], []
    gate = threading.Event()

    def process(key):
        if key in running:
            overlaps.append(key)
        running.add(key)
        runs.append(key)
        if len(runs) == 1:
            q.add(key)  # an event while this key is being reconciled
            gate.wait(2)
        running.discard(key)

    q = WorkQueue(process, threads=3)
    q.start()
    q.add("a")
    time.sleep(0.2)
    gate.set()
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    q.stop()
    assert runs == ["a", "a"] and overlaps == []


def test_failures_back_off_per_key_and_success_forgets_them():
    now = [0.0]
    calls = []

    def process(key):
        calls.append(now[0])
        if len(calls) < 4:
            raise RuntimeError("API down")

    q = WorkQueue(process, base=1.0, cap=3.0, clock=lambda: now[0])
    q.add("a")
    for _ in range(20):
        q.drain()
        now[0] += 0.5
    assert calls == [0.0, 1.0, 3.0, 6.0], "1 s, 2 s, then capped at 3 s"
    assert q._failures == {}


def test_retry_with_a_delay_is_scheduled_then():
    now = [0.0]
    calls = []

    def process(key):
        calls.append(now[0])
        if len(calls) == 1:
            raise Retry("appeared while creating", 5)

    q = WorkQueue(process, clock=lambda: now[0])
    q.add("a")
    q.drain()
    now[0] = 4.9
    assert q.drain() == 0
    now[0] = 5.0
    assert q.drain() == 1 and calls == [0.0, 5.0]


def test_delayed_adds_coalesce_into_one():
    now = [0.0]
    seen = []
    q = WorkQueue(seen.append, clock=lambda: now[0])
    for _ in range(50):
        q.add_after("a", 0.5)
    assert q.drain() == 0
    now[0] = 0.5
    assert q.drain() == 1 and seen == ["a"]
    q.add("b")
    q.add_after("b", 0.5)  # already queued now: nothing more
    now[0] = 2.0
    assert q.drain() == 1


def test_retries_of_all_keys_share_one_token_bucket_beside_the_per_key_backoff():
    """Before: per-key backoff only; 500 failing pools were retried 500 times within half a second."""
    now = [0.0]

    def fail(key):
        raise Retry("api down")

    q = WorkQueue(fail, base=0.5, cap=60.0, clock=lambda: now[0], qps=10.0, burst=3)
    for k in range(6):
        q.add(k)
    assert q.drain() == 6
    when = sorted(w for w, _, _ in q._later)
    # 3 from the burst at the per-key 0.5 s; then one token every 0.1 s: 0.1, 0.2, 0.3 s late, but never
    # sooner than the per-key backoff of 0.5 s.
    assert when == [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    for k in range(6, 12):
        q.add(k)
    assert q.drain() == 6
    later = sorted(w for w, _, _ in q._later)[6:]
    assert later == pytest.approx([0.5, 0.5, 0.6, 0.7, 0.8, 0.9]), "the bucket, not the backoff, decides here"


# -- on a fake clock, figure for figure --------------------------------------------------------------------
# Literal oracles worked from the docstring's rules (client-go's per-item exponential backoff and its token
# bucket), written against the mutants hack/mutation found surviving.


def scheduled(q):
    """(seconds from now, key) of every scheduled retry, soonest first."""
    return sorted((round(when - q._clock(), 6), key) for when, _, key in q._later)


def test_the_defaults():
    q = WorkQueue(lambda k: None)
    assert (q._threads_wanted, q._base, q._cap, q._qps, q._burst) == (4, 0.5, 60.0, 10.0, 100)
    assert (q._seq, q._stopped, q._on_error, q.processed, len(q), q.depth) == (0, False, None, 0, 0, 0)
    assert str(Retry("why", 3)) == "why" and Retry("why", 3).delay == 3 and Retry("x").delay is None


def test_backoff_doubles_from_half_a_second_to_the_cap_and_a_success_forgets():
    clock, outcomes = Clock(100.0), []

    def process(key):
        if outcomes.pop(0):
            raise RuntimeError("no")

    q = WorkQueue(process, clock=clock, base=0.5, cap=3.0)
    delays = []
    outcomes[:] = [True] * 5 + [False, True]
    for _ in range(7):
        q.add("a")
        assert q.process_one()
        delays.append(scheduled(q))
        q._later.clear(), q._scheduled.clear()
    assert delays == [[(0.5, "a")], [(1.0, "a")], [(2.0, "a")], [(3.0, "a")], [(3.0, "a")], [], [(0.5, "a")]]


def test_errors_go_to_on_error_with_their_key():
    errors = []
    boom = RuntimeError("boom")

    def process(key):
        raise boom

    q = WorkQueue(process, on_error=lambda k, e: errors.append((k, e)), clock=Clock(100.0))
    q.add("k")
    q.process_one()
    assert errors == [("k", boom)]
    q2 = WorkQueue(lambda k: (_ for _ in ()).throw(Retry("later", 7.5)), on_error=errors.append, clock=Clock(100.0))
    q2.add("r")
    q2.process_one()
    assert errors == [("k", boom)] and scheduled(q2) == [(7.5, "r")], "a Retry is not an error"


def test_the_retry_bucket_refills_at_qps_up_to_its_burst():
    clock = Clock(100.0)
    q = WorkQueue(lambda k: None, clock=clock, qps=2.0, burst=3)
    assert [q._bucket_delay() for _ in range(5)] == [0.0, 0.0, 0.0, 0.5, 1.0]
    clock.t += 1.0  # two tokens back: the debt of 2 is paid, none left over
    assert q._bucket_delay() == 0.5
    clock.t += 100.0  # full again, never more than the burst
    assert [q._bucket_delay() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_a_retry_waits_for_the_larger_of_its_backoff_and_the_bucket():
    clock = Clock(100.0)

    def process(key):
        raise Retry("again", 0.25)

    q = WorkQueue(process, clock=clock, qps=1.0, burst=1)
    for key in ("a", "b"):
        q.add(key)
        q.process_one()
    assert scheduled(q) == [(0.25, "a"), (1.0, "b")], "b's token comes in 1 s"


def test_scheduled_keys_come_due_in_order_and_the_get_waits_no_longer_than_needed():
    clock, seen = Clock(100.0), []
    q = WorkQueue(seen.append, clock=clock)
    q.add_after("late", 5)
    q.add_after("soon", 2)
    q.add_after("soon", 1)  # already scheduled: nothing
    q.add_after("now", 0)  # not later: at once
    q.add_after("past", -1)
    assert len(q) == 4 and q.depth == 2 and q._seq == 2
    assert q.drain() == 2 and seen == ["now", "past"]
    assert q._promote_due() == 2.0, "seconds until the next one"
    clock.t += 2.0
    assert q._promote_due() == 3.0 and q.depth == 1
    clock.t += 3.0
    assert q._promote_due() is None and q.drain() == 2 and seen == ["now", "past", "soon", "late"]
    waits = []
    q._cv.wait = lambda t=None: waits.append(t) or setattr(clock, "t", clock.t + t)
    q.add_after("x", 4)
    assert q._get(timeout=1.5) is None and waits == [1.5], "the timeout is shorter than the next key"
    waits.clear()
    assert q._get(timeout=30) == "x" and waits == [2.5], "the next key (2.5 s on) is sooner than the timeout"


def test_a_key_waiting_now_is_not_scheduled_too_but_one_being_processed_is():
    clock = Clock(100.0)
    q = WorkQueue(lambda k: q.add_after("a", 3), clock=clock)
    q.add("a")
    q.add_after("a", 3)
    assert scheduled(q) == [], "already waiting now: that reconcile covers it"
    q.process_one()  # while processing, the reconcile asks to see it again in 3 s
    assert scheduled(q) == [(3.0, "a")]


def test_discard_forgets_a_key_everywhere_and_only_that_key():
    clock = Clock(100.0)
    fails = {"a": 1}

    def process(key):
        if fails.get(key):
            fails[key] -= 1
            raise RuntimeError("x")

    q = WorkQueue(process, clock=clock)
    q.add("a")
    q.process_one()
    q.add_after("b", 9)
    q.add("c")
    q.add("a")
    q.discard("a")
    assert scheduled(q) == [(9.0, "b")] and list(q._queue) == ["c"] and "a" not in q._failures
    assert "a" not in q._scheduled and "a" not in q._dirty
    q.add_after("a", 1)
    assert scheduled(q) == [(1.0, "a"), (9.0, "b")], "a discarded key can be scheduled again"
    q.discard("zzz")
    assert len(q) == 3


def test_forget_drops_only_the_failures():
    q = WorkQueue(lambda k: (_ for _ in ()).throw(RuntimeError("x")), clock=Clock(100.0))
    q.add("a")
    q.process_one()
    assert q._failures == {"a": 1}
    q.forget("a")
    assert q._failures == {} and scheduled(q) == [(0.5, "a")]


def test_drain_stops_at_its_limit_and_counts_progress():
    clock, seen = Clock(100.0), []
    q = WorkQueue(seen.append, clock=clock)
    for k in "abcde":
        q.add(k)
    clock.t = 555.0
    assert q.drain(limit=3) == 3 and seen == ["a", "b", "c"] and q.processed == 3 and q.last_progress == 555.0
    assert q.drain() == 2 and q.drain() == 0


def test_start_runs_the_reconcile_threads_and_stop_ends_them():
    seen = []
    q = WorkQueue(seen.append, threads=3)
    assert not q.started
    q.start()
    q.start()  # twice: the same threads
    assert q.started and [t.name for t in q._threads] == [f"daemonpool-reconcile-{i}" for i in range(3)]
    assert all(t.daemon for t in q._threads)
    q.add("a")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    q.stop()
    assert q._stopped is True
    for t in q._threads:
        t.join(5)
        assert not t.is_alive()
    assert seen == ["a"] and q.process_one() is False, "a stopped queue hands out nothing"


def test_a_get_with_under_a_second_left_still_waits_for_a_key_due_sooner():
    clock = Clock(100.0)
    q = WorkQueue(lambda k: None, clock=clock)
    waits = []
    q._cv.wait = lambda t=None: waits.append(t) or setattr(clock, "t", clock.t + t)
    q.add_after("x", 0.25)
    assert q._get(timeout=0.5) == "x" and waits == [0.25]
    waits.clear()
    assert q._get(timeout=0.5) is None and waits == [0.5], "nothing scheduled: the whole timeout"


def test_a_key_that_came_due_is_queued_once_however_often_it_is_added():
    clock, seen = Clock(100.0), []
    q = WorkQueue(seen.append, clock=clock)
    q.add_after("a", 1)
    clock.t += 1
    q._promote_due()
    q.add("a")
    q.add("a")
    assert list(q._queue) == ["a"] and q.drain() == 1 and seen == ["a"]


def test_process_one_by_default_does_not_wait():
    clock = Clock(100.0)
    q = WorkQueue(lambda k: None, clock=clock)
    waits = []
    q._cv.wait = lambda t=None: waits.append(t) or setattr(clock, "t", clock.t + (t or 0))
    assert q.process_one() is False and waits == []
