"""Autoscaling: daemonpool against KEDA and an HPA on the same work (peers); a pool that sizes itself against the
same pool sized by hand (workload); what asking every worker once a second costs the operator at size (signal).

    python bench/autoscale.py [--phases peers,workload,signal] [--systems daemonpool,keda-tuned,...]
                              [--window 420] [--burst 300] [--png docs/autoscale-compared.png]
                              [--workers 100,1000] [--operator in-cluster|dev] [--bursts 4] [--manual-steps 25,35,50]

peers (the default phase; bench/_peers.py says what each system is): timed jobs in PostgreSQL, the same ones
    for each system in turn (daemonpool, KEDA with its defaults and tuned on a Deployment, KEDA on a DaemonPool,
    an HPA on CPU), brings up metrics-server and KEDA (hack/local-cluster addons) and a PostgreSQL on the host.
    Per system: seconds from the burst to the first scaling decision, to the first new worker Ready and to the
    burst drained; worker-seconds over the window; p50/p95 queue wait; busy workers sent SIGTERM; jobs started
    twice; replica changes and flaps; the controllers' CPU. A table, JSON, and one PNG (matplotlib: the bench
    extra, pip install -e '.[bench]').

workload: two queue servers (examples/worker/queue_server.py) and two pools of the example worker on the real
    node, each draining its own queue of the same items (heavy-tailed: 80 % of 0.5-1.5 s, 20 % of 5-12 s) put in
    the same bursts (--bursts of 40, a minute apart, then a trickle). (a) autoscales (minPeers 0, maxPeers 6, the queue's
    length as an http backlog, 3 items per worker); (b) the baseline, sized by hand as people do with
    `kubectl scale`: 6 at each burst, then 6 -> 4 -> 2 -> 1 at --manual-steps seconds after it (default 25, 35,
    50: once the burst is mostly done; 8,14,20 scales in while it still runs). The idle-first pass runs.
    Per system: seconds from a burst to the first decision, to the first new worker Ready and to the queue
    drained; worker-seconds; p50/p95 queue wait; workers that got SIGTERM mid-item; items run twice; replica
    changes and scale-ins.
signal: N workers (pools of 10) on fake nodes, their /state answered by one process on the host (fake pods'
    addresses are the host's own); the operator's CPU and the asks per second, without and then with
    spec.autoscale, and its API writes per minute while the load is steady.

Prints a short table, then JSON. Ratios matter, not absolute numbers: these machines are noisy. It measures;
nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal as _signal
import subprocess
import sys
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "operator"), os.path.join(ROOT, "hack"), os.path.join(ROOT, "bench")]

import _fakeworkers  # noqa: E402
import _peers  # noqa: E402
from kubernetes import client, config  # noqa: E402
from scale import Operator, Sampler, audit_lines, example_spec, pause_other_operators, requests_by_verb  # noqa: E402

from localcluster import addons, fakenodes, images  # noqa: E402
from localcluster import cluster as local  # noqa: E402
from localcluster import config as C  # noqa: E402

IMAGE = "daemonpool/example-worker:dev"
BURST_EVERY = 60  # seconds between bursts of 40 items; then a trickle of one item every 2 s for 40 s
MAX = 6


def say(msg):
    print(f"[autoscale] {msg}", file=sys.stderr, flush=True)


def kubectl(*args, input=None, check=True):
    return subprocess.run(
        [str(C.BIN / "kubectl"), "--kubeconfig", str(C.KUBECONFIG), *args],
        input=input,
        capture_output=True,
        text=True,
        check=check,
    )


def items(n, rnd):
    out = [round(rnd.uniform(0.5, 1.5), 2) for _ in range(n * 4 // 5)] + [
        round(rnd.uniform(5, 12), 1) for _ in range(n - n * 4 // 5)
    ]
    rnd.shuffle(out)
    return out


def queue_pod(ns, name):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "containers": [
                {
                    "name": "queue",
                    "image": IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "/app/queue_server.py"],
                    "readinessProbe": {"httpGet": {"path": "/backlog", "port": 8080}, "periodSeconds": 1},
                    "securityContext": {"runAsNonRoot": True, "readOnlyRootFilesystem": True},
                }
            ]
        },
    }


def pool(ns, name, queue_url, autoscale=None, peers=0):
    spec = example_spec(
        peers,
        env=[{"name": "QUEUE_URL", "value": queue_url}],
        resources={"requests": {"cpu": "5m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}},
        timeoutSeconds=10,
        gracePeriodSeconds=60,
    )
    if autoscale:
        spec["autoscale"] = autoscale
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def post(url, path):
    with urllib.request.urlopen(urllib.request.Request(url + path, method="POST"), timeout=5) as r:
        return r.read()


def stats(url):
    with urllib.request.urlopen(url + "/stats", timeout=10) as r:
        return json.loads(r.read())


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 2) if xs else None


def summarize(name, watch, st, bursts_at):
    s = watch.samples
    out = {"system": name}
    firsts_decision, firsts_ready = [], []
    for b in bursts_at:
        before = [x for x in s if x[0] <= b]
        base_r = before[-1][1] if before else 0
        base_ready = before[-1][3] if before else 0
        after = [x for x in s if x[0] > b and x[0] < b + 55]
        dec = next((x[0] - b for x in after if x[1] > base_r), None)
        rdy = next((x[0] - b for x in after if x[3] > base_ready), None)
        firsts_decision.append(None if dec is None else round(dec, 1))
        firsts_ready.append(None if rdy is None else round(rdy, 1))
    out["first_decision_s"] = firsts_decision
    out["first_new_ready_s"] = firsts_ready
    worker_seconds = sum(max(0, s[i][2]) * (s[i + 1][0] - s[i][0]) for i in range(len(s) - 1))
    out["worker_seconds"] = round(worker_seconds)
    waits = [i["taken"] - i["put"] for i in st["items"]]
    out["queue_wait_p50_s"], out["queue_wait_p95_s"] = pct(waits, 50), pct(waits, 95)
    drained = []
    for b in bursts_at:
        batch = [i for i in st["items"] if b - 1 <= i["put"] - st["t0"] < b + 5]
        drained.append(round(max(i["done"] for i in batch) - st["t0"] - b, 1) if batch else None)
    out["queue_drained_s"] = drained
    out["busy_sigterm"] = len(st["stopped_busy"])
    out["items_twice"] = len(st["done_twice"])
    out["items_done"] = st["done"]
    changes = [(round(s[i][0], 1), s[i][1]) for i in range(1, len(s)) if s[i][1] != s[i - 1][1]]
    out["replica_changes"] = len(changes)
    out["scale_ins"] = sum(1 for i in range(1, len(s)) if s[i][1] < s[i - 1][1])
    out["timeline"] = changes
    return out


def workload(api, bursts: int = 4, steps: tuple = (25, 35, 50)):
    bursts_at = [BURST_EVERY * i for i in range(bursts)]
    trickle = (BURST_EVERY * bursts, BURST_EVERY * bursts + 40, 2.0)
    end = trickle[1] + 80
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    ns = f"bench-autoscale-{uuid.uuid4().hex[:4]}"
    core.create_namespace({"metadata": {"name": ns}})
    try:
        for q in ("queue-a", "queue-b"):
            kubectl("apply", "-f", "-", input=json.dumps(queue_pod(ns, q)))
        kubectl("wait", "--for=condition=Ready", "pod/queue-a", "pod/queue-b", "-n", ns, "--timeout=120s")
        ip = {q: core.read_namespaced_pod(q, ns).status.pod_ip for q in ("queue-a", "queue-b")}
        url_a, url_b = f"http://{ip['queue-a']}:8080", f"http://{ip['queue-b']}:8080"
        a = {
            "minPeers": 0,
            "maxPeers": MAX,
            "idleSeconds": 3,
            "stableSeconds": 15,
            "backlog": {"source": "http", "url": url_a + "/backlog", "itemsPerWorker": 3, "periodSeconds": 1},
        }
        kubectl("apply", "-f", "-", input=json.dumps(pool(ns, "auto", url_a, autoscale=a)))
        kubectl("apply", "-f", "-", input=json.dumps(pool(ns, "manual", url_b, peers=1)))
        kubectl("wait", "--for=condition=Ready", "dp/manual", "-n", ns, "--timeout=180s")
        time.sleep(5)
        rnd = random.Random(24)
        t0 = time.monotonic()
        wall0 = time.time()
        watches = [
            _peers.DeploymentSampler(apps, core, ns, n, f"daemonpool.dev/pool={n}", t0) for n in ("auto", "manual")
        ]
        for w in watches:
            w.start()
        schedule = [(b, items(40, rnd)) for b in bursts_at]
        t = trickle[0]
        while t < trickle[1]:
            schedule.append((t, items(5, rnd)[:1]))
            t += trickle[2]
        # the hand-sizing of (b): 6 at each burst, then 6 -> 4 -> 2 -> 1 every 25 s; 2 for the trickle
        manual = []
        for b in bursts_at:
            manual += [(b, 6), (b + steps[0], 4), (b + steps[1], 2), (b + steps[2], 1)]
        manual += [(trickle[0], 2), (trickle[1] + 25, 1)]
        events = sorted([(t, "put", x) for t, x in schedule] + [(t, "scale", n) for t, n in manual], key=lambda e: e[0])
        for when, what, arg in events:
            time.sleep(max(0.0, when - (time.monotonic() - t0)))
            if what == "put":
                body = "/put?items=" + ",".join(map(str, arg))
                post(url_a, body)
                post(url_b, body)
            else:
                kubectl("scale", "dp", "manual", f"--replicas={arg}", "-n", ns)
        time.sleep(max(0.0, end - (time.monotonic() - t0)))
        for w in watches:
            w.stopped = True
        out = []
        for name, url, w in (("daemonpool autoscale", url_a, watches[0]), ("kubectl scale by hand", url_b, watches[1])):
            st = stats(url)
            st["t0"] = wall0
            out.append(summarize(name, w, st, bursts_at))
        return out
    finally:
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def signal(api, op, sampler, n_workers):
    """N workers (pools of 10) on fake nodes; the operator's CPU and asks/s without and with spec.autoscale."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    ns = f"bench-signal-{n_workers}-{uuid.uuid4().hex[:4]}"
    core.create_namespace({"metadata": {"name": ns}})
    server, counter = _fakeworkers.serve(9309)  # answers long polls as the runtime does (steady: no change)
    pools = n_workers // 10
    try:
        for i in range(pools):
            body = pool(ns, f"s{i:03d}", "http://127.0.0.1:1", peers=10)
            body["spec"]["template"]["spec"].update(fakenodes.pod_placement())
            body["spec"]["template"]["spec"]["containers"][0]["resources"] = {
                "requests": {"cpu": "1m", "memory": "4Mi"}
            }
            custom.create_namespaced_custom_object("daemonpool.dev", "v1alpha1", ns, "daemonpools", body)
        _wait_pools(custom, ns, pools, 10)
        time.sleep(10)
        res = {"workers": n_workers}
        for label, patch in (("plain", None), ("autoscaled", {"minPeers": 10, "maxPeers": 10})):
            if patch:
                for i in range(pools):
                    custom.patch_namespaced_custom_object(
                        "daemonpool.dev", "v1alpha1", ns, "daemonpools", f"s{i:03d}", {"spec": {"autoscale": patch}}
                    )
                _wait_pools(custom, ns, pools, 10, autoscaled=True)
                time.sleep(15)
            line, asks0, cpu0, t = audit_lines(), counter.asks, sampler.cpu(), time.monotonic()
            time.sleep(60)
            took = time.monotonic() - t
            writes = requests_by_verb(op.user, line)
            res[label] = {
                "operator_cpu_cores": round((sampler.cpu() - cpu0) / took, 3),
                "asks_per_second": round((counter.asks - asks0) / took, 1),
                "writes_per_minute": round(
                    sum(v for k, v in writes.items() if k in ("create", "update", "patch", "delete")) * 60 / took, 1
                ),
            }
        return res
    finally:
        server.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _wait_pools(custom, ns, n, peers, autoscaled=False, timeout=600):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        items = custom.list_namespaced_custom_object("daemonpool.dev", "v1alpha1", ns, "daemonpools")["items"]
        ok = 0
        for p in items:
            st = p.get("status") or {}
            conds = {c["type"]: c for c in st.get("conditions", [])}
            if conds.get("Ready", {}).get("status") == "True" and st.get("readyPeers") == peers:
                if not autoscaled or st.get("autoscale"):
                    ok += 1
        if ok == n:
            return
        time.sleep(2)
    raise RuntimeError(f"{n} pools not ready in {timeout}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/autoscale.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--phases", default="peers", help="peers (default), workload, signal, comma-separated")
    p.add_argument("--systems", default=",".join(_peers.SYSTEMS), help="peers: which systems, in this order")
    p.add_argument("--window", type=int, default=420, help="peers: seconds each system runs (default 420)")
    p.add_argument(
        "--burst", type=int, default=300, help="peers: jobs in the burst (default 300; then a trickle of 30)"
    )
    p.add_argument("--png", default=os.path.join(ROOT, "_out", "autoscale-compared.png"), help="peers: the picture")
    p.add_argument("--workers", default="100,1000", help="signal phase sizes, in workers (default 100,1000)")
    p.add_argument("--operator", choices=("in-cluster", "dev"), default="in-cluster")
    p.add_argument("--bursts", type=int, default=4, help="bursts of 40 items, a minute apart (default 4)")
    p.add_argument(
        "--manual-steps",
        default="25,35,50",
        help="seconds after each burst when the hand-sized pool goes to 4, 2, 1 (default 25,35,50)",
    )
    args = p.parse_args(argv)
    # A SIGTERM (timeout, a stopped job) still removes the operator, the namespaces and the PostgreSQL.
    _signal.signal(_signal.SIGTERM, lambda *_: sys.exit(143))
    phases = set(args.phases.split(","))
    systems = [x for x in args.systems.split(",") if x]
    unknown = set(systems) - set(_peers.SYSTEMS)
    if unknown:
        p.error(f"--systems: unknown {', '.join(sorted(unknown))}; known: {', '.join(_peers.SYSTEMS)}")
    local.up()
    images.build_image("images/worker-base/Dockerfile", "daemonpool/worker-base:dev")
    images.build_image("examples/worker/Dockerfile", IMAGE)
    if "peers" in phases:
        images.build_image("examples/mailer/Dockerfile", _peers.IMAGE)
        addons.install(["metrics-server", "keda"])
    config.load_kube_config(str(C.KUBECONFIG))
    api = client.ApiClient()
    restore = pause_other_operators(client.AppsV1Api(api))
    # The peers phase's namespace, where the operator may read the pools' Secrets (the DSN); made for it only.
    peers_ns = f"bench-peers-{uuid.uuid4().hex[:4]}" if "peers" in phases else None
    op = Operator(args.operator, sets=(f"autoscale.secretNamespaces={{{peers_ns}}}",) if peers_ns else ())
    result: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine_cores": os.cpu_count()}
    pg = None
    try:
        if peers_ns:
            kubectl("create", "namespace", peers_ns)
        op.start()
        images.docker_down()
        sampler = Sampler(op)
        sampler.start()
        if "peers" in phases:
            from testkit import services  # noqa: PLC0415 - the tests' real PostgreSQL, on the bridge for pods

            pg = services.Postgres(addresses=("127.0.0.1", C.GATEWAY)).start()
            say(f"peers: {', '.join(systems)}; {args.burst} jobs in a burst, {args.window} s each")
            result["peers"] = _peers.peers_phase(
                api, kubectl, peers_ns, pg, C.GATEWAY, systems, args.window, args.burst, 25, args.png
            )
            result["peers_config"] = {
                "window_s": args.window,
                "burst": args.burst,
                "trickle": "30 jobs, one every 2 s, from 180 s after the burst",
                "jobs": "80 % of 0.2-1 s, 20 % of 5-30 s (seed 25); 10 % of each computes, the rest sleeps",
                "max_workers": _peers.MAX,
                "jobs_per_worker": _peers.PER_WORKER,
            }
        if "workload" in phases:
            steps = tuple(int(x) for x in args.manual_steps.split(","))
            say(f"workload: {args.bursts} bursts of 40 items and a trickle; by hand: 4, 2, 1 at {steps} s after each")
            result["workload"] = workload(api, args.bursts, steps)
            result["workload_config"] = {"bursts": args.bursts, "manual_steps": steps}
        if "signal" in phases:
            fakenodes.add(max(2, max(int(n) for n in args.workers.split(",")) // 100 + 1))
            result["signal"] = []
            for n in args.workers.split(","):
                say(f"signal: {n} workers on fake nodes")
                result["signal"].append(signal(api, op, sampler, int(n)))
    finally:
        op.stop()
        restore()
        if peers_ns:
            kubectl("delete", "namespace", peers_ns, "--wait=false", check=False)
        if pg is not None:
            pg.stop()
    if result.get("peers"):
        print(_peers.table(result["peers"]), file=sys.stderr)
    for row in result.get("workload", []):
        print(
            f"{row['system']:24} decision {row['first_decision_s']} s, new Ready {row['first_new_ready_s']} s, "
            f"drained {row['queue_drained_s']} s, worker-s {row['worker_seconds']}, wait p50/p95 "
            f"{row['queue_wait_p50_s']}/{row['queue_wait_p95_s']} s, busy SIGTERM {row['busy_sigterm']}, "
            f"scale-ins {row['scale_ins']}",
            file=sys.stderr,
        )
    for row in result.get("signal", []):
        print(f"signal {row['workers']} workers: {row}", file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
