"""The autoscaler's passes (operator/daemonpool_operator/autoscaler.py) against a real cache, a fake clock and
fake workers (their /state and /drain answers): scale up at once, scale in only by draining idle workers,
a victim that took an item is kept and undrained, a steady load writes nothing, and demand that rises again
abandons a drain."""

import pytest

from daemonpool_operator import autoscaler, cache, desired

KEY = ("ns", "p")


class Workers:
    """Fake workers: name -> /state (None: silent); drain() drains only idle ones, as the runtime does."""

    def __init__(self, states):
        self.states = states
        self.drained, self.undrained, self.retired, self.backlog = [], [], [], None

    answers = 0

    def current(self, targets):
        return {k: self.states.get(k[1]) for k in targets}

    def drain(self, pods, port, token, seconds, finish=False):
        assert token == "tok"
        out = {}
        for name in pods:
            s = self.states.get(name)
            if s and finish:  # a rollout's: accepted while busy
                s["draining"] = s["retiring"] = True
                self.retired.append(name)
                out[name] = s
            elif s and not s.get("inflight"):
                s["draining"] = True
                self.drained.append(name)
                out[name] = s
            else:
                out[name] = None
        return out

    def undrain(self, pods, port, token):
        for name in pods:
            self.undrained.append(name)
            if self.states.get(name):
                self.states[name]["draining"] = False
        return {n: True for n in pods}

    def count(self, url):
        return self.backlog


def idle(seconds=100.0):
    return {"state": "idle", "seconds_in_state": seconds, "inflight": 0, "capacity": 1}


def busy():
    return {"state": "busy", "seconds_in_state": 5.0, "inflight": 1, "capacity": 1}


class World:
    def __init__(self, replicas, names, **autoscale):
        autoscale.setdefault("maxPeers", 10)
        autoscale.setdefault("stableSeconds", 0)
        self.world = cache.World()
        pool = {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "generation": 1, "resourceVersion": "1"},
            "spec": {"autoscale": autoscale, "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}},
        }
        self.world.set_pool(pool)
        dep = desired.build_deployment(pool, replicas=replicas, drain_token="tok")
        dep["metadata"]["resourceVersion"] = "2"
        dep["status"] = {"replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas}
        self.world.set_deployment(dep)
        for i, name in enumerate(names):
            self.set_pod(name, ready=True, ip=f"10.0.0.{i + 1}")

    def set_pod(self, name, ready, ip="10.0.0.9", template_hash="abc12", created="2026-12-01T00:00:00Z"):
        self.world.set_pod(self.pod_body(name, ready, ip, template_hash, created))

    def pod_body(self, name, ready, ip="10.0.0.9", template_hash="abc12", created="2026-12-01T00:00:00Z"):
        return {
            "metadata": {
                "name": name,
                "uid": f"uid-{name}",
                "namespace": "ns",
                "labels": {"daemonpool.dev/pool": "p", "pod-template-hash": template_hash},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": f"p-{template_hash}",
                        "controller": True,
                    }
                ],
                "creationTimestamp": created,
                "resourceVersion": "3",
            },
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }


@pytest.fixture
def rig():
    def make(replicas, states, hpas=dict, secret=None, pg_count=None, **autoscale):
        w = World(replicas, list(states), **autoscale)
        fake = Workers(states)
        clock = [1000.0]
        log = {"enqueued": [], "costs": [], "events": [], "holds": []}
        a = autoscaler.Autoscaler(
            w.world,
            enqueue=log["enqueued"].append,
            patch_cost=lambda ns, pod, cost: log["costs"].append((pod, cost)),
            post_event=lambda pool, t, reason, msg: log["events"].append((reason, msg)),
            now=lambda: "2026-12-01T00:00:00Z",
            clock=lambda: clock[0],
            ask=fake,
            watch=fake,
            hpas=hpas,
            secret=secret,
            pg_count=pg_count or (lambda dsn, query: None),
            hold=lambda ns, name, on: log["holds"].append((name, on)),
        )
        return a, w, fake, clock, log

    return make


def test_busy_workers_scale_the_pool_up_at_once_and_the_status_says_why(rig):
    a, _, _, _, log = rig(2, {"w1": busy(), "w2": busy()})
    a.tick()
    # busy 2 / 0.8 = 2.5 -> 3
    assert a.replicas(KEY, _spec(a), None) == 3
    assert log["enqueued"] == [KEY]
    assert log["events"][0][0] == "Autoscaled" and log["events"][0][1].startswith("2 -> 3 workers")
    s = a.status(KEY)
    assert (s["desired"], s["busy"], s["lastScaleTime"]) == (3, 2.0, "2026-12-01T00:00:00Z")


def test_a_steady_load_makes_no_writes(rig):
    a, _, _, clock, log = rig(5, {f"w{i}": busy() if i < 4 else idle() for i in range(5)})
    for _ in range(30):
        a.tick()
        clock[0] += 1
    # 4 busy / 0.8 = 5: the first pass shows "5 kept" once; nothing after
    assert log["enqueued"] == [KEY] and log["events"] == [] and log["costs"] == []


def test_a_scale_in_drains_idle_workers_waits_for_not_ready_then_removes_only_them(rig):
    states = {"w1": busy(), "w2": idle(100), "w3": idle(300), "w4": idle(5)}
    a, w, fake, clock, log = rig(4, states, idleSeconds=10)
    a.tick()  # busy 1 / 0.8 -> 2: remove 2; w4 is idle for 5 s only: w3 and w2 (longest idle first)
    assert sorted(fake.drained) == ["w2", "w3"]
    assert a.replicas(KEY, _spec(a), None) == 4, "replicas stay until the drained workers show not ready"
    a.tick()
    assert log["costs"] == [] and a.replicas(KEY, _spec(a), None) == 4
    w.set_pod("w2", ready=False)
    w.set_pod("w3", ready=False)
    a.tick()
    assert sorted(log["costs"]) == [("w2", autoscaler.DRAINED_COST), ("w3", autoscaler.DRAINED_COST)]
    assert a.replicas(KEY, _spec(a), None) == 2
    assert "w1" not in fake.drained
    down = [e[1] for e in log["events"] if e[1].startswith("4 -> 2 workers")]
    assert down and "busy 1.0 (target 0.8) asks 2" in down[0], "the event says why, not only what"


def test_a_victim_that_took_an_item_meanwhile_is_kept_and_undrained(rig):
    states = {"w1": busy(), "w2": idle(100), "w3": idle(300)}
    a, w, fake, clock, log = rig(3, states)
    a.tick()  # busy 1 -> 2 wanted: one victim, w3
    assert fake.drained == ["w3"]
    w.set_pod("w3", ready=False)
    states["w3"] = busy()  # it took an item: the runtime ended its drain
    clock[0] += 1
    a.tick()
    assert log["costs"] == []
    assert a.replicas(KEY, _spec(a), None) == 3


def test_demand_that_rises_during_a_drain_undrains_the_victims(rig):
    states = {"w1": busy(), "w2": idle(100), "w3": idle(300)}
    a, w, fake, clock, log = rig(3, states)
    a.tick()
    assert fake.drained == ["w3"]
    states["w1"], states["w2"] = busy(), busy()
    states["w3"] = {**idle(300), "draining": True}
    a.tick()  # 2 busy / 0.8 -> 3: no scale-in any more
    assert fake.undrained == ["w3"]
    assert a.replicas(KEY, _spec(a), None) == 3 and log["costs"] == []


def test_not_ready_idle_pods_go_without_a_drain(rig):
    states = {"w1": busy(), "w2": None, "w3": idle(300)}
    a, w, fake, clock, log = rig(3, states)
    w.set_pod("w2", ready=False)  # starting, or failing readiness, and not busy: the ReplicaSet takes it first
    a.tick()
    assert fake.drained == []
    assert a.replicas(KEY, _spec(a), None) == 2


def test_no_idle_worker_means_no_scale_in_and_the_status_says_so(rig):
    a, _, fake, clock, log = rig(3, {"w1": busy(), "w2": idle(2), "w3": idle(3)}, idleSeconds=30)
    a.tick()
    assert fake.drained == [] and a.replicas(KEY, _spec(a), None) == 3
    assert "no worker idle for 30s yet" in a.status(KEY)["reason"]


def test_a_pool_at_zero_wakes_on_its_http_backlog(rig):
    backlog = {"source": "http", "url": "http://10.1.1.1:8080/backlog", "itemsPerWorker": 5}
    a, _, fake, clock, log = rig(0, {}, minPeers=0, backlog=backlog)
    fake.backlog = 0
    a.tick()
    assert a.replicas(KEY, _spec(a), None) == 0
    fake.backlog = 12
    clock[0] += 5  # the source is asked every periodSeconds (5)
    a.tick()
    assert a.replicas(KEY, _spec(a), None) == 3  # ceil(12 / 5)
    assert a.status(KEY)["backlog"] == 12


def _spec(a):
    from daemonpool_operator import model

    return model.parse_pool(a.world.pool(KEY))[1]


def test_an_hpa_that_targets_an_autoscaled_pool_is_reported_once_as_a_conflict(rig):
    a, _, _, clock, log = rig(2, {"w1": busy(), "w2": idle()}, hpas=lambda: {KEY: ["keda-hpa-p"]})
    for _ in range(5):
        a.tick()
        clock[0] += 1
    warnings = [e for e in log["events"] if e[0] == "AutoscaleConflict"]
    assert len(warnings) == 1 and "ns/keda-hpa-p" in warnings[0][1]
    assert "ns/keda-hpa-p" in a.status(KEY)["conflict"]


def test_a_pool_at_zero_wakes_on_its_postgres_backlog_read_with_the_dsn_of_its_secret(rig):
    asked = []

    def secret(ns, name, key):
        asked.append((ns, name, key))
        return "postgresql://mailer@db/outbox"

    counts = iter([0, 25])
    backlog = {
        "source": "postgres",
        "secretRef": {"name": "outbox-db", "key": "dsn"},
        "query": "SELECT count(*) FROM mailer_outbox WHERE state = 'pending'",
        "itemsPerWorker": 10,
    }
    a, _, _, clock, log = rig(
        0, {}, minPeers=0, backlog=backlog, secret=secret, pg_count=lambda dsn, query: next(counts)
    )
    a.tick()
    assert a.replicas(KEY, _spec(a), None) == 0
    clock[0] += 5
    a.tick()
    assert a.replicas(KEY, _spec(a), None) == 3  # ceil(25 / 10)
    assert asked == [("ns", "outbox-db", "dsn")] * 2


def test_a_secret_the_operator_may_not_read_is_said_in_the_status(rig):
    from daemonpool_operator import kube

    def secret(ns, name, key):
        raise kube.Rejected(403, f"cannot read Secret {ns}/{name}: missing, or the operator may not read it")

    backlog = {"source": "postgres", "secretRef": {"name": "db", "key": "dsn"}, "query": "SELECT 1"}
    a, _, _, clock, log = rig(1, {"w1": idle()}, backlog=backlog, secret=secret)
    a.tick()
    assert "cannot read Secret ns/db" in a.status(KEY)["reason"]


def test_workers_that_cannot_be_asked_are_never_removed_and_the_status_says_why(rig):
    a, _, fake, clock, log = rig(3, {"w1": None, "w2": None, "w3": None})
    a.tick()
    assert fake.drained == [] and a.replicas(KEY, _spec(a), None) == 3
    assert "no worker answered /state on port 9309" in a.status(KEY)["reason"]


def test_during_a_rollout_idle_old_workers_get_the_low_costs_and_busy_old_ones_the_high(rig):
    states = {"old1": busy(), "old2": idle(100), "old3": idle(1), "new1": idle(0.5)}
    a, w, fake, clock, log = rig(3, states, minPeers=3)
    w.set_pod("new1", ready=True, template_hash="def34", created="2026-12-01T00:05:00Z")
    a.tick()
    costs = dict(log["costs"])
    # scalein.cost on the old ReplicaSet's pods only: idle -(1 + bucket(seconds)), busy 1,000,000 + bucket
    assert costs == {"old1": 1_000_002, "old2": -7, "old3": -2}
    a.tick()
    assert len(log["costs"]) == 3, "costs that did not change are not patched again"


def _paused(w, on, rv):
    dep = w.world.deployment(KEY)
    dep = {**dep, "metadata": {**dep["metadata"], "resourceVersion": rv}, "spec": {**dep["spec"], "paused": on}}
    if on:
        dep["metadata"]["annotations"] = {"daemonpool.dev/rollout-held": "busy old workers"}
    w.world.set_deployment(dep)


def test_a_rollout_is_held_while_only_busy_old_workers_could_go_next_and_goes_on_as_each_finishes(rig):
    """maxSurge 1, maxUnavailable 0 (the pool's default): the Deployment controller removes one old pod at a
    time, so a hold is needed as soon as no old pod is idle or not ready."""
    states = {"old1": busy(), "old2": busy(), "new1": idle(0.5), "new2": idle(0.5)}
    a, w, fake, clock, log = rig(3, states, minPeers=3, maxPeers=3)
    for name in ("new1", "new2"):
        w.set_pod(name, ready=True, template_hash="def34", created="2026-12-01T00:05:00Z")
    a.tick()
    assert sorted(fake.retired) == ["old1", "old2"], "every old worker finishes its items and takes no new one"
    assert log["holds"] == [("p", True)]
    assert a.status(KEY)["reason"].startswith("the rollout waits for 2 busy old worker(s)")
    a.tick()
    assert log["holds"] == [("p", True)], "asked once until the watch shows it (or a while passed)"
    assert len(fake.retired) == 2, "a retiring worker is not asked again"
    _paused(w, True, "5")
    # old1 finished its item: idle, and not ready (the runtime's finishing drain)
    states["old1"] = {**idle(0.2), "draining": True, "retiring": True}
    w.set_pod("old1", ready=False, ip="10.0.0.1")
    a.tick()
    assert log["holds"] == [("p", True), ("p", False)], "a not-ready old worker is the next to go: resume"
    _paused(w, False, "6")
    w.world.drop_pod(w.pod_body("old1", ready=False))
    a.tick()
    assert log["holds"][-1] == ("p", True), "only a busy old worker left: held again"
    _paused(w, True, "7")
    clock[0] += 601
    a.tick()
    assert log["holds"][-1] == ("p", False), "a hold ends after HOLD_SECONDS: an item that never ends"
    assert all(c[1] != autoscaler.DRAINED_COST for c in log["costs"])


def test_a_hold_left_when_the_rollout_is_over_is_resumed(rig):
    a, w, fake, clock, log = rig(2, {"w1": idle(), "w2": busy()}, minPeers=2, maxPeers=2)
    _paused(w, True, "5")
    a.tick()
    assert log["holds"] == [("p", False)] and fake.retired == []
