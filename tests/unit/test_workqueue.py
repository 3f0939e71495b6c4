"""The work queue: coalescing, one key never twice at once, backoff on failure."""

import threading
import time

import pytest

from daemonpool_operator.workqueue import Retry, WorkQueue


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
