"""Autoscaling on a real cluster (issue 24): real workers of the example image on the real node take items of
heavy-tailed durations from a queue server (examples/worker/queue_server.py) in the pool's namespace.

A pool at zero wakes on its backlog (an http source), grows at once under a burst, shrinks back to zero once
quiet by draining idle workers only, and no worker ever gets SIGTERM in the middle of an item (the workers
tell the queue). `kubectl scale` does not move an autoscaled pool; a drain from any pod but the operator is
refused.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request

import pytest

from testkit.cluster import live_pods, record, wait, worker_spec
from testkit.cluster import worker_state as state

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("autoscale", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def start_queue(cluster, ns, image, pod_name="queue") -> str:
    """The queue server as a pod; returns its base URL (the pod's IP: the operator's dnsPolicy is Default)."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": ns, "labels": {"app": "queue"}},
            "spec": {
                "containers": [
                    {
                        "name": "queue",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python3", "/app/queue_server.py"],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/backlog", "port": 8080}, "periodSeconds": 1},
                        "resources": {"requests": {"cpu": "5m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}},
                        "securityContext": RESTRICTED,
                    }
                ]
            },
        }
    )
    pod = wait(
        lambda: (
            (p := cluster.get("pod", pod_name, ns=ns))
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and p
        ),
        120,
        "the queue server ready",
    )
    return f"http://{pod['status']['podIP']}:8080"


def q(url, path, method="GET"):
    with urllib.request.urlopen(urllib.request.Request(url + path, method=method), timeout=5) as r:
        body = r.read()
    return json.loads(body) if path.startswith("/stats") else body.decode().strip()


def autoscaled_pool(name, ns, image, queue_url, grace=60, **autoscale):
    spec = worker_spec(
        image,
        env=[{"name": "QUEUE_URL", "value": queue_url}],
        gracePeriodSeconds=grace,
        autoscale=autoscale,
    )
    spec.pop("peers")
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def replicas(cluster, ns, name) -> int | None:
    d = cluster.get("deployment", name, ns=ns, check=False)
    return None if not d else d["spec"].get("replicas")


def heavy_tailed(n, seed=24):
    """80 % of 0.5-1.5 s, 20 % of 5-12 s, in a shuffled order (fixed seed: the same items each run)."""
    rnd = random.Random(seed)
    items = [round(rnd.uniform(0.5, 1.5), 2) for _ in range(n * 4 // 5)] + [
        round(rnd.uniform(5, 12), 1) for _ in range(n - n * 4 // 5)
    ]
    rnd.shuffle(items)
    return items


def test_a_pool_at_zero_wakes_on_its_backlog_grows_and_shrinks_to_zero_without_stopping_a_busy_worker(
    cluster, images, ns
):
    url = start_queue(cluster, ns, images["example-worker"])
    name = "auto"
    pool = autoscaled_pool(
        name,
        ns,
        images["example-worker"],
        url,
        minPeers=0,
        maxPeers=6,
        idleSeconds=3,
        stableSeconds=15,
        backlog={"source": "http", "url": f"{url}/backlog", "itemsPerWorker": 3, "periodSeconds": 1},
    )
    cluster.apply(pool)
    wait(lambda: replicas(cluster, ns, name) == 0, 60, "the pool's Deployment at zero")
    items = heavy_tailed(30)
    t0 = time.monotonic()
    q(url, "/put?items=" + ",".join(map(str, items)), "POST")
    seen, last, first_ready = [], 0, None
    while time.monotonic() - t0 < 420:
        r = replicas(cluster, ns, name) or 0
        if r != last:
            seen.append((round(time.monotonic() - t0, 1), r))
            last = r
        if first_ready is None:
            pods = live_pods(cluster, ns, f"daemonpool.dev/pool={name}")
            if any(
                any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
                for p in pods.values()
            ):
                first_ready = time.monotonic() - t0
        stats = q(url, "/stats")
        if stats["done"] == len(items) and r == 0 and not live_pods(cluster, ns, f"daemonpool.dev/pool={name}"):
            break
        time.sleep(0.5)
    steps = [b - a for (_, a), (_, b) in zip([(0, 0)] + seen, seen)]
    flips = sum(1 for x, y in zip(steps, steps[1:]) if x < 0 < y)  # down, then up again
    drained_at = max(i["done"] for i in stats["items"]) - min(i["put"] for i in stats["items"])
    record("autoscale_first_decision_s", seen[0][0] if seen else None)
    record("autoscale_first_ready_s", None if first_ready is None else round(first_ready, 1))
    record("autoscale_queue_drained_s", round(drained_at, 1))
    record("autoscale_replica_changes", seen)
    assert stats["done"] == len(items), f"items not done: {stats['queued']} queued, {stats['inflight']} in flight"
    assert stats["done_twice"] == [], "an item ran twice"
    assert stats["stopped_busy"] == [], f"workers got SIGTERM in the middle of an item: {stats['stopped_busy']}"
    assert seen and seen[0][1] > 0 and max(r for _, r in seen) <= 6
    assert replicas(cluster, ns, name) == 0, "back to zero once quiet"
    assert flips == 0, f"the count went up again after going down (flapping): {seen}"
    status = cluster.get("daemonpool", name, ns=ns)["status"]["autoscale"]
    assert status["desired"] == 0 and status["reason"] and status.get("lastScaleTime")
    reasons = [e["message"] for e in cluster.events(ns, name) if e["reason"] == "Autoscaled"]
    assert any(m.startswith("0 -> ") for m in reasons), reasons
    assert any(" -> 0 workers" in m for m in reasons), reasons

    # kubectl scale does not move an autoscaled pool (spec.peers is not used); the autoscaler keeps it at zero.
    cluster.kubectl("scale", "dp", name, "--replicas=3", "-n", ns)
    time.sleep(5)
    assert replicas(cluster, ns, name) == 0


def test_only_the_operator_may_drain_a_worker(cluster, images, ns):
    url = start_queue(cluster, ns, images["example-worker"])
    name = "guarded"
    cluster.apply(autoscaled_pool(name, ns, images["example-worker"], url, minPeers=1, maxPeers=2))
    pods = wait(
        lambda: (
            (p := live_pods(cluster, ns, f"daemonpool.dev/pool={name}")) and all(state(x) for x in p.values()) and p
        ),
        180,
        "a worker answering",
    )
    worker = next(iter(pods.values()))
    ip = worker["status"]["podIP"]
    script = (
        "import sys, urllib.request\n"
        "for h in ({}, {'Authorization': 'Bearer guess'}):\n"
        f"    r = urllib.request.Request('http://{ip}:9309/drain?seconds=30', method='POST', headers=h)\n"
        "    try:\n"
        "        urllib.request.urlopen(r, timeout=5); print(200)\n"
        "    except urllib.error.HTTPError as e:\n"
        "        print(e.code)\n"
    )
    out = cluster.kubectl("exec", "-n", ns, "queue", "--", "python3", "-c", script).stdout.split()
    assert out == ["403", "403"], out
    s = state(worker)
    assert s["draining"] is False and s["ready"] is True

    # An HPA (as KEDA makes one) on the same pool: reported as a conflict, not fought over.
    cluster.apply(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-guarded", "namespace": ns},
            "spec": {
                "scaleTargetRef": {"apiVersion": "daemonpool.dev/v1alpha1", "kind": "DaemonPool", "name": name},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
                    }
                ],
            },
        }
    )
    conflict = wait(
        lambda: (cluster.get("daemonpool", name, ns=ns).get("status") or {}).get("autoscale", {}).get("conflict"),
        90,
        "the HPA reported as a conflict",
    )
    assert f"{ns}/keda-hpa-guarded" in conflict
    assert any(e["reason"] == "AutoscaleConflict" for e in cluster.events(ns, name))


def _roll(cluster, ns, name, pods, sel) -> tuple:
    """Change the pool's template; its old workers in the order they went, their deletion costs as seen while
    they were still there, and whether the operator held the rollout (paused, marked) at some point."""
    gone: list = []
    costs: dict = {}
    held = False
    pool = cluster.get("daemonpool", name, ns=ns)
    env = pool["spec"]["template"]["spec"]["containers"][0]["env"] + [{"name": "ROLLOUT", "value": "1"}]
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/env", "value": env}]
    cluster.kubectl("patch", "dp", name, "-n", ns, "--type=json", "-p", json.dumps(patch))
    t0 = time.monotonic()
    while time.monotonic() - t0 < 240 and len(gone) < len(pods):
        now = {p["metadata"]["name"]: p for p in cluster.get("pods", "-l", sel, ns=ns)["items"]}
        for n in sorted(pods):
            if n not in gone and (n not in now or now[n]["metadata"].get("deletionTimestamp")):
                gone.append(n)
            elif n in now:
                cost = (now[n]["metadata"].get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")
                if cost is not None:
                    costs[n] = int(cost)
        dep = cluster.get("deployment", name, ns=ns)
        held = held or bool(
            dep["spec"].get("paused") and "daemonpool.dev/rollout-held" in dep["metadata"].get("annotations", {})
        )
        time.sleep(0.5)
    return gone, costs, held


def test_a_rollout_of_an_autoscaled_pool_stops_no_busy_old_worker_where_a_plain_pool_cuts_items_short(
    cluster, images, ns
):
    """Issue 24, item 5: during a template change the old ReplicaSet's idle workers go first (their deletion
    costs), and the busy ones are not stopped at all: they finish their item (30 s, longer than the 10 s grace
    period) while the operator holds the rollout (the Deployment paused, marked), then go. The same rollout of a
    pool that does not autoscale is the baseline: its busy workers get SIGTERM and are killed at the grace period,
    their items cut short."""
    out = {}
    for name, autoscale in (("rolled", {"minPeers": 4, "maxPeers": 4}), ("plain", None)):
        url = start_queue(cluster, ns, images["example-worker"], f"queue-{name}")
        body = autoscaled_pool(name, ns, images["example-worker"], url, grace=10, **(autoscale or {}))
        if autoscale is None:
            del body["spec"]["autoscale"]
            body["spec"]["peers"] = 4
        cluster.apply(body)
        sel = f"daemonpool.dev/pool={name}"
        pods = wait(
            lambda sel=sel: (
                (p := live_pods(cluster, ns, sel)) and len(p) == 4 and all(state(x) for x in p.values()) and p
            ),
            180,
            "4 workers answering",
        )
        q(url, "/put?items=30,30", "POST")
        busy = wait(lambda url=url: (s := q(url, "/stats"))["inflight"] == 2 and s["inflight_by"], 30, "2 workers busy")
        idle = sorted(set(pods) - set(busy))
        time.sleep(3)  # a pass or two of the autoscaler: nothing to do yet (no rollout)
        t0 = time.monotonic()
        order, costs, held = _roll(cluster, ns, name, pods, sel)
        took = round(time.monotonic() - t0, 1)
        time.sleep(2)  # the last /done of a worker that finished as it went
        stats = q(url, "/stats")
        out[name] = {
            "order": order,
            "idle": idle,
            "busy": busy,
            "costs": costs,
            "held": held,
            "rollout_seconds": took,
            "idle_went_first": sorted(order[:2]) == idle,
            "items_done": stats["done"],
            "items_cut_short": stats["inflight"],
            "busy_workers_sent_sigterm": len(stats["stopped_busy"]),
        }
        assert stats["done_twice"] == [], f"{name}: an item ran twice"
    record("rollout_of_a_busy_pool", out)
    rolled, plain = out["rolled"], out["plain"]
    assert (rolled["items_done"], rolled["items_cut_short"], rolled["busy_workers_sent_sigterm"]) == (2, 0, 0), out
    assert rolled["held"], f"the rollout was never held for the busy old workers: {out}"
    # The mechanism, not only its luck (the plain pool's ReplicaSet may pick the idle ones by chance): the hold
    # above, and idle-first costs on every idle old worker seen before it went (a drained idle worker can go
    # before the test's next look: not seen is not a failure, a cost that is not idle-first is).
    seen = {n: rolled["costs"][n] for n in rolled["idle"] if n in rolled["costs"]}
    assert all(c < 0 for c in seen.values()), rolled
    assert rolled["idle_went_first"], f"old workers removed in the order {rolled}"
    # The baseline shows what the hold is for: a 30 s item under a 10 s grace period is cut short.
    assert plain["items_cut_short"] + plain["busy_workers_sent_sigterm"] >= 1, plain
