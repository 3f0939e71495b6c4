"""world -> status: the status builder."""

import pathlib

import pytest

from daemonpool_operator import desired, status
from daemonpool_operator.model import parse_pool

from cases import NOW, pool

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- status ---------------------------------------------------------------------


def _dep(p, replicas=3, ready=3, updated=3, gen=1, seen=1):
    d = desired.build_deployment(p)
    d["metadata"]["generation"] = gen
    d["status"] = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": seen}
    return d


def _conds(s):
    return {c.type: (c.status, c.reason) for c in s.conditions}


def _p3():
    spec = pool()["spec"]
    spec["peers"] = 3
    return pool(spec)


def _pod(name, restarts=0, ready=True, waiting=None, last=None):
    cs = {"name": "worker", "restartCount": restarts, "ready": ready, "state": {"running": {}}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting}}
    if last:
        cs["lastState"] = {"terminated": last}
    return {"metadata": {"name": name}, "status": {"containerStatuses": [cs]}}


def build(p, dep, pods=(), **kw):
    _, spec = parse_pool(p)
    return status.build_status(p, dep, list(pods), now=NOW, spec=spec, **kw)


def test_status_all_ready():
    p = _p3()
    s = build(p, _dep(p))
    assert (s.peers, s.ready_peers, s.updated_peers) == (3, 3, 3)
    assert s.selector == "daemonpool.dev/pool=mail" and s.observed_generation == 1 and s.deployment == "mail"
    assert _conds(s) == {
        "Ready": ("True", "AllPeersReady"),
        "Progressing": ("False", "Stable"),
        "Degraded": ("False", "AsExpected"),
    }


@pytest.mark.parametrize(
    "dep_kw,reason",
    [
        (dict(replicas=1, ready=1, updated=1), "ScalingUp"),
        (dict(replicas=5, ready=5, updated=5), "ScalingDown"),
        (dict(replicas=3, ready=3, updated=1), "RollingOut"),
        (dict(replicas=3, ready=1, updated=3), "WorkersNotReady"),
        (dict(gen=2, seen=1), "RollingOut"),
    ],
)
def test_status_progressing_reasons(dep_kw, reason):
    p = _p3()
    s = build(p, _dep(p, **dep_kw))
    assert _conds(s)["Ready"] == ("False", reason) and _conds(s)["Progressing"] == ("True", reason)


def test_status_workers_restarting_and_events():
    p = _p3()
    pods = [_pod("a"), _pod("b", restarts=2, ready=False, last={"reason": "Error", "exitCode": 137})]
    s = build(p, _dep(p, ready=2), pods)
    assert s.restarts == 2
    deg = next(c for c in s.conditions if c.type == "Degraded")
    assert (deg.status, deg.reason) == ("True", "WorkersRestarting")
    assert "b: 2 restart(s), last Error, exit code 137" in deg.message
    _, spec = parse_pool(p)
    ((reason, msg),) = status.restart_events(p, pods, spec)
    assert reason == "WorkerRestarted" and "2 worker restart(s)" in msg
    p["status"] = s.dump()
    assert status.restart_events(p, pods, spec) == [], "a repeated pass reports nothing new"
    recovered = build(p, _dep(p), [_pod("a"), _pod("b", restarts=2)])
    assert _conds(recovered)["Degraded"] == ("False", "AsExpected")


def test_status_crashloop_is_degraded():
    p = _p3()
    s = build(p, _dep(p, ready=2), [_pod("c", restarts=5, ready=False, waiting="CrashLoopBackOff")])
    assert _conds(s)["Degraded"] == ("True", "WorkersRestarting")


def test_status_conflict_missing_invalid():
    p = _p3()
    foreign = _dep(p)
    foreign["metadata"]["ownerReferences"] = []
    s = build(p, foreign)
    assert _conds(s) == {
        k: (v, "DeploymentConflict") for k, v in (("Ready", "False"), ("Progressing", "False"), ("Degraded", "True"))
    }
    assert "not controlled by this pool" in s.conditions[0].message
    assert _conds(build(p, None))["Ready"] == ("False", "DeploymentMissing")
    s = status.build_status(p, None, [], now=NOW, spec=None, invalid="spec.peers: must be >= 0")
    assert _conds(s)["Degraded"] == ("True", "InvalidSpec") and "spec.peers" in s.conditions[2].message


def test_status_keeps_transition_time_when_unchanged():
    p = _p3()
    first = build(p, _dep(p))
    p["status"] = first.dump()
    later = status.build_status(p, _dep(p), [], now="2026-02-02T00:00:00Z", spec=parse_pool(p)[1])
    assert later.dump() == first.dump(), "an unchanged world gives an identical status (no write)"
    changed = status.build_status(p, _dep(p, ready=1), [], now="2026-02-02T00:00:00Z", spec=parse_pool(p)[1])
    ready = next(c for c in changed.conditions if c.type == "Ready")
    assert ready.last_transition_time == "2026-02-02T00:00:00Z"
