"""Leader election over a Lease, against a fake Lease store with compare-and-swap, on a fake clock."""

import copy
import datetime
import logging
import os
import re
import time

import pytest

from daemonpool_operator import kube, leader, metrics


class Leases:
    def __init__(self):
        self.obj, self.rv, self.down = None, 0, set()

    def _check(self, who):
        if who in self.down:
            raise kube.Transient("API unreachable", 1)

    def get(self, ns, name):
        return copy.deepcopy(self.obj)

    def create(self, ns, body):
        if self.obj is not None:
            return None
        self.rv += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)

    def replace(self, ns, name, body):
        if body["metadata"].get("resourceVersion") != self.obj["metadata"]["resourceVersion"]:
            return None  # 409: someone wrote it meanwhile
        self.rv += 1
        self.obj = copy.deepcopy(body)
        self.obj["metadata"]["resourceVersion"] = str(self.rv)
        return copy.deepcopy(self.obj)


@pytest.fixture
def world(monkeypatch):
    store, now = Leases(), [0.0]
    current = {"who": None}

    def wrap(fn):
        def call(*a):
            store._check(current["who"])
            return fn(*a)

        return call

    monkeypatch.setattr(kube, "get_lease", wrap(store.get))
    monkeypatch.setattr(kube, "create_lease", wrap(store.create))
    monkeypatch.setattr(kube, "replace_lease", wrap(store.replace))
    return store, now, current


def elector(name, now, events):
    return leader.Elector(
        "ns",
        "lease",
        name,
        clock=lambda: now[0],
        on_started=lambda: events.append(("started", name)),
        on_lost=lambda: events.append(("lost", name)),
    )


def step(e, current):
    current["who"] = e.identity
    e.step()


def advance_until(what, done, now, current, *electors, most=50):
    """Renewal rounds on the fake clock until ``done()``: bounded, so an elector that never steps down (or
    never takes over) fails here, naming what did not happen, instead of spinning until the tier's timeout."""
    for _ in range(most):
        if done():
            return
        now[0] += leader.RETRY_SECONDS
        for e in electors:
            step(e, current)
    raise AssertionError(f"{what}: not after {most} rounds of {leader.RETRY_SECONDS} s")


def two_candidates(world):
    """a and b try once, a first: a leads, b waits."""
    store, now, current = world
    events = []
    a, b = elector("a", now, events), elector("b", now, events)
    step(a, current)
    step(b, current)
    return store, now, current, events, a, b


def test_one_leader_a_hot_standby_and_a_takeover_after_the_lease_expires(world):
    store, now, current, events, a, b = two_candidates(world)
    assert events == [("started", "a")] and a.fresh() and not b.fresh()
    for _ in range(5):  # a renews every 2 s; b keeps waiting
        now[0] += leader.RETRY_SECONDS
        step(a, current)
        step(b, current)
    assert store.obj["spec"]["holderIdentity"] == "a" and events == [("started", "a")]
    store.down.add("a")  # a loses the API server
    t_cut = now[0]
    advance_until("a steps down", lambda: ("lost", "a") in events, now, current, a, b)
    assert now[0] - t_cut >= leader.RENEW_DEADLINE_SECONDS and not a.fresh(), "a stops writing before anyone takes over"
    assert ("started", "b") not in events, "b waits out the whole lease"
    advance_until("b takes over", lambda: ("started", "b") in events, now, current, b)
    assert now[0] - t_cut >= leader.LEASE_SECONDS
    assert store.obj["spec"]["holderIdentity"] == "b" and store.obj["spec"]["leaseTransitions"] == 1


def test_writes_are_fenced_to_a_fresh_leader(world, monkeypatch):
    store, now, current = world
    e = elector("a", now, [])
    monkeypatch.setattr(kube, "FENCE", kube.Fence())
    kube.FENCE.guard(e.fresh)
    with pytest.raises(kube.NotLeader):
        kube._call("create", "creating Deployment ns/x", lambda *a, **k: None)
    step(e, current)
    assert e.fresh()
    now[0] += leader.RENEW_DEADLINE_SECONDS
    assert not e.fresh(), "an unrenewed lease stops the writes at the deadline"


def test_a_released_lease_is_taken_at_once(world):
    store, now, current, events, a, b = two_candidates(world)
    current["who"] = "a"
    a.release()
    assert not a.fresh() and store.obj["spec"]["holderIdentity"] is None
    step(b, current)
    assert ("started", "b") in events, "no 15 s wait after a clean handover"


def test_a_release_waits_for_the_writes_that_passed_the_fence(world, monkeypatch):
    """A reconcile that passed the fence just before SIGTERM: its write is answered before the Lease goes."""
    import threading

    store, now, current, events, a, b = two_candidates(world)
    monkeypatch.setattr(kube, "FENCE", kube.Fence())
    kube.FENCE.guard(a.fresh)
    monkeypatch.setattr(kube, "_raw", lambda r: r)
    sent, answer, order = threading.Event(), threading.Event(), []

    def create_namespaced_deployment(*_, **__):
        sent.set()
        answer.wait(5)
        order.append("write answered")
        return {}

    writer = threading.Thread(
        target=kube._call, args=("create", "creating Deployment ns/x", create_namespaced_deployment)
    )
    writer.start()
    assert sent.wait(5)
    current["who"] = "a"
    releasing = threading.Thread(target=lambda: (a.release(), order.append("released")))
    releasing.start()
    releasing.join(0.3)
    assert releasing.is_alive() and store.obj["spec"]["holderIdentity"] == "a", "the Lease is kept while it is out"
    with pytest.raises(kube.NotLeader):  # no new write passes meanwhile
        kube._call("create", "creating Deployment ns/y", create_namespaced_deployment)
    answer.set()
    writer.join(5)
    releasing.join(5)
    assert order == ["write answered", "released"] and store.obj["spec"]["holderIdentity"] is None


def test_a_released_elector_never_leads_again(world):
    """Found by the chaos test: after a release the election thread took the free Lease back at its next
    step and wrote again while the standby was taking over."""
    store, now, current, events, a, b = two_candidates(world)
    current["who"] = "a"
    a.release()
    for _ in range(3):
        now[0] += leader.RETRY_SECONDS
        step(a, current)
    assert not a.fresh() and store.obj["spec"].get("holderIdentity") is None
    assert events == [("started", "a")], "started once, never again"
    step(b, current)
    assert store.obj["spec"]["holderIdentity"] == "b"


def test_a_renewal_answered_after_the_release_does_not_make_a_leader_again(world, monkeypatch):
    store, now, current, events, a, b = two_candidates(world)
    current["who"] = "a"
    renew = a.try_acquire_or_renew

    def renewal_out_during_release():
        ok = renew()  # answered by the API server...
        a.release()  # ...while SIGTERM's cleanup gives the Lease up
        return ok

    monkeypatch.setattr(a, "try_acquire_or_renew", renewal_out_during_release)
    now[0] += leader.RETRY_SECONDS
    a.step()
    assert not a.fresh() and a.released and events == [("started", "a")]


def test_a_release_that_lost_the_race_to_its_own_renewal_tries_again(world, monkeypatch):
    store, now, current, events, a, b = two_candidates(world)
    current["who"] = "a"
    get, raced = kube.get_lease, []

    def get_then_renewed(ns, name):
        lease = get(ns, name)
        if not raced:  # the election thread's renewal lands between release's read and write
            raced.append(1)
            store.replace(ns, name, a._body(copy.deepcopy(lease)))
        return lease

    monkeypatch.setattr(kube, "get_lease", get_then_renewed)
    a.release()
    assert raced and store.obj["spec"].get("holderIdentity") is None, "released anyway, not left to expire"


def test_a_start_that_fails_does_not_end_the_election(world):
    """Before: on_started (the first resync) raising out of step() ended the election thread: no renewals."""
    from daemonpool_operator import metrics

    store, now, current = world
    calls = []

    def start():
        calls.append(1)
        raise RuntimeError("404 on the first resync")

    e = leader.Elector("ns", "lease", "a", clock=lambda: now[0], on_started=start, on_lost=lambda: None)
    before = metrics.LOOP_ERRORS.labels("leader_election")._value.get()
    current["who"] = "a"
    e.tick()
    assert e.leader and calls == [1]
    assert metrics.LOOP_ERRORS.labels("leader_election")._value.get() == before + 1
    rv = store.obj["metadata"]["resourceVersion"]
    now[0] += 3
    e.tick()  # the loop goes on: renews
    assert store.obj["metadata"]["resourceVersion"] != rv and e.leader


# -- word for word: the Lease bodies, the log lines, the gauge, the loop ---------------------------------------
# Literal oracles from client-go's leaderelection and the Lease API (coordination.k8s.io/v1), written against
# the mutants hack/mutation found surviving.


def gauge(g):
    return g._value.get()


def lease(holder, renew, acquire, transitions, duration=10, name="lease-name"):
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": renew,
            "acquireTime": acquire,
            "leaseTransitions": transitions,
        },
    }


def stored(store):
    obj = copy.deepcopy(store.obj)
    del obj["metadata"]["resourceVersion"]
    return obj


@pytest.fixture
def stamps(monkeypatch):
    """Each Lease write's time, in order: T1, T2, ..."""
    n = [0]

    def now_micro():
        n[0] += 1
        return f"T{n[0]}"

    monkeypatch.setattr(leader, "_now_micro", now_micro)


def named(identity, now, events, name="lease-name"):
    return leader.Elector(
        "ns",
        name,
        identity,
        clock=lambda: now[0],
        on_started=lambda: events.append(("started", identity)),
        on_lost=lambda: events.append(("lost", identity)),
    )


def test_the_lease_bodies_word_for_word(world, stamps):
    store, now, current = world
    events = []
    a, b = named("a", now, events), named("b", now, events)
    step(a, current)
    assert stored(store) == lease("a", "T1", "T1", 0), "created: acquired now, no transition yet"
    now[0] += 2
    step(a, current)
    assert stored(store) == lease("a", "T2", "T1", 0), "renewed: acquireTime kept"
    store.down.add("a")
    now[0] += 20
    step(b, current)  # b first sees this renewal now...
    now[0] += 10
    step(b, current)  # ...and takes over once it has not changed for leaseDurationSeconds
    assert stored(store) == lease("b", "T3", "T3", 1), "taken over: acquired now, one transition"
    store.obj["spec"].pop("leaseTransitions")
    now[0] += 2
    step(b, current)
    assert stored(store) == lease("b", "T4", "T3", 0), "a Lease without leaseTransitions counts from 0"


def test_the_holders_own_lease_duration_is_waited_out_not_ours(world, stamps):
    store, now, current = world
    store.obj = {
        **lease("x", "R1", "R1", 4, duration=4),
        "metadata": {"name": "lease-name", "namespace": "ns", "resourceVersion": "7"},
    }
    events = []
    b = named("b", now, events)
    step(b, current)
    for _ in range(3):  # x renews every 2 s: b keeps waiting
        now[0] += 2
        store.obj["spec"]["renewTime"] = f"R{now[0]}"
        step(b, current)
    assert events == []
    now[0] += 3.9
    step(b, current)
    assert events == [], "3.9 s without a renewal is inside x's 4 s"
    now[0] += 0.1
    step(b, current)
    assert events == [("started", "b")] and stored(store) == lease("b", "T1", "T1", 5)


def test_the_renew_deadline_is_seven_seconds_to_the_tick(world, stamps):
    store, now, current = world
    now[0] = 100.0  # not 0: a sum of the two times would pass for their difference
    events = []
    a = named("a", now, events)
    step(a, current)
    assert a.fresh() and gauge(metrics.LEADER) == 1
    store.down.add("a")
    now[0] += 6.99
    assert a.fresh(), "6.99 s after the renewal: still fresh"
    step(a, current)
    assert events == [("started", "a")] and a.leader
    now[0] = 107.0
    assert not a.fresh(), "7 s after: no longer"
    step(a, current)
    assert events == [("started", "a"), ("lost", "a")] and not a.leader and gauge(metrics.LEADER) == 0


def test_what_a_new_elector_starts_from(world):
    _, now, _ = world
    e = named("a", [5.0], [])
    assert (e.leader, e.released, e._observed, e._observed_at) == (False, False, None, 5.0)
    assert not e.fresh() and e.clock() - e.last_renew >= leader.RENEW_DEADLINE_SECONDS


def test_a_lost_lease_exits_the_process_with_code_1_by_default(world, monkeypatch):
    codes = []
    monkeypatch.setattr(leader.os, "_exit", codes.append)
    e = leader.Elector("ns", "n", "a", on_started=lambda: None, clock=lambda: 0.0)
    e.on_lost()
    assert codes == [1]


def test_the_log_lines_word_for_word(world, stamps, caplog):
    store, now, current = world
    events = []
    a = named("a", now, events)
    with caplog.at_level(logging.INFO, logger="daemonpool"):
        step(a, current)
        store.down.add("a")
        now[0] += 8
        step(a, current)
    got = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert got == [
        ("INFO", "leader election: a is the leader (Lease ns/lease-name)"),
        ("WARNING", "leader election: API unreachable"),
        (
            "ERROR",
            "leader election: could not renew the Lease for 7s; stopped writing, exiting to restart as a standby",
        ),
    ]


def test_the_release_body_and_its_log_line(world, stamps, caplog, monkeypatch):
    store, now, current = world
    monkeypatch.setattr(kube, "FENCE", kube.Fence())
    asked = []
    monkeypatch.setattr(kube, "drain_writes", lambda t: asked.append(t) or True)
    a = named("a", now, [])
    step(a, current)
    with caplog.at_level(logging.INFO, logger="daemonpool"):
        a.release()
    assert asked == [35], "the writes out get a whole request's timeouts (5 + 30 s)"
    assert stored(store) == lease(None, "T2", "T1", 0, duration=1)
    assert [r.getMessage() for r in caplog.records] == ["leader election: released the Lease"]
    assert gauge(metrics.LEADER) == 0 and a.released and not a.leader


def test_a_release_with_writes_still_out_keeps_the_lease(world, stamps, caplog, monkeypatch):
    store, now, current = world
    monkeypatch.setattr(kube, "drain_writes", lambda t: False)
    a = named("a", now, [])
    step(a, current)
    with caplog.at_level(logging.WARNING, logger="daemonpool"):
        a.release()
    assert stored(store) == lease("a", "T1", "T1", 0)
    assert [r.getMessage() for r in caplog.records] == [
        "leader election: writes still unanswered; keeping the Lease to expire on its own"
    ]


def test_a_release_that_fails_says_when_the_lease_expires(world, stamps, caplog, monkeypatch):
    store, now, current = world
    monkeypatch.setattr(kube, "drain_writes", lambda t: True)
    a = named("a", now, [])
    step(a, current)
    store.down.add("a")
    current["who"] = "a"
    with caplog.at_level(logging.WARNING, logger="daemonpool"):
        a.release()
    assert [r.getMessage() for r in caplog.records] == [
        "leader election: could not release the Lease (it expires in 10s): API unreachable"
    ]


def test_a_release_gives_up_after_two_lost_races(world, stamps, monkeypatch):
    store, now, current = world
    monkeypatch.setattr(kube, "drain_writes", lambda t: True)
    a = named("a", now, [])
    step(a, current)
    writes = []
    monkeypatch.setattr(kube, "replace_lease", lambda ns, name, body: writes.append((ns, name)) and None)
    a.release()
    assert writes == [("ns", "lease-name"), ("ns", "lease-name")]


def test_a_release_of_a_lease_someone_else_holds_writes_nothing(world, stamps, monkeypatch):
    store, now, current = world
    monkeypatch.setattr(kube, "drain_writes", lambda t: True)
    a = named("a", now, [])
    step(a, current)
    store.obj["spec"]["holderIdentity"] = "b"
    writes = []
    monkeypatch.setattr(kube, "replace_lease", lambda *args: writes.append(args))
    a.release()
    assert writes == []


def test_start_guards_the_fence_and_runs_one_daemon_thread(world, monkeypatch):
    monkeypatch.setattr(kube, "FENCE", kube.Fence())
    started = []

    class Thread:
        def __init__(self, **kw):
            self.kw = kw

        def start(self):
            started.append(self.kw)

    monkeypatch.setattr(leader.threading, "Thread", Thread)
    metrics.LEADER.set(7)
    e = named("a", [0.0], [])
    e.start()
    assert started == [{"target": e.run, "name": "daemonpool-leader-election", "daemon": True}]
    assert gauge(metrics.LEADER) == 0 and kube.FENCE.allows() is False, "a standby may not write"
    e.leader, e.last_renew = True, 0.0
    assert kube.FENCE.allows() is True


def test_the_loop_ticks_then_sleeps_the_retry_period(world, monkeypatch):
    e = named("a", [0.0], [])
    calls = []

    def sleep(s):
        calls.append(("sleep", s))
        if len(calls) > 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(e, "tick", lambda: calls.append("tick"))
    monkeypatch.setattr(leader.time, "sleep", sleep)
    with pytest.raises(KeyboardInterrupt):
        e.run()
    assert calls == ["tick", ("sleep", 2), "tick", ("sleep", 2)]


def test_a_tick_that_fails_is_logged_and_counted(world, caplog, monkeypatch):
    e = named("a", [0.0], [])
    monkeypatch.setattr(e, "step", lambda: 1 / 0)
    before = metrics.LOOP_ERRORS.labels("leader_election")._value.get()
    with caplog.at_level(logging.ERROR, logger="daemonpool"):
        e.tick()
    assert [r.getMessage() for r in caplog.records] == ["leader election: a step failed unexpectedly; going on"]
    assert caplog.records[0].exc_info[0] is ZeroDivisionError
    assert metrics.LOOP_ERRORS.labels("leader_election")._value.get() == before + 1


def test_the_lease_times_are_utc_microseconds(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # 9 h from UTC: a local time would show
    time.tzset()
    try:
        stamp = leader._now_micro()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp), stamp
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()) < 5
    assert os.environ.get("TZ") is None


def test_every_lease_call_names_the_lease(world, stamps, monkeypatch):
    store, now, current = world
    calls = []
    for verb in ("get_lease", "create_lease", "replace_lease"):
        real = getattr(kube, verb)
        monkeypatch.setattr(kube, verb, lambda *a, _real=real, _verb=verb: calls.append((_verb, a[:2])) or _real(*a))
    monkeypatch.setattr(kube, "drain_writes", lambda t: True)
    a = named("a", now, [])
    step(a, current)
    now[0] += 2
    step(a, current)
    a.release()
    assert {c[1] if c[0] != "create_lease" else c[1][:1] for c in calls} == {("ns", "lease-name"), ("ns",)}
    assert [c[0] for c in calls] == [
        "get_lease",
        "create_lease",
        "get_lease",
        "replace_lease",
        "get_lease",
        "replace_lease",
    ]


def test_a_renewal_of_a_lease_without_an_acquire_time_stamps_it_now(world, stamps):
    store, now, current = world
    a = named("a", now, [])
    step(a, current)
    del store.obj["spec"]["acquireTime"]
    now[0] += 2
    step(a, current)
    assert stored(store) == lease("a", "T2", "T2", 0)
