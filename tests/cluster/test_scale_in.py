"""Idle-first scale-in on a real cluster: busy workers are never the ones removed (issue 13).

Workers of the example image take a job (``/run/daemonpool/job``, 120 s) and are busy while on it.
The same scenario on a plain Deployment of the same image is the baseline, reported with the result.
"""

from __future__ import annotations

import pytest

from daemonpool_operator import desired

from testkit.cluster import live_pods, record, wait, worker_spec
from testkit.cluster import worker_state as state

pytestmark = pytest.mark.timeout(900)
JOB_SECONDS = 120


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("scalein", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def give_job(cluster, ns, pod_name):
    cluster.kubectl("exec", "-n", ns, pod_name, "--", "sh", "-c", f"echo {JOB_SECONDS} > /run/daemonpool/job")


def busy_now(cluster, ns, names, pods):
    for n in names:
        wait(lambda n=n: (s := state(pods[n])) and s["state"] == "busy", 30, f"{n} busy")


def all_ready(cluster, ns, selector, n):
    pods = live_pods(cluster, ns, selector)
    return (
        len(pods) == n
        and all(
            any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            for p in pods.values()
        )
        and pods
    )


def test_idle_workers_go_first_and_busy_ones_stay(cluster, operator, images, ns):
    sel = "daemonpool.dev/pool=jobs"
    cluster.apply(
        {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": "jobs", "namespace": ns},
            "spec": worker_spec(images["example-worker"], peers=6, work_seconds="0", gracePeriodSeconds=30),
        }
    )
    pods = wait(lambda: all_ready(cluster, ns, sel, 6), 180, "6 ready workers")
    names = sorted(pods)
    busy = names[:3]
    for n in busy:
        give_job(cluster, ns, n)
    busy_now(cluster, ns, busy, pods)

    # Round 1: 3 busy, 3 idle; scale to 3: the 3 idle go, no busy one.
    cluster.kubectl("scale", "dp", "jobs", "--replicas=3", "-n", ns)
    left = wait(lambda: (p := live_pods(cluster, ns, sel)) and len(p) == 3 and p, 120, "3 workers left")
    removed_busy_1 = sorted(set(busy) - set(left))
    assert sorted(left) == busy, f"busy workers removed: {removed_busy_1}"
    events = [e for e in cluster.events(ns, "jobs") if e["reason"] == "IdleFirst"]
    assert events and "3 idle worker(s) go first; 3 busy" in events[-1]["message"]

    # Round 2: back to 6, then 2 of the new ones busy: 5 busy + 1 idle. Scale to 3: the idle one goes
    # first, then the 2 busy for the shortest time; the 3 longest busy stay.
    cluster.kubectl("scale", "dp", "jobs", "--replicas=6", "-n", ns)
    pods = wait(lambda: all_ready(cluster, ns, sel, 6), 180, "6 ready workers again")
    new = sorted(set(pods) - set(busy))
    for n in new[:2]:
        give_job(cluster, ns, n)
    busy_now(cluster, ns, new[:2], pods)
    cluster.kubectl("scale", "dp", "jobs", "--replicas=3", "-n", ns)
    left = wait(lambda: (p := live_pods(cluster, ns, sel)) and len(p) == 3 and p, 120, "3 workers left")
    assert new[2] not in left, "the idle worker went first"
    assert sorted(left) == busy, "the longest-busy workers stay"

    # The baseline: the same image and scenario on a plain Deployment (no operator).
    plain = desired.build_deployment(
        {
            "metadata": {"name": "plain", "namespace": ns},
            "spec": worker_spec(images["example-worker"], peers=6, work_seconds="0", gracePeriodSeconds=30),
        }
    )
    plain["spec"]["selector"] = {"matchLabels": {"app": "plain"}}
    plain["spec"]["template"]["metadata"]["labels"] = {"app": "plain"}
    plain["metadata"]["labels"] = {"app": "plain"}
    cluster.apply(plain)
    pods = wait(lambda: all_ready(cluster, ns, "app=plain", 6), 180, "6 ready plain workers")
    plain_busy = sorted(pods)[:3]
    for n in plain_busy:
        give_job(cluster, ns, n)
    busy_now(cluster, ns, plain_busy, pods)
    cluster.kubectl("scale", "deploy", "plain", "--replicas=3", "-n", ns)
    left = wait(lambda: (p := live_pods(cluster, ns, "app=plain")) and len(p) == 3 and p, 120, "3 plain left")
    record(
        "scale_in_busy_removed",
        {
            "daemonpool": len(removed_busy_1),
            "plain_deployment": len(set(plain_busy) - set(left)),
            "of_busy": 3,
            "then_5_busy_1_idle_to_3": "idle first, longest busy kept",
        },
    )
