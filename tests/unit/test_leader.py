"""Leader election over a Lease, against a fake Lease store with compare-and-swap, on a fake clock."""

import copy

import pytest

from daemonpool_operator import kube, leader


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
