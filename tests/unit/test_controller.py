"""The controller (operator/daemonpool_operator/controller.py) against a fake API (the only place a fake is
allowed), and the kopf glue (handlers.py): the reconcile logic and the queue, fast. Each test builds its own
Controller: no module state to patch or leave behind."""

from __future__ import annotations

import asyncio
import copy
import time

import kopf
import pytest

from daemonpool_operator import cache, desired, handlers, kube
from daemonpool_operator.config import Config
from daemonpool_operator.controller import Controller, Unhealthy
from daemonpool_operator.workqueue import WorkQueue

CTL: dict = {}  # the controller of the running test (set by the fake fixture)


def world() -> cache.World:
    return CTL["c"].world


class FakeKube:
    """In-memory stand-in for daemonpool_operator.kube: same functions, counts reads and writes."""

    def __init__(self):
        self.deployments, self.pools = {}, {}
        self.writes, self.reads, self.events = [], [], []
        self.rv = 100

    def _bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def get_deployment(self, ns, name):
        self.reads.append(("get", name))
        return copy.deepcopy(self.deployments.get((ns, name)))

    def create_deployment(self, ns, body):
        key = (ns, body["metadata"]["name"])
        self.writes.append(("create", key))
        if key in self.deployments:
            return None
        obj = copy.deepcopy(body)
        obj["metadata"].update(generation=1, uid=f"dep-{key[1]}")
        obj["status"] = {}
        self._bump(obj)
        self.deployments[key] = obj
        return copy.deepcopy(obj)

    def patch_deployment(self, ns, name, patch):
        self.writes.append(("patch", (ns, name)))
        obj = self.deployments[(ns, name)]
        obj["metadata"].update(patch["metadata"])
        obj["spec"] = copy.deepcopy(patch["spec"])
        self._bump(obj)
        return copy.deepcopy(obj)

    def patch_pool_status(self, ns, name, status):
        self.writes.append(("status", (ns, name)))
        pool = self.pools[(ns, name)]
        cur = pool.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                cur.pop(k, None)
            else:
                cur[k] = v
        self._bump(pool)
        return copy.deepcopy(pool)

    def budget(self, verb, ns, name, body=None):
        self.budgets = getattr(self, "budgets", {})
        (self.reads if verb == "get" else self.writes).append((f"budget-{verb}", (ns, name)))
        if verb == "create":
            self.budgets[(ns, name)] = copy.deepcopy(body)
            return body
        if verb == "delete":
            return self.budgets.pop((ns, name), None)
        return copy.deepcopy(self.budgets.get((ns, name)))

    def post_event(self, pool, type_, reason, message):
        self.writes.append(("event", reason))
        self.events.append((type_, reason, message))

    def remove_finalizer(self, pool):
        if kube.FINALIZER in (pool["metadata"].get("finalizers") or []):
            self.writes.append(("unfinalize", pool["metadata"]["name"]))

    now = staticmethod(lambda: "2026-01-01T00:00:00Z")
    NamespaceTerminating = kube.NamespaceTerminating
    Rejected = kube.Rejected
    REQUEST_TIMEOUT = kube.REQUEST_TIMEOUT


@pytest.fixture
def fake():
    f = FakeKube()
    f.ctl = CTL["c"] = Controller(Config(), api=f)
    return f


def add_pool(fake, name="p", peers=2, **spec):
    obj = {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"},
        "spec": {"peers": peers, "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}, **spec},
    }
    fake.pools[("ns", name)] = obj
    world().set_pool(obj)
    return obj


def edit_pool(fake, name="p", **spec):
    pool = fake.pools[("ns", name)]
    pool["spec"].update(spec)
    pool["metadata"]["generation"] += 1
    fake._bump(pool)
    world().set_pool(pool)


def run(key=("ns", "p")):
    CTL["c"].reconcile(key)


def test_first_pass_creates_then_an_unchanged_world_writes_nothing(fake):
    add_pool(fake)
    run()
    assert ("create", ("ns", "p")) in fake.writes and ("Normal", "Created") == fake.events[0][:2]
    dep = fake.deployments[("ns", "p")]
    assert dep == {**desired.build_deployment(fake.pools[("ns", "p")]), "metadata": dep["metadata"], "status": {}}
    fake.writes.clear()
    run()
    assert fake.writes == [], "idle means quiet"
    assert fake.reads == [], "a reconcile reads the cache, not the API"


def test_scale_and_drift_are_patched_back(fake):
    add_pool(fake)
    run()
    edit_pool(fake, peers=5)
    fake.writes.clear()
    run()
    assert ("patch", ("ns", "p")) in fake.writes and fake.deployments[("ns", "p")]["spec"]["replicas"] == 5
    assert ("Normal", "Scaled", "scaled workers from 2 to 5") in fake.events
    drifted = copy.deepcopy(fake.deployments[("ns", "p")])
    drifted["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = 99
    fake._bump(drifted)
    fake.deployments[("ns", "p")] = drifted
    world().set_deployment(drifted)  # the watch tells us
    run()
    live = fake.deployments[("ns", "p")]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert live["periodSeconds"] != 99 and fake.events[-1][1] == "Updated"


def test_conflict_is_reported_once_and_never_written(fake):
    add_pool(fake)
    # Not ours: no pool label, so the watch never shows it; the create finds it.
    fake.deployments[("ns", "p")] = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "theirs"}, "resourceVersion": "5"},
        "spec": {"replicas": 1},
    }
    before = copy.deepcopy(fake.deployments[("ns", "p")])
    run()
    run()
    assert fake.deployments[("ns", "p")] == before
    assert [w for w in fake.writes if w[0] in ("create", "patch")] == [("create", ("ns", "p"))], "one failed create"
    assert [e[1] for e in fake.events] == ["DeploymentConflict"] and fake.events[0][0] == "Warning"
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "DeploymentConflict" and "no owner reference" in conds["Degraded"]["message"]


def test_invalid_spec_has_status_and_one_warning(fake):
    add_pool(fake, strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    run()
    run()
    assert [e[1] for e in fake.events] == ["InvalidSpec"]
    assert ("ns", "p") not in fake.deployments
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "InvalidSpec" and "set maxSurge to 1" in conds["Degraded"]["message"]


def _pod(name, pool="p", **status):
    """A worker pod as its ReplicaSet makes it: the pool's label, the template hash, the controller reference."""
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"daemonpool.dev/pool": pool, "pod-template-hash": "abc12"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{pool}-abc12", "controller": True}
            ],
            "managedFields": [{"manager": "x" * 1000}],
        },
        "spec": {"big": "y" * 1000},
        "status": status,
    }


def test_worker_restarts_raise_one_warning_per_new_restart(fake):
    add_pool(fake, peers=1)
    run()
    world().set_pod(
        _pod(
            "p-1",
            containerStatuses=[
                {
                    "name": "w",
                    "restartCount": 1,
                    "ready": False,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 137}},
                }
            ],
        )
    )
    run()
    run()
    restarts = [e for e in fake.events if e[1] == "WorkerRestarted"]
    assert len(restarts) == 1 and restarts[0][0] == "Warning" and "exit code 137" in restarts[0][2]


def test_a_pod_with_the_pools_labels_that_its_replicasets_did_not_make_is_not_a_worker(fake, monkeypatch):
    from daemonpool_operator import workers

    add_pool(fake, peers=2)
    run()
    restarting = [{"name": "w", "restartCount": 7, "ready": False, "state": {"running": {}}}]
    impostors = []
    for n, refs in enumerate(
        (
            [],  # labels copied, no owner
            [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "other-abc12", "controller": True}],
            [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "p-abc12", "controller": False}],
        )
    ):
        pod = _pod(f"not-a-worker-{n}", podIP=f"10.9.0.{n}", containerStatuses=restarting)
        pod["metadata"]["ownerReferences"] = refs
        impostors.append(pod)
        world().set_pod(pod)
    world().set_pod(_pod("p-1", podIP="10.0.0.1", containerStatuses=[]))
    asked = []
    monkeypatch.setattr(workers, "states", lambda pods, port: asked.extend(p["metadata"]["name"] for p in pods) or {})
    patched = []
    fake.patch_pod_deletion_cost = lambda ns, name, cost: patched.append(name)
    edit_pool(fake, peers=1)
    run()
    # Before: "Degraded: WorkersRestarting - not-a-worker: 7 restart(s)", and its deletion cost patched.
    st = fake.pools[("ns", "p")]["status"]
    assert st["restarts"] == 0 and asked == ["p-1"] and patched == []
    assert [c for c in st["conditions"] if c["type"] == "Degraded"][0]["status"] == "False"
    # A worker that loses its controller (orphaned by hand) leaves the pool's count.
    orphan = _pod("p-1", podIP="10.0.0.1", containerStatuses=[])
    orphan["metadata"]["ownerReferences"] = []
    world().set_pod(orphan)
    assert world().pods(("ns", "p")) == []


def test_terminating_namespace_is_left_alone(fake, monkeypatch):
    add_pool(fake)

    def refuse(ns, body):
        raise kube.NamespaceTerminating("creating")

    monkeypatch.setattr(fake, "create_deployment", refuse)
    run()  # no exception: the pool goes with its namespace
    assert fake.writes == []


def test_a_refused_deployment_is_degraded_once_and_not_sent_again_until_the_pool_changes(fake, monkeypatch):
    """Before: a 422 escaped as a raw ApiException, retried every 60 s, no status, no Event."""
    add_pool(fake)
    calls = []

    def refuse(ns, body):
        calls.append(body)
        raise kube.Rejected(
            422, 'Deployment.apps "p" is invalid: spec.template.spec.containers[0].env[0].name: Invalid value: "A=B"'
        )

    monkeypatch.setattr(fake, "create_deployment", refuse)
    for _ in range(3):
        run()
    assert len(calls) == 1, "the same body is not sent again"
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "DeploymentRejected"
    assert (
        'Invalid value: "A=B"' in conds["Degraded"]["message"] and "Fix spec.template" in conds["Degraded"]["message"]
    )
    assert [e[:2] for e in fake.events] == [("Warning", "DeploymentRejected")]
    edit_pool(fake, peers=3)  # the pool changed: try again
    run()
    assert len(calls) == 2


def test_pods_that_cannot_start_make_the_pool_degraded_with_one_warning(fake):
    add_pool(fake, peers=2)
    run()
    for i in (1, 2):
        world().set_pod(
            _pod(
                f"p-{i}",
                containerStatuses=[
                    {
                        "name": "w",
                        "image": "nope:1",
                        "restartCount": 0,
                        "ready": False,
                        "state": {
                            "waiting": {"reason": "ErrImageNeverPull" if i == 1 else "ImagePullBackOff", "message": "x"}
                        },
                    }
                ],
            )
        )
    run()
    world().set_pod(
        _pod(
            "p-2",
            containerStatuses=[
                {
                    "name": "w",
                    "image": "nope:1",
                    "restartCount": 0,
                    "ready": False,
                    "state": {"waiting": {"reason": "ErrImagePull"}},
                }
            ],
        )
    )
    run()
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "ImagePullFailed"
    assert conds["Degraded"]["message"].startswith(
        "2 worker pod(s) cannot pull their image; first p-1: container w: "
        "image 'nope:1' cannot be pulled (imagePullPolicy is Never"
    )
    assert [e[1] for e in fake.events if e[0] == "Warning"] == ["ImagePullFailed"], "one Warning per new cause"


def test_old_finalizer_is_removed(fake):
    pool = add_pool(fake)
    pool["metadata"]["finalizers"] = [kube.FINALIZER]
    world().set_pool(pool)
    run()
    assert ("unfinalize", "p") in fake.writes


def test_the_health_probe_fails_when_queued_work_makes_no_progress():
    now = [Config().stuck_seconds + 10]
    ctl = Controller(Config(), clock=lambda: now[0])
    q = WorkQueue(lambda key: None, clock=lambda: 1000.0)
    q.last_progress = 0.0
    q._threads = ["a running worker"]  # the leader's queue (a standby's never starts)
    q.add(("ns", "p"))
    ctl.queue = q
    ctl.resynced_at = Config().stuck_seconds + 5
    with pytest.raises(Unhealthy, match="stuck"):
        ctl.health()
    q.drain()
    q.last_progress = Config().stuck_seconds + 9
    assert ctl.health() == "0 queued, 1 reconciled"


def test_the_kopf_probe_says_what_the_controller_says():
    registry = kopf.OperatorRegistry()
    ctl = Controller(Config())
    handlers.register(ctl, registry)
    (probe,) = [h for h in registry._activities.get_all_handlers() if h.id == "queue"]
    assert probe.fn().endswith("reconciled")
    ctl.resynced_at = -1e9
    with pytest.raises(kopf.PermanentError, match="no resync"):
        probe.fn()


def test_no_handler_makes_kopf_write_to_pools():
    """Change handlers (create/update/resume) make kopf write progress and diff-base annotations on every pool,
    and timers or daemons add a finalizer: the operator has neither."""
    registry = kopf.OperatorRegistry()
    handlers.register(Controller(Config()), registry)
    assert registry._watching.get_all_handlers(), "the three watch handlers are there"
    assert not registry._spawning.get_all_handlers(), "no per-object timers or daemons"
    assert not registry._changing.get_all_handlers(), "no create/update/resume handlers"


def test_a_burst_of_pod_events_is_a_few_reconciles_and_no_reads(fake, monkeypatch):
    """100 events for one pool's pods, as a rollout gives: at most 3 reconciles, 0 API reads."""
    add_pool(fake, peers=5)
    q = WorkQueue(fake.ctl.reconcile)
    q._threads = ["driven by the test"]  # the leader's queue: a standby's takes no keys
    fake.ctl.queue = q
    q.add(("ns", "p"))
    q.drain()
    fake.reads.clear()
    before = q.processed

    async def storm():
        for i in range(100):
            fake.ctl.child_event(
                "pod",
                "MODIFIED",
                body=_pod(
                    f"p-{i % 5}",
                    phase="Running",
                    containerStatuses=[{"name": "w", "restartCount": 0, "ready": i > 50, "state": {"running": {}}}],
                ),
            )
            if i in (30, 70):
                q.process_one()  # a worker takes the key in the middle of the storm

    asyncio.run(storm())
    q.drain()
    time.sleep(fake.ctl.config.status_batch_seconds + 0.05)
    q.drain()
    assert 1 <= q.processed - before <= 3
    assert fake.reads == []


def test_pods_are_kept_as_small_summaries():
    w = cache.World()
    w.set_pod(
        _pod(
            "a",
            phase="Running",
            containerStatuses=[
                {
                    "name": "w",
                    "restartCount": 2,
                    "ready": True,
                    "state": {"running": {"startedAt": "x"}},
                    "imageID": "sha256:" + "f" * 64,
                }
            ],
        )
    )
    (summary,) = w.pods(("ns", "p"))
    assert "managedFields" not in summary["metadata"] and "spec" not in summary
    assert summary["status"]["containerStatuses"][0] == {
        "name": "w",
        "image": None,
        "restartCount": 2,
        "ready": True,
        "state": {"running": {}},
    }


def test_a_pod_summary_keeps_the_last_termination_message_cut_short():
    w = cache.World()
    said = "liveness failing: w slot 0 (pid 1): heartbeat is 31.0s old, limit 30s (worker hung?)"
    last = {"terminated": {"reason": "Error", "exitCode": 137, "message": said + "x" * 1000, "startedAt": "t"}}
    w.set_pod(_pod("a", phase="Running", containerStatuses=[{"name": "w", "lastState": last, "state": {}}]))
    (summary,) = w.pods(("ns", "p"))
    term = summary["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert term == {"reason": "Error", "exitCode": 137, "message": (said + "x" * 1000)[:300]}


def test_an_older_watch_event_never_replaces_a_newer_write():
    w = cache.World()
    new = {
        "metadata": {
            "name": "p",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "20",
            "labels": {"daemonpool.dev/pool": "p"},
        },
        "spec": {"replicas": 5},
    }
    old = copy.deepcopy(new)
    old["metadata"]["resourceVersion"], old["spec"]["replicas"] = "19", 2
    w.set_deployment(new)
    w.set_deployment(old)
    assert w.deployment(("ns", "p"))["spec"]["replicas"] == 5


def test_a_refused_deletion_cost_is_reported_as_such_and_the_scale_in_goes_on(fake, monkeypatch):
    from daemonpool_operator import workers

    add_pool(fake, peers=3)
    run()
    for i in range(3):
        world().set_pod(_pod(f"p-{i}", podIP=f"10.0.0.{i}", containerStatuses=[]))
    monkeypatch.setattr(
        workers,
        "states",
        lambda pods, port: {p["metadata"]["name"]: {"state": "idle", "seconds_in_state": 1} for p in pods},
    )

    def refuse(ns, name, cost):
        raise kube.Rejected(403, 'admission webhook "policy" denied the request')

    fake.patch_pod_deletion_cost = refuse
    edit_pool(fake, peers=1)
    run()
    # Before: reported as DeploymentRejected, and the scale-in not retried until the spec changed.
    pool = fake.pools[("ns", "p")]
    assert fake.deployments[("ns", "p")]["spec"]["replicas"] == 1
    degraded = [c for c in pool["status"]["conditions"] if c["type"] == "Degraded"][0]
    assert degraded["reason"] != "DeploymentRejected"
    (warn,) = [e for e in fake.events if e[1] == "IdleFirstUnavailable"]
    assert "refused the deletion cost of 3 pod(s)" in warn[2] and "403: admission webhook" in warn[2]


def test_scale_in_marks_idle_workers_to_go_first_and_patches_only_what_changed(fake, monkeypatch):
    from daemonpool_operator import workers

    add_pool(fake, peers=4)
    run()
    for i in range(4):
        world().set_pod(_pod(f"p-{i}", podIP=f"10.0.0.{i}", containerStatuses=[]))
    pod = _pod("p-3", podIP="10.0.0.3")
    pod["metadata"]["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": "-5"}  # already right
    world().set_pod(pod)
    answers = {
        "p-0": {"state": "busy", "seconds_in_state": 100},
        "p-1": {"state": "idle", "seconds_in_state": 5},
        "p-2": None,
        "p-3": {"state": "idle", "seconds_in_state": 30},
    }
    monkeypatch.setattr(
        workers, "states", lambda pods, port: {p["metadata"]["name"]: answers[p["metadata"]["name"]] for p in pods}
    )
    patched = []
    fake.patch_pod_deletion_cost = lambda ns, name, cost: patched.append((name, cost))
    edit_pool(fake, peers=2)
    run()
    assert sorted(patched) == [("p-0", 1_000_006), ("p-1", -3), ("p-2", 0)], "p-3 already had its cost"
    assert fake.deployments[("ns", "p")]["spec"]["replicas"] == 2
    (ev,) = [e for e in fake.events if e[1] == "IdleFirst"]
    assert "2 idle worker(s) go first; 1 busy" in ev[2]
    patched.clear()
    edit_pool(fake, peers=3)  # scale-out: nothing asked, nothing patched
    run()
    assert patched == []


def test_scale_in_without_answers_warns_once(fake, monkeypatch):
    from daemonpool_operator import workers

    add_pool(fake, peers=3, probes="exec")
    run()
    monkeypatch.setattr(workers, "states", lambda pods, port: pytest.fail("exec probes: nobody to ask"))
    for peers in (2, 1):
        edit_pool(fake, peers=peers)
        run()
    warned = [e for e in fake.events if e[1] == "IdleFirstUnavailable"]
    assert len(warned) == 1 and "probes are exec" in warned[0][2]


def test_workers_that_did_not_answer_are_not_asked_again_for_a_while(fake, monkeypatch):
    """Asking unreachable workers delays each scale-in by a timeout: once nobody answered, the pool scales
    in without asking until BLIND_SECONDS have passed, and warns once."""
    from daemonpool_operator import workers

    add_pool(fake, peers=4)
    run()
    for i in range(4):
        world().set_pod(_pod(f"p-{i}", podIP=f"10.0.0.{i}", containerStatuses=[]))
    asked = []
    monkeypatch.setattr(workers, "states", lambda pods, port: asked.append(len(pods)) or {})
    clock = [1000.0]
    fake.ctl.idle_first.clock = lambda: clock[0]
    for peers in (3, 2):
        edit_pool(fake, peers=peers)
        run()
        clock[0] += 10
    assert asked == [4], "asked once; the second scale-in went on without asking"
    assert fake.deployments[("ns", "p")]["spec"]["replicas"] == 2
    clock[0] += fake.ctl.idle_first.blind_seconds
    edit_pool(fake, peers=1)
    run()
    assert asked == [4, 4], "asked again once the window passed"
    warned = [e for e in fake.events if e[1] == "IdleFirstUnavailable"]
    assert len(warned) == 1 and "no worker answered on port" in warned[0][2]
    fake.ctl.forget(("ns", "p"))
    assert fake.ctl.idle_first.blind == {}


def test_a_standbys_waiting_queue_is_not_stuck():
    ctl = Controller(Config())
    q = WorkQueue(lambda key: None)
    q.add(("ns", "p"))
    q.last_progress = -1e9  # nothing processed for ages: a standby does not process
    ctl.queue = q
    assert ctl.health().startswith("1 queued")


def _dep(uid, rv, replicas=1, ns="ns", pool="p"):
    return {
        "metadata": {
            "name": pool,
            "namespace": ns,
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {"daemonpool.dev/pool": pool},
        },
        "spec": {"replicas": replicas},
    }


def test_a_late_answer_does_not_bring_back_what_was_deleted():
    """A write's answer (or a queued event) that arrives after the DELETED event: the object stays gone."""
    w = cache.World()
    w.set_deployment(_dep("d1", 10))
    w.drop_deployment(_dep("d1", 12))
    w.set_deployment(_dep("d1", 11, replicas=3))  # the answer to a scale sent before the delete
    assert w.deployment(("ns", "p")) is None
    pod = dict(_pod("a"), metadata={**_pod("a")["metadata"], "uid": "pod-a", "resourceVersion": "5"})
    w.set_pod(pod)
    w.drop_pod(pod)
    w.set_pod(pod)
    assert w.pods(("ns", "p")) == []
    pool = {"metadata": {"name": "p", "namespace": "ns", "uid": "pool-1", "resourceVersion": "3"}}
    w.set_pool(pool)
    w.drop_pool(pool)
    w.set_pool(pool)  # a status patch's answer
    assert w.pool(("ns", "p")) is None
    w.set_deployment(_dep("d2", 13))  # a new object of the same name is welcome
    assert w.deployment(("ns", "p"))["metadata"]["uid"] == "d2"


def test_a_listing_drops_what_went_while_nothing_watched_but_not_what_was_written_since():
    w = cache.World()
    w.set_deployment(_dep("old", 10, pool="gone"))  # deleted while the watch was down: no DELETED comes
    w.set_deployment(_dep("new", 31, pool="made"))  # created by the operator after the listing
    w.set_deployment(_dep("kept", 12, pool="kept"))
    w.set_deployment(_dep("elsewhere", 9, ns="other", pool="gone"))
    ghost = dict(_pod("ghost"), metadata={**_pod("ghost")["metadata"], "uid": "pg", "resourceVersion": "11"})
    live = dict(_pod("live"), metadata={**_pod("live")["metadata"], "uid": "pl", "resourceVersion": "11"})
    w.set_pod(ghost)
    w.set_pod(live)
    assert w.listed("deployments", "ns", {"kept"}, "30") == {("ns", "gone")}
    assert w.deployment(("ns", "gone")) is None
    assert w.deployment(("ns", "made")) is not None, "written after the listing: kept"
    assert w.deployment(("ns", "kept")) is not None
    assert w.deployment(("other", "gone")) is not None, "another namespace's listing decides about it"
    w.set_deployment(_dep("old", 10, pool="gone"))  # an event still queued from before
    assert w.deployment(("ns", "gone")) is None
    assert w.listed("pods", None, {"pl"}, "30") == {("ns", "p")}
    assert [p["metadata"]["name"] for p in w.pods(("ns", "p"))] == ["live"]
    assert w.listed("daemonpools", None, set(), "30") == set()


def test_a_pool_created_again_while_its_old_deployment_lingered_in_the_cache_converges(fake):
    """The chaos failure: pool deleted and created again under the same name while the operator was not
    watching; the cache kept the old Deployment (another owner's uid) and the pool stayed in Conflict."""
    add_pool(fake, peers=1)
    run()
    old = fake.deployments.pop(("ns", "p"))  # the pool is deleted; the GC takes its Deployment
    del fake.pools[("ns", "p")]
    world().drop_pool({"metadata": {"name": "p", "namespace": "ns", "uid": "uid-p"}})
    pool = add_pool(fake, peers=2)
    pool["metadata"]["uid"] = "uid-p-again"
    world().set_pool(pool)
    run()
    assert world().deployment(("ns", "p"))["metadata"]["uid"] == old["metadata"]["uid"]
    ready = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "DeploymentConflict"), "stuck, as in the chaos run"
    fake.writes.clear()
    fake.ctl.listed("deployments", None, set(), str(fake.rv))  # the watch lists again, without it
    run()
    made = fake.deployments[("ns", "p")]
    assert ("create", ("ns", "p")) in fake.writes
    assert made["spec"]["replicas"] == 2
    assert made["metadata"]["ownerReferences"][0]["uid"] == "uid-p-again"


def test_the_resync_loop_outlives_an_unexpected_error(monkeypatch):
    """Before: one unexpected API error (a 404) ended the thread; /healthz then restarted the replica."""
    from daemonpool_operator import metrics

    calls = []

    def resync():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("404 Not Found: the unexpected")

    class Enough(BaseException):
        pass

    sleeps, t = [], [0.0]

    def sleep(seconds):  # time passes only here
        sleeps.append(seconds)
        t[0] += seconds
        if len(sleeps) > 3:
            raise Enough

    ctl = Controller(Config(resync_seconds=1.0), clock=lambda: t[0], sleep=sleep)
    ctl.resync_once = resync
    ctl.check_watches = lambda: None
    before = metrics.LOOP_ERRORS.labels("resync")._value.get()
    with pytest.raises(Enough):
        ctl.resync_loop()
    assert len(calls) >= 2, "the loop went on after the error"
    assert metrics.LOOP_ERRORS.labels("resync")._value.get() == before + 1


@pytest.mark.parametrize("leading", [False, True])
def test_ten_thousand_pools_created_and_deleted_leave_nothing_behind(monkeypatch, leading):
    """Before: a standby enqueued every key it saw and never drained (100,000 pools: 100,000 queued keys and
    _triggers entries, 24 MiB); a deleted pool's key stayed queued on the leader too."""
    import asyncio
    import gc
    import tracemalloc

    ctl = Controller(Config())
    q = WorkQueue(lambda key: None)
    if leading:
        q._threads = ["the leader's queue, not draining during the churn"]
    ctl.queue = q

    def pool(i):
        return {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": f"p{i}", "namespace": "ns", "uid": f"u{i}", "resourceVersion": str(i + 1)},
            "spec": {"peers": 1},
        }

    async def churn(n):
        for i in range(n):
            ctl.pool_event("ADDED", pool(i))
        for i in range(n):
            ctl.pool_event("DELETED", pool(i))

    asyncio.run(churn(100))  # warm up
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(churn(10_000))
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert (len(q), ctl.triggers, ctl.world.sizes()["pools"]) == (0, {}, 0)
    # What stays on purpose: the deleted uids (bounded at 20,000) so a late event cannot bring a pool back.
    assert grown / 10_000 < 300, f"{grown / 10_000:.0f} bytes kept per pool created and deleted"


def test_a_pool_with_spec_disruption_gets_its_budget_through_the_reconcile(fake):
    add_pool(fake, disruption={"maxUnavailable": 1})
    run()
    assert ("budget-create", ("ns", desired.deployment_name("p"))) in fake.writes
    assert ("Normal", "Created") in [e[:2] for e in fake.events if "PodDisruptionBudget" in e[2]]
    fake.writes.clear()
    run()
    assert [w for w in fake.writes if w[0].startswith("budget")] == []
    edit_pool(fake, disruption=None)
    fake.pools[("ns", "p")]["spec"].pop("disruption")
    run()
    assert [w[0] for w in fake.writes if w[0].startswith("budget")] == ["budget-delete"]


def test_an_older_role_without_budgets_does_not_stop_the_start(fake):
    """An operator upgraded before its chart (0.1's role has no poddisruptionbudgets): the start's LIST of
    budgets is refused (403), and the deployments and pods are still read; the operator goes on."""
    listed = []

    def list_labelled(kind, label, namespaces):
        listed.append(kind)
        if kind == "poddisruptionbudgets":
            raise kube.Rejected(403, "poddisruptionbudgets.policy is forbidden")
        return []

    fake.list_labelled = list_labelled
    fake.ctl.prefill()
    assert listed == ["deployments", "pods", "poddisruptionbudgets"]
