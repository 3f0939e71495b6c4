"""The operator on a real cluster, end to end with the worker runtime (issue: the operator)."""

from __future__ import annotations

import calendar
import json
import subprocess
import threading
import time

import pytest

from daemonpool_operator import desired

from testkit.cluster import reconciled_again, record, wait, wait_quiet, worker_pool, writes_by
from testkit.skips import unavailable

pytestmark = pytest.mark.timeout(600)


def conditions(obj):
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def ready(cluster, ns, name, peers=None):
    p = cluster.get("dp", name, ns=ns)
    c = conditions(p).get("Ready", {})
    want = p["spec"]["peers"] if peers is None else peers
    return (
        c.get("status") == "True"
        and p["status"].get("readyPeers") == want
        and c.get("observedGeneration") == p["metadata"]["generation"]
    ) and p


def pods(cluster, ns, name, live=True):
    items = cluster.get("pods", "-l", f"daemonpool.dev/pool={name}", ns=ns)["items"]
    return [p for p in items if not (live and p["metadata"].get("deletionTimestamp"))]


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("dp", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_apply_pool_gives_ready_workers_and_the_desired_deployment(cluster, operator, images, ns):
    obj = worker_pool("apply", ns, images["example-worker"], peers=3)
    t0 = time.monotonic()
    cluster.apply(obj)
    live = wait(lambda: ready(cluster, ns, "apply"), 120, "pool apply Ready")
    pool_ready = time.monotonic() - t0
    dep = cluster.get("deployment", "apply", ns=ns)
    # The builder is the oracle: what it builds is what runs (defaults aside).
    want = desired.build_deployment(live)
    assert desired.differences(want["spec"], dep["spec"]) == []
    (ref,) = dep["metadata"]["ownerReferences"]
    assert ref["controller"] and ref["uid"] == live["metadata"]["uid"] and ref["kind"] == "DaemonPool"
    ps = pods(cluster, ns, "apply")
    assert len(ps) == 3 and all(p["status"]["phase"] == "Running" for p in ps)
    assert live["status"]["selector"] == "daemonpool.dev/pool=apply" and live["status"]["deployment"] == "apply"
    assert cluster.kubectl("wait", "--for=condition=Ready", "dp/apply", "-n", ns, "--timeout=5s").returncode == 0
    created = [e for e in cluster.events(ns, "apply") if e["reason"] == "Created"]
    assert created and created[0]["type"] == "Normal"
    # The same Deployment applied directly, in the same run, for comparison.
    direct = desired.build_deployment({"metadata": {"name": "direct", "namespace": ns}, "spec": obj["spec"]})
    t0 = time.monotonic()
    cluster.apply(direct)
    wait(lambda: cluster.get("deployment", "direct", ns=ns)["status"].get("readyReplicas") == 3, 120, "direct ready")
    record(
        "apply_to_ready_seconds",
        {"daemonpool": round(pool_ready, 1), "plain_deployment": round(time.monotonic() - t0, 1)},
    )


def test_scale_up_and_down_with_kubectl_scale(cluster, operator, images, ns):
    cluster.apply(worker_pool("scale", ns, images["example-worker"], peers=1))
    wait(lambda: ready(cluster, ns, "scale"), 120, "pool Ready")
    for n in (4, 2):
        cluster.kubectl("scale", "daemonpool", "scale", f"--replicas={n}", "-n", ns)
        wait(lambda: cluster.get("deployment", "scale", ns=ns)["spec"]["replicas"] == n, 60, f"Deployment at {n}")
        wait(lambda: ready(cluster, ns, "scale", n), 120, f"pool Ready at {n}")
        wait(lambda: len(pods(cluster, ns, "scale", live=False)) == n, 90, f"{n} pods")
        st = cluster.get("dp", "scale", ns=ns)["status"]
        assert st["peers"] == n and st["readyPeers"] == n
    scale = json.loads(
        cluster.kubectl("get", "--raw", f"/apis/daemonpool.dev/v1alpha1/namespaces/{ns}/daemonpools/scale/scale").stdout
    )
    assert scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "daemonpool.dev/pool=scale"
    assert any(e["reason"] == "Scaled" for e in cluster.events(ns, "scale"))
    # An HPA targeting the pool is accepted (the scale subresource and the selector are there).
    r = cluster.kubectl("autoscale", "daemonpool", "scale", "--min=1", "--max=5", "--cpu=80", "-n", ns, check=False)
    if "unknown flag: --cpu" in r.stderr:
        r = cluster.kubectl("autoscale", "daemonpool", "scale", "--min=1", "--max=5", "--cpu-percent=80", "-n", ns)
    assert r.returncode == 0, r.stderr
    cluster.kubectl("delete", "hpa", "scale", "-n", ns)


def test_drift_is_restored(cluster, operator, images, ns):
    cluster.apply(worker_pool("drift", ns, images["example-worker"], peers=2))
    wait(lambda: ready(cluster, ns, "drift"), 120, "pool Ready")
    original = cluster.get("deployment", "drift", ns=ns)
    cluster.kubectl("scale", "deployment", "drift", "--replicas=5", "-n", ns)
    wait(lambda: cluster.get("deployment", "drift", ns=ns)["spec"]["replicas"] == 2, 30, "replicas restored")
    patch = [
        {"op": "replace", "path": "/spec/template/spec/containers/0/livenessProbe/periodSeconds", "value": 60},
        {"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": {"name": "X", "value": "1"}},
    ]
    cluster.kubectl("patch", "deployment", "drift", "-n", ns, "--type=json", "-p", json.dumps(patch))

    def probes_back():
        c = cluster.get("deployment", "drift", ns=ns)["spec"]["template"]["spec"]["containers"][0]
        return c["livenessProbe"]["periodSeconds"] == original["spec"]["template"]["spec"]["containers"][0][
            "livenessProbe"
        ]["periodSeconds"] and not any(e["name"] == "X" for e in c["env"])

    wait(probes_back, 30, "probes and env restored")
    uid = original["metadata"]["uid"]
    cluster.kubectl("delete", "deployment", "drift", "-n", ns, "--wait=false")
    wait(
        lambda: (d := cluster.get("deployment", "drift", ns=ns, check=False)) and d["metadata"]["uid"] != uid,
        60,
        "Deployment recreated",
    )
    wait(lambda: ready(cluster, ns, "drift"), 120, "pool Ready again")


def test_hung_worker_is_restarted_in_time_and_others_are_untouched(cluster, operator, images, ns):
    timeout, period = 6, 2
    cluster.apply(
        worker_pool("hang", ns, images["example-worker"], peers=2, timeout=timeout, probePeriodSeconds=period)
    )
    wait(lambda: ready(cluster, ns, "hang"), 120, "pool Ready")
    victim, other = sorted(pods(cluster, ns, "hang"), key=lambda p: p["metadata"]["name"])
    t_hang = time.time()
    cluster.kubectl(
        "exec", victim["metadata"]["name"], "-n", ns, "--", "python3", "-c", "open('/run/daemonpool/hang', 'w').close()"
    )

    def restarted():
        p = cluster.get("pod", victim["metadata"]["name"], ns=ns)
        cs = p["status"]["containerStatuses"][0]
        return cs.get("restartCount", 0) >= 1 and cs

    cs = wait(restarted, 60, "the hung worker to be restarted")
    finished = cs["lastState"]["terminated"]["finishedAt"]
    t_kill = calendar.timegm(time.strptime(finished, "%Y-%m-%dT%H:%M:%SZ"))  # UTC, whatever the local zone
    took = t_kill - t_hang
    bound = timeout + period + 2
    record(
        "hang_to_restart_seconds",
        {
            "measured": round(took, 1),
            "bound": bound,
            "note": "finishedAt has 1 s resolution; the worker checks for the hang once per 0.5 s unit",
        },
    )
    # Second-resolution timestamps and the worker's 0.5 s unit: allow 1.5 s of measurement slack.
    assert took <= bound + 1.5, (took, bound)
    # The guarantee: never killed before its last beat is T old. The last beat came at most one beat
    # interval (min(1 s, T/10)) before the hang, and finishedAt has 1 s resolution.
    assert took >= timeout - 1 - 1, "killed before its heartbeat could have gone stale"
    o = cluster.get("pod", other["metadata"]["name"], ns=ns)["status"]["containerStatuses"][0]
    assert o.get("restartCount", 0) == 0
    events = cluster.events(ns)
    assert any(
        e["reason"] == "Killing"
        and "liveness" in e["message"]
        and e["involvedObject"]["name"] == victim["metadata"]["name"]
        for e in events
    )
    wait(
        lambda: any(e["reason"] == "WorkerRestarted" and e["type"] == "Warning" for e in cluster.events(ns, "hang")),
        60,
        "a WorkerRestarted Warning event on the pool",
    )
    wait(lambda: cluster.get("dp", "hang", ns=ns)["status"].get("restarts", 0) >= 1, 30, "restarts in status")


def _watch_pods(cluster, ns, selector, seen, stop):
    """Record every pod object the API sends while a test runs (to see a deleted pod's last status)."""
    proc = subprocess.Popen(
        [cluster.kubectl_bin, "get", "--raw", f"/api/v1/namespaces/{ns}/pods?watch=1&labelSelector={selector}"],
        stdout=subprocess.PIPE,
        text=True,
        env=cluster.env(),
    )
    try:
        for line in proc.stdout:
            ev = json.loads(line)
            seen.append((time.monotonic(), ev["type"], ev["object"]))
            if stop.is_set():
                break
    finally:
        proc.kill()


def test_scale_in_lets_the_worker_finish_and_exit_on_sigterm(cluster, operator, images, ns):
    cluster.apply(
        worker_pool(
            "graceful",
            ns,
            images["example-worker"],
            peers=2,
            gracePeriodSeconds=30,
            env=[{"name": "WORK_SECONDS", "value": "2"}],
        )
    )
    wait(lambda: ready(cluster, ns, "graceful"), 120, "pool Ready")
    seen, stop = [], threading.Event()
    t = threading.Thread(
        target=_watch_pods, args=(cluster, ns, "daemonpool.dev/pool=graceful", seen, stop), daemon=True
    )
    t.start()
    # A watch without a resourceVersion starts with the pods that exist: then it is surely watching.
    wait(lambda: len({e[2]["metadata"]["name"] for e in seen if e[1] == "ADDED"}) >= 2, 30, "the watch to start")
    t0 = time.monotonic()
    cluster.kubectl("scale", "dp", "graceful", "--replicas=1", "-n", ns)
    wait(lambda: any(e[1] == "DELETED" for e in seen), 60, "a worker pod to be removed")
    stop.set()
    t_deleted, _, gone = next(e for e in seen if e[1] == "DELETED")
    took = t_deleted - t0
    term = gone["status"]["containerStatuses"][0]["state"].get("terminated", {})
    record("scale_in_exit_seconds", {"measured": round(took, 1), "grace": 30, "exit_code": term.get("exitCode")})
    assert term.get("exitCode") == 0, f"the worker should exit cleanly on SIGTERM, got {term}"
    assert took < 15, f"exit took {took:.1f}s of a 30 s grace period"


def test_delete_pool_removes_deployment_and_pods(cluster, operator, images, ns):
    cluster.apply(worker_pool("gone", ns, images["example-worker"], peers=2))
    wait(lambda: ready(cluster, ns, "gone"), 120, "pool Ready")
    cluster.kubectl("delete", "dp", "gone", "-n", ns, "--timeout=60s")
    wait(lambda: cluster.get("deployment", "gone", ns=ns, check=False) is None, 60, "Deployment garbage-collected")
    wait(lambda: not pods(cluster, ns, "gone", live=False), 90, "pods gone")


def test_foreign_deployment_is_never_touched(cluster, operator, images, ns):
    foreign = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "foreign", "namespace": ns},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "foreign"}},
            "template": {
                "metadata": {"labels": {"app": "foreign"}},
                "spec": {"containers": [{"name": "c", "image": images["worker-base"]}]},
            },
        },
    }
    cluster.apply(foreign)
    before = cluster.get("deployment", "foreign", ns=ns)
    cluster.apply(worker_pool("foreign", ns, images["example-worker"], peers=2))

    def degraded():
        c = conditions(cluster.get("dp", "foreign", ns=ns)).get("Degraded", {})
        return c.get("status") == "True" and c.get("reason") == "DeploymentConflict" and c

    c = wait(degraded, 60, "Degraded/DeploymentConflict")
    assert "not controlled by this pool" in c["message"]
    wait(
        lambda: any(
            e["reason"] == "DeploymentConflict" and e["type"] == "Warning" for e in cluster.events(ns, "foreign")
        ),
        30,
        "a Warning event",
    )
    reconciled_again(cluster, operator, ns, "foreign")
    after = cluster.get("deployment", "foreign", ns=ns)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "the foreign Deployment was written"
    )
    assert not after["metadata"].get("ownerReferences")


def test_invalid_spec_that_passed_the_api_server(cluster, operator, images, ns):
    # maxSurge and maxUnavailable both 0: the schema allows each, the model refuses the pair.
    obj = worker_pool(
        "bad",
        ns,
        images["example-worker"],
        peers=1,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
    )
    cluster.apply(obj)

    def invalid():
        c = conditions(cluster.get("dp", "bad", ns=ns)).get("Degraded", {})
        return c.get("reason") == "InvalidSpec" and c

    c = wait(invalid, 60, "Degraded/InvalidSpec")
    assert "maxSurge" in c["message"] and "set maxSurge to 1" in c["message"]
    assert cluster.get("deployment", "bad", ns=ns, check=False) is None
    warnings = [e for e in cluster.events(ns, "bad") if e["reason"] == "InvalidSpec"]
    assert warnings and warnings[0]["type"] == "Warning"
    # No retry loop, and no new Warning for the same cause when the operator looks at the pool again.
    reconciled_again(cluster, operator, ns, "bad")
    assert len([e for e in cluster.events(ns, "bad") if e["reason"] == "InvalidSpec"]) == len(warnings)
    # Fixing the spec heals the pool.
    obj["spec"]["strategy"] = {"type": "Recreate"}
    cluster.apply(obj)
    wait(lambda: ready(cluster, ns, "bad"), 120, "the fixed pool to become Ready")


def test_operator_restart_in_the_middle_of_a_scale_converges(cluster, operator, images, ns):
    cluster.apply(worker_pool("restart", ns, images["example-worker"], peers=1))
    wait(lambda: ready(cluster, ns, "restart"), 120, "pool Ready")
    old = operator.pod()["metadata"]["name"]
    cluster.kubectl("delete", "pod", old, "-n", operator.namespace, "--wait=false")
    cluster.kubectl("scale", "dp", "restart", "--replicas=3", "-n", ns)
    wait(
        lambda: (
            (p := operator.pod())
            and p["metadata"]["name"] != old
            and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
        ),
        120,
        "a new operator pod",
    )
    wait(lambda: ready(cluster, ns, "restart", 3), 120, "pool Ready at 3 after the restart")
    deps = cluster.get("deployments", "-l", "daemonpool.dev/pool=restart", ns=ns)["items"]
    assert [d["metadata"]["name"] for d in deps] == ["restart"]
    rs = [
        r
        for r in cluster.get("replicasets", "-l", "daemonpool.dev/pool=restart", ns=ns)["items"]
        if r["spec"].get("replicas")
    ]
    assert len(rs) == 1 and rs[0]["spec"]["replicas"] == 3


def test_idle_means_quiet(cluster, operator, images, ns):
    if cluster.audit_log is None:
        unavailable("needs the local cluster's audit log")
    # "Nothing changing": earlier tests' namespaces (and their pools) must be gone first.
    wait(
        lambda: not [n for n in cluster.get("namespaces")["items"] if n["status"].get("phase") == "Terminating"],
        180,
        "earlier test namespaces to be deleted",
        interval=2,
    )
    names = [f"idle-{i:02d}" for i in range(20)]
    cluster.apply(
        [
            worker_pool(n, ns, images["example-worker"], peers=1, env=[{"name": "WORK_SECONDS", "value": "5"}])
            for n in names
        ]
    )
    wait(lambda: all(ready(cluster, ns, n) for n in names), 300, "20 pools Ready", interval=2)
    settled = wait_quiet(cluster, operator.username)  # the last status patches and Events have landed
    record("idle_settle_seconds", settled)
    start = len(cluster.audit_log.read_text().splitlines())
    time.sleep(60)
    writes = writes_by(cluster, operator.username, start)
    record("idle_writes_20_pools_60s", len(writes))
    assert writes == [], writes[:20]
