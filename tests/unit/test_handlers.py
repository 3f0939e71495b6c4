"""Handlers against a fake API (the only place a fake is allowed): the reconcile logic, fast."""

from __future__ import annotations

import copy
import logging

import kopf
import pytest

from daemonpool_operator import desired, handlers, kube

LOG = logging.getLogger("test")


class FakeKube:
    """In-memory stand-in for daemonpool_operator.kube: same functions, counts writes."""

    def __init__(self):
        self.pools, self.deployments, self.pods = {}, {}, {}
        self.writes, self.events = [], []

    def get_pool(self, ns, name):
        return copy.deepcopy(self.pools.get((ns, name)))

    def get_deployment(self, ns, name):
        return copy.deepcopy(self.deployments.get((ns, name)))

    def create_deployment(self, ns, body):
        key = (ns, body["metadata"]["name"])
        if key in self.deployments:
            return None
        self.writes.append(("create", key))
        obj = copy.deepcopy(body)
        obj["metadata"]["generation"] = 1
        obj["status"] = {}
        self.deployments[key] = obj
        return copy.deepcopy(obj)

    def patch_deployment(self, ns, name, patch):
        self.writes.append(("patch", (ns, name)))
        obj = self.deployments[(ns, name)]
        obj["metadata"].update(patch["metadata"])
        obj["spec"] = copy.deepcopy(patch["spec"])
        return copy.deepcopy(obj)

    def list_pods(self, ns, selector):
        return [copy.deepcopy(p) for (n, _), p in self.pods.items() if n == ns]

    def patch_pool_status(self, ns, name, status):
        self.writes.append(("status", (ns, name)))
        pool = self.pools[(ns, name)]
        cur = pool.setdefault("status", {})
        for k, v in status.items():
            if v is None:
                cur.pop(k, None)
            else:
                cur[k] = v

    def post_event(self, pool, type_, reason, message):
        self.writes.append(("event", reason))
        self.events.append((type_, reason, message))

    now = staticmethod(lambda: "2026-01-01T00:00:00Z")
    NamespaceTerminating = kube.NamespaceTerminating
    Rejected = kube.Rejected
    REQUEST_TIMEOUT = kube.REQUEST_TIMEOUT

    def remove_finalizer(self, pool):
        if kube.FINALIZER in (pool["metadata"].get("finalizers") or []):
            self.writes.append(("unfinalize", pool["metadata"]["name"]))


@pytest.fixture
def fake(monkeypatch):
    f = FakeKube()
    monkeypatch.setattr(handlers, "kube", f)
    monkeypatch.setattr(handlers, "_rejected", {})
    return f


def add_pool(fake, name="p", peers=2, **spec):
    obj = {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {"peers": peers, "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}}, **spec},
    }
    fake.pools[("ns", name)] = obj
    return obj


def test_first_pass_creates_then_an_unchanged_world_writes_nothing(fake):
    add_pool(fake)
    handlers.reconcile("ns", "p")
    assert ("create", ("ns", "p")) in fake.writes and ("Normal", "Created") == fake.events[0][:2]
    dep = fake.deployments[("ns", "p")]
    assert dep == {**desired.build_deployment(fake.pools[("ns", "p")]), "metadata": dep["metadata"], "status": {}}
    fake.writes.clear()
    handlers.reconcile("ns", "p")
    assert fake.writes == [], "idle means quiet"


def test_scale_and_drift_are_patched_back(fake):
    add_pool(fake)
    handlers.reconcile("ns", "p")
    fake.pools[("ns", "p")]["spec"]["peers"] = 5
    fake.writes.clear()
    handlers.reconcile("ns", "p")
    assert ("patch", ("ns", "p")) in fake.writes and fake.deployments[("ns", "p")]["spec"]["replicas"] == 5
    assert ("Normal", "Scaled", "scaled workers from 2 to 5") in fake.events
    fake.deployments[("ns", "p")]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"] = 99
    handlers.reconcile("ns", "p")
    live = fake.deployments[("ns", "p")]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert live["periodSeconds"] != 99 and fake.events[-1][1] == "Updated"


def test_conflict_is_reported_once_and_never_written(fake):
    add_pool(fake)
    fake.deployments[("ns", "p")] = {
        "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "theirs"}},
        "spec": {"replicas": 1},
    }
    before = copy.deepcopy(fake.deployments[("ns", "p")])
    handlers.reconcile("ns", "p")
    handlers.reconcile("ns", "p")
    assert fake.deployments[("ns", "p")] == before
    assert [e[1] for e in fake.events] == ["DeploymentConflict"] and fake.events[0][0] == "Warning"
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "DeploymentConflict"


def test_invalid_spec_is_permanent_with_status_and_one_warning(fake):
    add_pool(fake, strategy={"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})
    with pytest.raises(kopf.PermanentError, match="maxSurge"):
        handlers.reconcile("ns", "p", body=fake.get_pool("ns", "p"), from_change=True)
    handlers.reconcile("ns", "p")  # a later event: status stays, no new warning, no raise
    assert [e[1] for e in fake.events] == ["InvalidSpec"]
    assert ("ns", "p") not in fake.deployments
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "InvalidSpec" and "set maxSurge to 1" in conds["Degraded"]["message"]


def test_worker_restarts_raise_one_warning_per_new_restart(fake):
    add_pool(fake, peers=1)
    handlers.reconcile("ns", "p")
    fake.pods[("ns", "p-1")] = {
        "metadata": {"name": "p-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "w",
                    "restartCount": 1,
                    "ready": False,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"reason": "Error", "exitCode": 137}},
                }
            ]
        },
    }
    handlers.reconcile("ns", "p")
    handlers.reconcile("ns", "p")
    restarts = [e for e in fake.events if e[1] == "WorkerRestarted"]
    assert len(restarts) == 1 and restarts[0][0] == "Warning" and "exit code 137" in restarts[0][2]


def test_terminating_namespace_is_left_alone(fake, monkeypatch):
    add_pool(fake)

    def refuse(ns, body):
        raise kube.NamespaceTerminating("creating")

    monkeypatch.setattr(fake, "create_deployment", refuse)
    handlers.reconcile("ns", "p")  # no exception: the pool goes with its namespace
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
        handlers.reconcile("ns", "p")
    assert len(calls) == 1, "the same body is not sent again"
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["status"] == "True" and conds["Degraded"]["reason"] == "DeploymentRejected"
    assert (
        'Invalid value: "A=B"' in conds["Degraded"]["message"] and "Fix spec.template" in conds["Degraded"]["message"]
    )
    assert [e[:2] for e in fake.events] == [("Warning", "DeploymentRejected")]
    fake.pools[("ns", "p")]["spec"]["peers"] = 3  # the pool changed: try again
    handlers.reconcile("ns", "p")
    assert len(calls) == 2


def test_pods_that_cannot_start_make_the_pool_degraded_with_one_warning(fake):
    add_pool(fake, peers=2)
    handlers.reconcile("ns", "p")
    for i in (1, 2):
        fake.pods[("ns", f"p-{i}")] = {
            "metadata": {"name": f"p-{i}"},
            "status": {
                "containerStatuses": [
                    {
                        "name": "w",
                        "image": "nope:1",
                        "restartCount": 0,
                        "ready": False,
                        "state": {
                            "waiting": {"reason": "ErrImageNeverPull" if i == 1 else "ImagePullBackOff", "message": "x"}
                        },
                    }
                ]
            },
        }
    handlers.reconcile("ns", "p")
    fake.pods[("ns", "p-2")]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] = "ErrImagePull"
    handlers.reconcile("ns", "p")
    conds = {c["type"]: c for c in fake.pools[("ns", "p")]["status"]["conditions"]}
    assert conds["Degraded"]["reason"] == "ImagePullFailed"
    assert conds["Degraded"]["message"].startswith(
        "2 worker pod(s) cannot pull their image; first p-1: container w: "
        "image 'nope:1' cannot be pulled (imagePullPolicy is Never"
    )
    assert [e[1] for e in fake.events if e[0] == "Warning"] == ["ImagePullFailed"], "one Warning per new cause"


def test_old_finalizer_is_removed_on_resume(fake):
    pool = add_pool(fake)
    pool["metadata"]["finalizers"] = [kube.FINALIZER]
    handlers.pool_changed(namespace="ns", name="p", body=copy.deepcopy(pool))
    assert ("unfinalize", "p") in fake.writes


def test_the_health_probe_fails_when_no_resync_finished_for_several_periods(monkeypatch):
    monkeypatch.setattr(handlers, "_progress", {"sweep": 0.0})
    monkeypatch.setattr(
        handlers.time, "monotonic", lambda: handlers.STUCK_AFTER_RESYNCS * handlers.RESYNC_SECONDS + 100
    )
    with pytest.raises(kopf.PermanentError, match="stuck"):
        handlers.resync_health()
    monkeypatch.setattr(handlers, "_progress", {"sweep": handlers.time.monotonic() - 1})
    assert handlers.resync_health() == "last resync 1s ago"


def test_no_handler_forces_a_finalizer():
    """kopf adds a finalizer when any handler needs one (timers, daemons, non-optional delete handlers)."""
    registry = kopf.get_default_registry()
    for h in registry._spawning.get_all_handlers() + registry._changing.get_all_handlers():
        assert not getattr(h, "requires_finalizer", False), h.id
    assert not registry._spawning.get_all_handlers(), "no per-object timers or daemons"
