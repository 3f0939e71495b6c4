"""The runtime's worker forms in pools on a real cluster (issue 23): threads and asyncio workers with
several items in flight are not removed mid-item on scale-in; an unmodified program and an sd_notify program
under `worker-runtime run` are not restarted for want of beats; a leaking worker recycles at its memory mark
without losing items; and the reason a hung worker was restarted under HTTP probes reaches the pod's last
state, the pool's Event and `kubectl describe`.

All of them run the example image (examples/worker/): worker.py in its three forms, notify_program.py.
"""

from __future__ import annotations

import re
import time

import pytest

from testkit.cluster import live_pods, record, wait, worker_spec
from testkit.cluster import worker_state as state

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("forms", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def pool(name, ns, image, env, peers=1, command=None, **spec):
    s = worker_spec(image, peers=peers, env=[{"name": k, "value": str(v)} for k, v in env.items()], **spec)
    if command:
        s["template"]["spec"]["containers"][0]["command"] = command
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": s,
    }


def pool_pods(cluster, ns, name):
    return live_pods(cluster, ns, f"daemonpool.dev/pool={name}")


def ready_pods(cluster, ns, name, n):
    pods = pool_pods(cluster, ns, name)
    ok = len(pods) == n and all(
        any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        for p in pods.values()
    )
    return pods if ok else None


def give(cluster, ns, pod_name, items: str, file="job"):
    cluster.kubectl("exec", "-n", ns, pod_name, "--", "sh", "-c", f"echo {items} > /run/daemonpool/{file}")


def worker_status(cluster, ns, pod_name) -> dict:
    pod = cluster.get("pod", pod_name, ns=ns)
    return next(cs for cs in pod["status"]["containerStatuses"] if cs["name"] == "worker")


def logs(cluster, ns, pod_name, previous=False) -> str:
    args = ["logs", "-n", ns, pod_name, "-c", "worker"] + (["--previous"] if previous else [])
    return cluster.kubectl(*args, check=False).stdout


@pytest.mark.parametrize("mode", ["threads", "asyncio"])
def test_a_worker_with_items_in_flight_is_not_removed_when_one_item_ends(cluster, images, ns, mode):
    name = f"forms-{mode}"
    cluster.apply(pool(name, ns, images["example-worker"], {"WORKER_MODE": mode, "DAEMONPOOL_CAPACITY": 2}, peers=3))
    pods = wait(lambda: ready_pods(cluster, ns, name, 3), 180, "3 ready workers")
    busy = sorted(pods)[1]  # not the first or last by name: no accident of ordering keeps it
    give(cluster, ns, busy, "3,150")
    # Before: when the 3 s item ended, the worker said idle while its 150 s item was still in flight.
    s = wait(lambda: (s := state(pods[busy])) and s["items_done"] >= 1 and s, 60, "the short item done")
    assert (s["state"], s["inflight"], s["capacity"]) == ("busy", 1, 2)
    cluster.kubectl("scale", "dp", name, "--replicas=1", "-n", ns)
    left = wait(lambda: (p := pool_pods(cluster, ns, name)) and len(p) == 1 and p, 120, "1 worker left")
    assert list(left) == [busy], "the worker with an item in flight stays"
    s = state(left[busy])
    assert s and s["state"] == "busy" and s["inflight"] == 1 and s["stop_reason"] is None, s
    record(f"forms_{mode}_busy_kept", {"kept": busy, "inflight": s["inflight"]})


def test_an_unmodified_program_under_run_is_not_restarted_and_is_never_called_idle(cluster, images, ns):
    name = "forms-plain"
    cmd = ["worker-runtime", "run", "--", "sleep", "100000"]
    cluster.apply(pool(name, ns, images["example-worker"], {}, command=cmd, timeoutSeconds=4))
    pods = wait(lambda: ready_pods(cluster, ns, name, 1), 120, "the program ready")
    (pod_name,) = pods
    # Before: `run` beat once, and the kubelet restarted the program every timeoutSeconds or so.
    time.sleep(15)  # the time under test: more than three timeouts
    assert worker_status(cluster, ns, pod_name)["restartCount"] == 0
    assert state(pods[pod_name])["state"] == "unknown"


def test_an_sd_notify_program_beats_says_busy_and_its_hang_is_seen(cluster, images, ns):
    name = "forms-notify"
    cmd = ["worker-runtime", "run", "--heartbeat", "notify", "--", "python3", "/app/notify_program.py"]
    cluster.apply(pool(name, ns, images["example-worker"], {}, command=cmd, timeoutSeconds=4, peers=2))
    pods = wait(lambda: ready_pods(cluster, ns, name, 2), 120, "the programs ready (READY=1)")
    pod_name, other = sorted(pods)[::-1]  # the later name: no accident of ordering keeps it
    give(cluster, ns, pod_name, "25")
    s = wait(lambda: (s := state(pods[pod_name])) and s["state"] == "busy" and s, 30, "busy from X_DAEMONPOOL_INFLIGHT")
    assert s["status"] == "item 1 of 1" and state(pods[other])["state"] == "idle"
    cluster.kubectl("scale", "dp", name, "--replicas=1", "-n", ns)
    left = wait(lambda: (p := pool_pods(cluster, ns, name)) and len(p) == 1 and p, 120, "1 program left")
    assert list(left) == [pod_name], "the busy program stays"
    wait(lambda: state(pods[pod_name])["state"] == "idle", 60, "idle again")
    assert worker_status(cluster, ns, pod_name)["restartCount"] == 0
    give(cluster, ns, pod_name, "", file="hang")
    cs = wait(
        lambda: (cs := worker_status(cluster, ns, pod_name))["restartCount"] >= 1 and cs, 90, "the hang restarted"
    )
    message = cs["lastState"]["terminated"].get("message", "")
    assert message.startswith("liveness failing: ") and "heartbeat is" in message, cs["lastState"]


def test_the_reason_a_hung_worker_was_restarted_reaches_describe_and_the_pools_event(cluster, images, ns):
    name = "forms-hung"
    cluster.apply(pool(name, ns, images["example-worker"], {"WORK_SECONDS": "0"}, timeoutSeconds=6))
    pods = wait(lambda: ready_pods(cluster, ns, name, 1), 120, "ready")
    (pod_name,) = pods
    give(cluster, ns, pod_name, "", file="hang")
    cs = wait(lambda: (cs := worker_status(cluster, ns, pod_name))["restartCount"] >= 1 and cs, 90, "restarted")
    # Before: HTTP probes left only "HTTP probe failed with statuscode: 503"; nobody learnt why.
    message = cs["lastState"]["terminated"].get("message", "")
    assert re.match(r"liveness failing: forms-hung slot 0 \(pid \d+\): heartbeat is \d+\.\ds old, limit \d+s", message)
    described = cluster.kubectl("describe", "pod", "-n", ns, pod_name).stdout
    assert "liveness failing:" in described and "heartbeat is" in described
    event = wait(
        lambda: [e for e in cluster.events(ns, name) if e["reason"] == "WorkerRestarted"], 60, "a WorkerRestarted event"
    )[-1]
    assert "liveness failing:" in event["message"], event["message"]
    record("forms_hung_restart_message", message)


def test_a_leaking_worker_recycles_at_its_memory_mark_and_no_item_is_lost(cluster, images, ns):
    name = "forms-leak"
    env = {"WORK_SECONDS": "0", "LEAK_MIB": "12", "DONE_FILE": "/run/daemonpool/done"}
    cluster.apply(pool(name, ns, images["example-worker"], env, recycle={"maxRssMiB": 40}))
    pods = wait(lambda: ready_pods(cluster, ns, name, 1), 120, "ready")
    (pod_name,) = pods
    items = 8
    give(cluster, ns, pod_name, ",".join(["0.5"] * items))

    def done():
        # The done file is in the emptyDir: it outlives the containers, as the job file does.
        r = cluster.kubectl("exec", "-n", ns, pod_name, "--", "cat", "/run/daemonpool/done", check=False)
        lines = r.stdout.split()
        return lines if len(lines) >= items else None

    lines = wait(done, 180, f"all {items} items done across recycled containers", interval=2)
    n = len(lines)
    assert n == items, f"each item done once: {lines}"
    cs = worker_status(cluster, ns, pod_name)
    assert cs["restartCount"] >= 1
    term = cs["lastState"]["terminated"]
    assert term["exitCode"] == 0 and term.get("message", "").startswith("recycled at "), term
    assert "recycled at" in logs(cluster, ns, pod_name, previous=True)
    dp = wait(
        lambda: (dp := cluster.get("dp", name, ns=ns))["status"].get("recycled") == 1 and dp, 30, "status.recycled"
    )
    degraded = next(c for c in dp["status"]["conditions"] if c["type"] == "Degraded")
    # Recycling is not a problem in status; recycling every second or two meets the kubelet's restart
    # back-off, and then status says exactly that (this test recycles that fast on purpose).
    assert (
        degraded["status"] == "False" or "recycles faster than the kubelet's restart back-off" in degraded["message"]
    ), degraded
    record("forms_leak_recycled", {"restarts": cs["restartCount"], "items_done": n, "of": items})
