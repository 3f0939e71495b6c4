"""world -> status (operator/daemonpool_operator/status.py): the status builder, then status and problems in the
exact words a user reads in `kubectl get dp -o yaml`, written from the rules in status.py's docstrings and the
reasons catalog against the mutants `hack/mutation` found surviving (there the builder's own output is never
the oracle)."""

import pathlib

import pytest

from daemonpool_operator import desired, model, status
from daemonpool_operator.model import parse_pool

from testkit.cases import NOW, pool

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


WORDS_NOW = "2026-11-27T18:00:00Z"
SPEC = model.parse_spec(pool()["spec"])  # one peer, worker container "worker"


def cs(
    name="worker",
    restarts=0,
    ready=True,
    waiting=None,
    message=None,
    last=None,
    exit_code=None,
    image="img:1",
    said=None,
):
    out = {"name": name, "image": image, "restartCount": restarts, "ready": ready, "state": {}}
    if waiting:
        out["state"]["waiting"] = {"reason": waiting, **({"message": message} if message else {})}
    else:
        out["state"]["running"] = {}
    if last is not None or exit_code is not None:
        term = {}
        if last is not None:
            term["reason"] = last
        if exit_code is not None:
            term["exitCode"] = exit_code
        if said is not None:
            term["message"] = said
        out["lastState"] = {"terminated": term}
    return out


def pod(name="mail-a", statuses=(), init=(), conditions=(), deleting=False):
    meta = {"name": name, **({"deletionTimestamp": WORDS_NOW} if deleting else {})}
    st = {"containerStatuses": list(statuses)}
    if init:
        st["initContainerStatuses"] = list(init)
    if conditions:
        st["conditions"] = list(conditions)
    return {"metadata": meta, "status": st}


def dep(replicas=1, ready=1, updated=1, generation=1, observed=1, conditions=(), uid="uid-1"):
    st = {"replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated, "observedGeneration": observed}
    if conditions:
        st["conditions"] = list(conditions)
    return {
        "metadata": {"name": "mail", "generation": generation, "ownerReferences": [{"uid": uid, "controller": True}]},
        "status": st,
    }


def with_status(**st) -> dict:
    p = pool()
    p["status"] = st
    return p


def conds(s) -> dict:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in s.dump()["conditions"]}


def build_words(deployment, pods=(), spec=SPEC, p=None, **kw):
    return status.build_status(p or pool(), deployment, list(pods), now=WORDS_NOW, spec=spec, **kw)


# -- pod problems: exact words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "container, expected",
    [
        (
            cs(waiting="ErrImagePull", image="nope:1"),
            (
                "ImagePullFailed",
                "1 worker pod(s) cannot pull their image; first mail-a: container worker: image 'nope:1' cannot be "
                "pulled. Check the image name and tag, the registry credentials (imagePullSecrets) and imagePullPolicy",
            ),
        ),
        (
            cs(waiting="InvalidImageName", image="a b"),
            (
                "ImagePullFailed",
                "1 worker pod(s) cannot pull their image; first mail-a: container worker: image 'a b' cannot be "
                "pulled (not a valid image name). Check the image name and tag, the registry credentials "
                "(imagePullSecrets) and imagePullPolicy",
            ),
        ),
        (
            cs(waiting="CreateContainerConfigError", message='secret "s" not found'),
            (
                "ContainerConfigError",
                "1 worker pod(s) cannot create a container; first mail-a: container worker: CreateContainerConfigError: "
                'secret "s" not found. Create the missing Secret or ConfigMap, or fix the container\'s command and '
                "settings",
            ),
        ),
        (
            cs(waiting="RunContainerError"),
            (
                "ContainerConfigError",
                "1 worker pod(s) cannot create a container; first mail-a: container worker: RunContainerError. "
                "Create the missing Secret or ConfigMap, or fix the container's command and settings",
            ),
        ),
        (
            cs(waiting="CrashLoopBackOff", restarts=1, last="OOMKilled", ready=False),
            (
                "OOMKilled",
                "1 worker pod(s) keep being killed for memory; first mail-a: container worker was OOMKilled "
                "(1 restart(s)). Raise the memory limit, or make the worker use less",
            ),
        ),
        (
            cs(restarts=2, last="OOMKilled", ready=False),
            (
                "OOMKilled",
                "1 worker pod(s) keep being killed for memory; first mail-a: container worker was OOMKilled "
                "(2 restart(s)). Raise the memory limit, or make the worker use less",
            ),
        ),
    ],
)
def test_pod_problem_words(container, expected):
    assert status.pod_problems([pod(statuses=[container])]) == [expected]


@pytest.mark.parametrize(
    "container",
    [
        cs(restarts=1, last="OOMKilled", ready=False),  # one OOM kill, not in back-off: not yet "keeps being killed"
        cs(restarts=0, last="OOMKilled"),
        cs(waiting="ContainerCreating"),
        cs(restarts=5, ready=False, waiting="CrashLoopBackOff", last="Error"),  # a crash loop is WorkersRestarting
    ],
)
def test_not_a_pod_problem(container):
    assert status.pod_problems([pod(statuses=[container])]) == []


def test_unschedulable_words_and_only_for_the_scheduler_saying_so():
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes fit"}
    fix = "Lower the requests, or fix nodeSelector, affinity and tolerations so a node fits"
    assert status.pod_problems([pod(conditions=[cond])]) == [
        ("Unschedulable", f"1 worker pod(s) cannot be scheduled; first mail-a: 0/1 nodes fit. {fix}")
    ]
    no_msg = {k: v for k, v in cond.items() if k != "message"}
    assert status.pod_problems([pod(conditions=[no_msg])]) == [
        ("Unschedulable", f"1 worker pod(s) cannot be scheduled; first mail-a: no node fits. {fix}")
    ]
    for other in (
        {**cond, "status": "True"},
        {**cond, "type": "Ready"},
        {**cond, "reason": "SchedulingGated"},
    ):
        assert status.pod_problems([pod(conditions=[other])]) == [], other


def test_problems_count_pods_name_the_first_by_name_skip_deleted_and_take_one_cause_per_pod():
    pull = cs(waiting="ImagePullBackOff", image="x:1")
    pods = [
        pod("mail-c", statuses=[pull]),
        pod("mail-0", statuses=[pull], deleting=True),
        pod("mail-b", statuses=[cs(waiting="CreateContainerError"), pull]),
        pod("mail-a", statuses=[pull]),
        {"metadata": {}, "status": {"containerStatuses": [pull]}},  # no name at all
    ]
    out = dict(status.pod_problems(pods))
    assert out["ImagePullFailed"].startswith("3 worker pod(s) cannot pull their image; first ?: container worker")
    assert out["ContainerConfigError"].startswith("1 worker pod(s) cannot create a container; first mail-b:")


def test_init_containers_count():
    init = cs(name="init", waiting="ErrImagePull", image="i:1")
    (reason, msg), *_ = status.pod_problems([pod(init=[init], statuses=[cs(waiting="PodInitializing")])])
    assert reason == "ImagePullFailed" and "container init: image 'i:1'" in msg


def test_causes_come_in_priority_order():
    pods = [
        pod("a", statuses=[cs(restarts=3, last="OOMKilled", ready=False)]),
        pod("b", statuses=[cs(waiting="CreateContainerConfigError")]),
        pod("c", statuses=[cs(waiting="ErrImagePull")]),
        pod("d", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]),
    ]
    assert [r for r, _ in status.pod_problems(pods)] == [
        "Unschedulable",
        "ImagePullFailed",
        "ContainerConfigError",
        "OOMKilled",
    ]


# -- Deployment problems -------------------------------------------------------------------------


def test_deployment_problem_words():
    refused = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "quota exceeded"}
    stuck = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "mail-1" has timed out progressing',
    }
    assert status.deployment_problems(dep(conditions=[refused, stuck])) == [
        (
            "PodsRefused",
            "the ReplicaSet cannot create worker pods (FailedCreate): quota exceeded. Raise the ResourceQuota or "
            "LimitRange, or make the template pass the namespace's PodSecurity level",
        ),
        (
            "RolloutStuck",
            'ReplicaSet "mail-1" has timed out progressing. The other Degraded causes, `kubectl describe deploy '
            "mail` and its pods say why",
        ),
    ]
    for benign in (
        {**refused, "status": "False"},
        {**refused, "type": "Available"},
        {**stuck, "status": "True"},
        {**stuck, "reason": "NewReplicaSetAvailable"},
        {**stuck, "type": "Available"},
    ):
        assert status.deployment_problems(dep(conditions=[benign])) == [], benign


# -- build_status: conditions, word for word ---------------------------------------------------------


def test_invalid_spec():
    s = build_words(None, spec=None, invalid="spec.peers: must be at least 0")
    assert conds(s) == {
        "Ready": ("False", "InvalidSpec", "spec.peers: must be at least 0"),
        "Progressing": ("False", "InvalidSpec", "fix the spec; nothing is rolled out meanwhile"),
        "Degraded": ("True", "InvalidSpec", "spec.peers: must be at least 0"),
    }
    d = s.dump()
    assert (d["selector"], d["observedGeneration"], d.get("deployment")) == ("daemonpool.dev/pool=mail", 1, None)
    assert conds(build_words(None, spec=None))["Ready"] == ("False", "InvalidSpec", "spec is invalid")
    assert all(c["observedGeneration"] == 1 for c in s.dump()["conditions"])


def test_rejected_before_any_deployment():
    s = build_words(None, rejected="the API server refused it")
    assert conds(s) == {
        "Ready": ("False", "DeploymentRejected", "the API server refused it"),
        "Progressing": ("False", "DeploymentRejected", "fix the template; nothing is rolled out meanwhile"),
        "Degraded": ("True", "DeploymentRejected", "the API server refused it"),
    }
    assert s.dump()["deployment"] == "mail"


def test_no_deployment_yet():
    s = build_words(None)
    assert conds(s) == {
        "Ready": ("False", "DeploymentMissing", "Deployment mail does not exist yet"),
        "Progressing": ("True", "Creating", "creating Deployment mail"),
        "Degraded": ("False", "AsExpected", ""),
    }
    assert s.dump()["deployment"] == "mail"


def test_conflict_words():
    msg = (
        "Deployment mail exists and is not controlled by this pool ({}); the operator leaves it alone. "
        "Delete or rename that Deployment, or give the pool another name"
    )
    s = build_words(dep(uid="someone-else"))
    assert conds(s) == {
        t: (v, "DeploymentConflict", msg.format("no owner reference to this pool"))
        for t, v in (("Ready", "False"), ("Progressing", "False"), ("Degraded", "True"))
    }
    s = build_words(dep(uid="someone-else"), conflict="controlled by another owner (uid x)")
    assert conds(s)["Ready"][2] == msg.format("controlled by another owner (uid x)")
    assert s.dump()["deployment"] == "mail"


def test_converged():
    s = build_words(dep(), [pod(statuses=[cs(restarts=0)])])
    assert conds(s) == {
        "Ready": ("True", "AllPeersReady", "1/1 workers ready"),
        "Progressing": ("False", "Stable", "1 workers running the current template"),
        "Degraded": ("False", "AsExpected", "0 restart(s) in total"),
    }
    d = s.dump()
    assert (d["peers"], d["readyPeers"], d["updatedPeers"], d["restarts"]) == (1, 1, 1, 0)


def test_a_deployment_with_no_status_yet_counts_zeros():
    d = dep()
    d["status"] = {}
    d["metadata"].pop("generation")
    s = build_words(d)
    assert conds(s)["Ready"] == ("False", "ScalingUp", "0/1 workers ready; 0/1 workers exist")
    out = s.dump()
    assert (out["peers"], out["readyPeers"], out["updatedPeers"], out["restarts"]) == (0, 0, 0, 0)


@pytest.mark.parametrize(
    "deployment, reason, msg",
    [
        (dep(generation=2, observed=1), "RollingOut", "the Deployment controller has not seen the latest change yet"),
        (dep(replicas=1, updated=0), "RollingOut", "0/1 workers updated to the current template"),
        (dep(replicas=2, ready=2, updated=0), "RollingOut", "0/1 workers updated to the current template"),
        (dep(replicas=2, ready=2, updated=1), "ScalingDown", "2 workers exist, 1 wanted"),
        (dep(replicas=0, ready=0, updated=0), "ScalingUp", "0/1 workers exist"),
        (dep(replicas=1, ready=0, updated=1), "WorkersNotReady", "0/1 workers ready"),
    ],
)
def test_not_converged_words(deployment, reason, msg):
    ready = deployment["status"]["readyReplicas"]
    c = conds(build_words(deployment))
    # Said once: before, WorkersNotReady read "0/1 workers ready; 0/1 workers ready".
    said = f"{ready}/1 workers ready" if msg == f"{ready}/1 workers ready" else f"{ready}/1 workers ready; {msg}"
    assert c["Ready"] == ("False", reason, said)
    assert c["Progressing"] == ("True", reason, msg)
    assert build_words(deployment).dump()["problem"] == ""


def test_the_problem_column_is_degradeds_reason_and_nothing_can_progress_past_it():
    """`kubectl get dp` showed Ready's WorkersNotReady while Degraded said ImagePullFailed; Progressing stayed True."""
    pull = pod("mail-a", statuses=[cs(waiting="ErrImagePull", ready=False)])
    s = build_words(dep(replicas=1, ready=0, updated=1), [pull])
    c = conds(s)
    assert c["Ready"] == ("False", "WorkersNotReady", "0/1 workers ready")
    assert c["Degraded"][:2] == ("True", "ImagePullFailed")
    assert c["Progressing"] == (
        "False",
        "ImagePullFailed",
        "0/1 workers ready; blocked until the ImagePullFailed cause is fixed (Degraded says how)",
    )
    assert s.dump()["problem"] == "ImagePullFailed"
    refused = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "q"}
    s = build_words(dep(replicas=0, ready=0, updated=0, conditions=[refused]))
    assert conds(s)["Progressing"][:2] == ("False", "PodsRefused") and s.dump()["problem"] == "PodsRefused"
    s = build_words(dep(replicas=1, ready=0, updated=1), rejected="no")
    assert conds(s)["Progressing"][:2] == ("False", "DeploymentRejected")


def test_restarts_are_a_problem_that_may_yet_progress():
    crash = pod("mail-a", statuses=[cs(restarts=2, ready=False, waiting="CrashLoopBackOff")])
    s = build_words(dep(replicas=1, ready=0, updated=1), [crash])
    assert conds(s)["Progressing"][:2] == ("True", "WorkersNotReady")
    assert s.dump()["problem"] == "WorkersRestarting"
    # A converged pool with an image problem elsewhere (an old pod) is not "blocked": nothing is left to do.
    old = pod("mail-z", statuses=[cs(waiting="ErrImagePull")])
    s = build_words(dep(), [pod(statuses=[cs()]), old])
    assert conds(s)["Progressing"] == ("False", "Stable", "1 workers running the current template")
    assert s.dump()["problem"] == "ImagePullFailed"


def test_early_verdicts_fill_the_problem_column():
    assert build_words(dep(), invalid="spec.peers: bad").dump()["problem"] == "InvalidSpec"
    assert build_words(None, rejected="no").dump()["problem"] == "DeploymentRejected"
    assert build_words(dep(uid="someone-else"), conflict="x").dump()["problem"] == "DeploymentConflict"
    assert build_words(None).dump()["problem"] == ""


def test_a_rollout_held_for_busy_old_workers_says_so():
    held = dep(replicas=3, ready=3, updated=1)
    held["spec"] = {"paused": True}
    held["metadata"]["annotations"] = {"daemonpool.dev/rollout-held": "busy old workers"}
    c = conds(build_words(held, replicas=2))
    assert c["Progressing"] == (
        "True",
        "RollingOut",
        "1/2 workers updated to the current template; paused until the busy old workers finish their items "
        "(status.autoscale says more)",
    )


def test_scaling_out_while_updated_is_fine():
    spec = model.parse_spec({**pool()["spec"], "peers": 3})
    c = conds(build_words(dep(replicas=3, ready=2, updated=3), spec=spec))
    assert c["Progressing"] == ("True", "WorkersNotReady", "2/3 workers ready")
    c = conds(build_words(dep(replicas=2, ready=2, updated=2), spec=spec))
    assert c["Progressing"] == ("True", "ScalingUp", "2/3 workers exist")


def test_workers_restarting_words_and_counts():
    pods = [
        pod("mail-b", statuses=[cs(restarts=2, ready=False, waiting="CrashLoopBackOff", last="Error", exit_code=1)]),
        pod("mail-a", statuses=[cs(restarts=1, ready=False, last=None, exit_code=137)]),
        pod("mail-c", statuses=[cs(restarts=3, ready=True)]),  # back to ready: not "restarting"
        pod("mail-d", statuses=[cs(restarts=4, ready=False)], deleting=True),  # going away: not counted
        pod("mail-e", statuses=[cs(name="sidecar", restarts=9, ready=False)]),  # not the worker container
    ]
    s = build_words(dep(), pods)
    assert conds(s)["Degraded"] == (
        "True",
        "WorkersRestarting",
        "mail-b: 2 restart(s), last Error, exit code 1, now CrashLoopBackOff; mail-a: 1 restart(s), last "
        "Terminated, exit code 137. Hung or crashing workers: see `kubectl describe pod` and the worker's logs "
        "(--previous)",
    )
    assert s.dump()["restarts"] == 6


def test_the_runtimes_termination_message_says_why_a_worker_was_restarted():
    said = "liveness failing: w slot 0 (pid 1): heartbeat is 31.0s old, limit 30s (worker hung?)\n"
    pods = [pod("mail-a", statuses=[cs(restarts=1, ready=False, last="Error", exit_code=137, said=said)])]
    assert conds(build_words(dep(), pods))["Degraded"][2] == (
        "mail-a: 1 restart(s), last Error, exit code 137 (liveness failing: w slot 0 (pid 1): heartbeat is 31.0s old, "
        "limit 30s (worker hung?)). Hung or crashing workers: see `kubectl describe pod` and the worker's logs "
        "(--previous)"
    )


def test_a_recycled_worker_is_not_restarting_unless_it_recycles_into_a_back_off():
    recycled = "recycled after 1000 items (max_items 1000)"
    fresh = pod("mail-a", statuses=[cs(restarts=1, ready=False, last="Completed", exit_code=0, said=recycled)])
    s = build_words(dep(), [fresh])
    assert conds(s)["Degraded"] == ("False", "AsExpected", "1 restart(s) in total (1 worker(s) last recycled)")
    assert (s.dump()["restarts"], s.dump()["recycled"]) == (1, 1)
    looping = pod(
        "mail-b",
        statuses=[
            cs(restarts=4, ready=False, waiting="CrashLoopBackOff", last="Completed", exit_code=0, said=recycled)
        ],
    )
    assert conds(build_words(dep(), [looping]))["Degraded"][1:] == (
        "WorkersRestarting",
        "mail-b: recycles faster than the kubelet's restart back-off allows (last Completed, exit code 0 (recycled "
        "after 1000 items (max_items 1000))); raise spec.recycle.maxItems or maxRssMiB. Hung or crashing workers: "
        "see `kubectl describe pod` and the worker's logs (--previous)",
    )
    crashed = pod("mail-c", statuses=[cs(restarts=1, ready=False, last="Error", exit_code=1, said=recycled)])
    assert conds(build_words(dep(), [crashed]))["Degraded"][1] == "WorkersRestarting", "exit 0 only"


def test_a_crash_loop_with_no_restart_count_yet_is_restarting():
    c = conds(
        build_words(dep(), [pod(statuses=[{"name": "worker", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])])
    )
    assert c["Degraded"][1] == "WorkersRestarting"
    assert c["Degraded"][2].startswith("mail-a: 0 restart(s), now CrashLoopBackOff.")


def test_a_pod_without_status_is_not_counted():
    s = build_words(dep(), [{"metadata": {"name": "mail-a"}}])
    assert s.dump()["restarts"] == 0


def test_degraded_priority_rejected_then_problems_then_restarts():
    crash = pod("mail-b", statuses=[cs(restarts=2, ready=False, waiting="CrashLoopBackOff")])
    pull = pod("mail-c", statuses=[cs(waiting="ErrImagePull")])
    stuck = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "m"}
    refused = {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": "q"}
    assert conds(build_words(dep(), [crash, pull], rejected="no"))["Degraded"] == ("True", "DeploymentRejected", "no")
    assert conds(build_words(dep(conditions=[stuck]), [crash, pull]))["Degraded"][1] == "ImagePullFailed"
    assert conds(build_words(dep(conditions=[stuck, refused]), [crash, pull]))["Degraded"][1] == "PodsRefused"
    assert conds(build_words(dep(conditions=[stuck]), [crash]))["Degraded"][1] == "RolloutStuck"
    assert conds(build_words(dep(), [crash]))["Degraded"][1] == "WorkersRestarting"


def test_last_transition_time_carries_over_only_while_the_status_holds():
    old = "2026-01-01T00:00:00Z"
    p = with_status(
        conditions=[
            {"type": "Ready", "status": "True", "lastTransitionTime": old},
            {"type": "Progressing", "status": "True", "lastTransitionTime": old},
            {"type": "Degraded", "status": "False"},
        ]
    )
    s = status.build_status(p, dep(), [], now=WORDS_NOW, spec=SPEC).dump()
    ltt = {c["type"]: c["lastTransitionTime"] for c in s["conditions"]}
    assert ltt == {"Ready": old, "Progressing": WORDS_NOW, "Degraded": WORDS_NOW}
    assert all(c["observedGeneration"] == 1 for c in s["conditions"])


# -- restart events ------------------------------------------------------------------------------


def test_restart_event_words_and_only_new_restarts():
    pods = [
        pod("mail-a", statuses=[cs(restarts=2, last="Error", exit_code=1)]),
        pod("mail-b", statuses=[cs(restarts=1)]),
        pod("mail-c", statuses=[cs(restarts=0)]),
    ]
    assert status.restart_events(pool(), pods, SPEC) == [
        (
            "WorkerRestarted",
            "3 worker restart(s): mail-a (2 restart(s), last Error, exit code 1), mail-b (1 restart(s))",
        )
    ]
    assert status.restart_events(with_status(restarts=1), pods, SPEC)[0][1].startswith("2 worker restart(s): ")
    assert status.restart_events(with_status(restarts=3), pods, SPEC) == []
    assert status.restart_events(pool(), pods, None) == []
    assert status.restart_events(pool(), [pod(statuses=[{"name": "worker"}])], SPEC) == []


# -- edges the first mutation run found untested ---------------------------------------------------


def no_count(**kw) -> dict:
    """A container status the kubelet has not counted restarts for yet (no restartCount key)."""
    c = cs(**kw)
    del c["restartCount"]
    return c


def test_a_container_status_without_restart_count_counts_zero():
    s = build_words(dep(), [pod(statuses=[no_count(ready=False)])])
    assert s.dump()["restarts"] == 0
    assert conds(s)["Degraded"] == ("False", "AsExpected", "0 restart(s) in total")
    assert status.pod_problems([pod(statuses=[no_count(ready=False, last="OOMKilled")])]) == []
    assert status.pod_problems([pod(statuses=[no_count(waiting="CrashLoopBackOff", last="OOMKilled")])])[0][1] == (
        "1 worker pod(s) keep being killed for memory; first mail-a: container worker was OOMKilled "
        "(0 restart(s)). Raise the memory limit, or make the worker use less"
    )
    pods = [pod("mail-a", statuses=[cs(restarts=2)]), pod("mail-b", statuses=[no_count()])]
    assert status.restart_events(pool(), pods, SPEC) == [
        ("WorkerRestarted", "2 worker restart(s): mail-a (2 restart(s))")
    ]


def test_a_worker_not_ready_without_restarts_is_not_restarting():
    s = build_words(dep(replicas=1, ready=0, updated=1), [pod(statuses=[cs(restarts=0, ready=False)])])
    assert conds(s)["Degraded"] == ("False", "AsExpected", "0 restart(s) in total")


def test_a_deleted_pod_first_does_not_hide_the_others():
    pods = [
        pod("mail-0", statuses=[cs(restarts=7, ready=False)], deleting=True),
        pod("mail-1", statuses=[cs(restarts=1, ready=False)]),
    ]
    s = build_words(dep(), pods)
    assert s.dump()["restarts"] == 1
    assert conds(s)["Degraded"][2].startswith("mail-1: 1 restart(s).")
    assert status.pod_problems([pods[0], pod("mail-1", statuses=[cs(waiting="ErrImagePull")])])[0][1].startswith(
        "1 worker pod(s) cannot pull their image; first mail-1:"
    )


def test_a_deployment_status_without_observed_generation_has_not_been_seen():
    d = dep()
    del d["status"]["observedGeneration"]
    assert conds(build_words(d))["Progressing"] == (
        "True",
        "RollingOut",
        "the Deployment controller has not seen the latest change yet",
    )


def test_a_config_error_message_keeps_its_last_letter():
    msg = status.pod_problems([pod(statuses=[cs(waiting="CreateContainerError", message="no such key X")])])[0][1]
    assert "container worker: CreateContainerError: no such key X. Create the missing" in msg


@pytest.mark.parametrize("deployment", [None, "rejected", "conflict"])
def test_every_status_names_the_selector_and_the_generation_seen(deployment):
    kw = {"rejected": "no"} if deployment == "rejected" else {}
    d = dep(uid="someone-else") if deployment == "conflict" else None
    out = build_words(d, **kw).dump()
    assert (out["selector"], out["observedGeneration"]) == ("daemonpool.dev/pool=mail", 1)
