"""bench/autoscale.py's `peers` phase: daemonpool's autoscaling against KEDA and an HPA on the same work (issue 25).

One workload, given in turn to each system on the same cluster in one run: timed jobs in PostgreSQL
(examples/mailer/mailer/jobs.py: heavy-tailed, 80 % of 0.2-1 s and 20 % of 5-30 s), a quiet start, a burst,
quiet, a trickle, quiet. The same jobs (a fixed seed), the same worker image and code, the same pod
template (requests, limits, a 30 s grace period) under each:

  daemonpool         a DaemonPool with spec.autoscale (busy workers + the postgres backlog, 5 jobs a worker)
  keda-default       a plain Deployment and a ScaledObject (PostgreSQL scaler) with KEDA's defaults
  keda-tuned         the same, tuned: pollingInterval 5 s, cooldownPeriod 30 s, a 30 s HPA scale-down window
  keda-on-pool       the tuned ScaledObject with a DaemonPool as its target (what a KEDA user gets by switching)
  hpa-cpu            a plain Deployment and an HPA on CPU (metrics-server), 50 % of requests, 1-10, a 30 s
                     scale-down window (an HPA cannot go to zero)

Sampled every 0.5 s per system: replicas, pods alive (terminating ones cost too) and Ready, the queue depth and
the jobs in flight (from the table); the controllers' CPU from /proc (their containers are processes here).
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "examples", "mailer"), os.path.join(ROOT, "tests")]

from daemonpool_operator import desired  # noqa: E402
from mailer import jobs  # noqa: E402

from testkit import keda  # noqa: E402

SYSTEMS = ("daemonpool", "keda-default", "keda-tuned", "keda-on-pool", "hpa-cpu")
MAX = 10
PER_WORKER = 5
IMAGE = "daemonpool/mailer:dev"
GRACE = 30
# What each controller's processes are called on the host (by the name of their executable).
CONTROLLERS = {
    "operator": ("daemonpool-operator",),
    "keda": ("keda", "keda-adapter"),
    "metrics-server": ("metrics-server",),
}


def say(msg):
    print(f"[autoscale] {msg}", file=sys.stderr, flush=True)


def durations(n: int, seed: int) -> list[float]:
    rnd = random.Random(seed)
    out = [round(rnd.uniform(0.2, 1.0), 2) for _ in range(n * 4 // 5)] + [
        round(rnd.uniform(5, 30), 1) for _ in range(n - n * 4 // 5)
    ]
    rnd.shuffle(out)
    return out


def container(dsn: str, table: str) -> dict:
    return {
        "name": "jobs",
        "image": IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-m", "mailer", "jobs"],
        "env": [
            {"name": "JOBS_DSN", "value": dsn},
            {"name": "JOBS_TABLE", "value": table},
            {"name": "JOBS_CPU_SHARE", "value": "0.1"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "48Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    }


def pool(ns: str, name: str, dsn: str, table: str, autoscale: dict | None) -> dict:
    spec: dict = {
        "peers": 0,
        "timeoutSeconds": 30,
        "gracePeriodSeconds": GRACE,
        "template": {"spec": {"containers": [container(dsn, table)]}},
    }
    if autoscale:
        spec["autoscale"] = autoscale
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def plain_deployment(ns: str, name: str, dsn: str, table: str, replicas: int) -> dict:
    """The pool's own Deployment, built by the operator's builder (the same probes and runtime), owned by nobody."""
    body = pool(ns, name, dsn, table, None)
    body["spec"]["peers"] = replicas
    dep = desired.build_deployment(body)
    dep["metadata"] = {"name": name, "namespace": ns, "labels": {"app": name}}
    dep["spec"]["selector"] = {"matchLabels": {"app": name}}
    dep["spec"]["template"]["metadata"]["labels"] = {"app": name}
    dep["apiVersion"], dep["kind"] = "apps/v1", "Deployment"
    return dep


def scaled_object(ns: str, name: str, target: dict, query: str, tuned: bool) -> dict:
    """KEDA's defaults, or tuned: 5 s polling, a 30 s cooldown and a 30 s scale-down window."""
    timings = {"polling_seconds": 5, "cooldown_seconds": 30, "scale_down_window": 30} if tuned else {}
    return keda.scaled_object(ns, name, target, query, PER_WORKER, "jobs", MAX, **timings)


def hpa(ns: str, name: str) -> dict:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1,
            "maxReplicas": MAX,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}},
        },
    }


def objects(system: str, ns: str, dsn: str, table: str) -> tuple[list, str, str]:
    """What the system is made of; the label selector of its pods; the Deployment that runs them."""
    q = jobs.backlog_sql(table)
    name = system
    if system == "daemonpool":
        auto = {
            "minPeers": 0,
            "maxPeers": MAX,
            "stableSeconds": 30,
            "backlog": {
                "source": "postgres",
                "secretRef": {"name": "jobs", "key": "dsn"},
                "query": q,
                "itemsPerWorker": PER_WORKER,
                "periodSeconds": 2,  # one indexed count; the default (5) is tuned KEDA's polling interval
            },
        }
        return [pool(ns, name, dsn, table, auto)], f"daemonpool.dev/pool={name}", name
    if system in ("keda-default", "keda-tuned"):
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        return (
            [plain_deployment(ns, name, dsn, table, 0), scaled_object(ns, name, target, q, system == "keda-tuned")],
            f"app={name}",
            name,
        )
    if system == "keda-on-pool":
        target = {"apiVersion": "daemonpool.dev/v1alpha1", "kind": "DaemonPool", "name": name}
        return (
            [pool(ns, name, dsn, table, None), scaled_object(ns, name, target, q, True)],
            f"daemonpool.dev/pool={name}",
            name,
        )
    if system == "hpa-cpu":
        return [plain_deployment(ns, name, dsn, table, 1), hpa(ns, name)], f"app={name}", name
    raise ValueError(f"unknown system {system!r}; known: {', '.join(SYSTEMS)}")


def cpu_seconds(names: tuple) -> float:
    """CPU seconds so far of every process whose executable is one of ``names`` (children not counted)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            exe = os.path.basename(argv[0].decode(errors="replace"))
            if exe not in names and not (len(argv) > 1 and os.path.basename(argv[1].decode(errors="replace")) in names):
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            continue
    return total


class DeploymentSampler(threading.Thread):
    """Every 0.5 s, until ``stopped``: (seconds since ``t0`` on ``clock``, the Deployment's replicas, its pods,
    those Ready and not being deleted, *``extra()``). A sample that fails is a gap, not an error."""

    def __init__(self, apps, core, ns, deployment, selector, t0, clock=time.monotonic):
        super().__init__(daemon=True)
        self.apps, self.core, self.ns, self.dep, self.sel = apps, core, ns, deployment, selector
        self.t0, self.clock = t0, clock
        self.samples: list = []
        self.stopped = False

    def extra(self) -> tuple:
        return ()

    def sample(self) -> tuple:
        d = self.apps.read_namespaced_deployment(self.dep, self.ns)
        pods = self.core.list_namespaced_pod(self.ns, label_selector=self.sel).items
        ready = sum(
            1
            for p in pods
            if not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        )
        return (self.clock() - self.t0, d.spec.replicas or 0, len(pods), ready, *self.extra())

    def run(self):
        while not self.stopped:
            try:
                self.samples.append(self.sample())
            except Exception:  # noqa: BLE001 - a missed sample is a gap, not an error
                pass
            time.sleep(0.5)


class Sampler(DeploymentSampler):
    """The peers' run: a DeploymentSampler (on wall time, as the jobs table's times are) with the queue's depth
    and the jobs in flight: (t, replicas, pods, ready, queued, inflight)."""

    def __init__(self, core, apps, ns, selector, deployment, dsn, table, t0):
        super().__init__(apps, core, ns, deployment, selector, t0, clock=time.time)
        self.dsn, self.table, self.db = dsn, table, None

    def extra(self) -> tuple:
        queued = self.db.execute(jobs.backlog_sql(self.table)).fetchone()[0]
        return queued, self.db.execute(jobs.busy_sql(self.table)).fetchone()[0]

    def run(self):
        with psycopg.connect(self.dsn, autocommit=True) as self.db:
            super().run()


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 1) if xs else None


def summarize(system, samples, rows, burst_at, n_burst, cpu):
    """rows: (id, seconds, put, taken, done, runs, sigterm) with times in seconds since t0."""
    out: dict = {"system": system}
    before = [s for s in samples if s[0] <= burst_at]
    base_r, base_ready = (before[-1][1], before[-1][3]) if before else (0, 0)
    after = [s for s in samples if s[0] > burst_at]
    dec = next((s[0] - burst_at for s in after if s[1] > base_r), None)
    rdy = next((s[0] - burst_at for s in after if s[3] > base_ready), None)
    out["first_decision_s"] = None if dec is None else round(dec, 1)
    out["first_new_ready_s"] = None if rdy is None else round(rdy, 1)
    burst = rows[:n_burst]
    done = [r[4] for r in burst if r[4] is not None]
    out["queue_drained_s"] = round(max(done) - burst_at, 1) if len(done) == len(burst) else None
    out["worker_seconds"] = round(
        sum(samples[i][2] * (samples[i + 1][0] - samples[i][0]) for i in range(len(samples) - 1))
    )
    waits = [r[3] - r[2] for r in rows if r[3] is not None]
    out["queue_wait_p50_s"], out["queue_wait_p95_s"] = pct(waits, 50), pct(waits, 95)
    out["jobs_done"] = sum(1 for r in rows if r[4] is not None)
    out["jobs"] = len(rows)
    out["busy_sigterm"] = sum(1 for r in rows if r[6] is not None)
    out["jobs_started_twice"] = sum(1 for r in rows if r[5] > 1)
    changes = [
        (round(samples[i][0] - burst_at, 1), samples[i][1])
        for i in range(1, len(samples))
        if samples[i][1] != samples[i - 1][1]
    ]
    steps = [b - a for (_, a), (_, b) in zip([(0, base_r)] + changes, changes)]
    out["replica_changes"] = len(changes)
    # A flap: a scale-up within 30 s of a scale-in (a new burst a minute later is demand, not a flap).
    out["flaps"] = sum(
        1 for (t1, _), (t2, _), x, y in zip(changes, changes[1:], steps, steps[1:]) if x < 0 < y and t2 - t1 <= 30
    )
    out["max_replicas"] = max((s[1] for s in samples), default=0)
    out["controller_cpu_s"] = cpu
    out["timeline"] = changes
    return out


def run_system(system, kube, ns, pg_dsn_host, pg_dsn_pods, window, burst_at, n_burst, trickle, seed):
    core, apps, kubectl = kube
    table = "jobs_" + system.replace("-", "_")
    with psycopg.connect(pg_dsn_host, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(jobs.schema(table))
    objs, selector, dep = objects(system, ns, pg_dsn_pods, table)
    for o in objs:
        kubectl("apply", "-f", "-", input=json.dumps(o))
    # Settle: each system starts at its minimum, its scaler's first look done.
    end = time.monotonic() + 120
    while time.monotonic() < end:
        r = kubectl("get", "deployment", dep, "-n", ns, "-o", "json", check=False)
        if r.returncode == 0:
            d = json.loads(r.stdout)
            want = 1 if system == "hpa-cpu" else 0
            if d["spec"].get("replicas") == want and (d["status"].get("readyReplicas") or 0) == want:
                break
        time.sleep(1)
    time.sleep(10)
    t0 = time.time()
    sampler = Sampler(core, apps, ns, selector, dep, pg_dsn_host, table, t0)
    sampler.start()
    cpu0 = {k: cpu_seconds(v) for k, v in CONTROLLERS.items()}
    rnd_items = durations(n_burst + trickle[2], seed)
    with psycopg.connect(pg_dsn_host, autocommit=True) as db:
        time.sleep(max(0.0, burst_at - (time.time() - t0)))
        jobs.put(db, table, rnd_items[:n_burst])
        t, k = trickle[0], n_burst
        while k < len(rnd_items):
            time.sleep(max(0.0, t - (time.time() - t0)))
            jobs.put(db, table, [rnd_items[k]])
            k += 1
            t += (trickle[1] - trickle[0]) / trickle[2]
        time.sleep(max(0.0, window - (time.time() - t0)))
        sampler.stopped = True
        sampler.join(5)
        cpu = {k: round(cpu_seconds(v) - cpu0[k], 1) for k, v in CONTROLLERS.items()}
        rows = db.execute(
            f"SELECT id, seconds, extract(epoch FROM put_at) - %s, extract(epoch FROM taken_at) - %s,"
            f" extract(epoch FROM done_at) - %s, runs, extract(epoch FROM sigterm_at) - %s FROM {table} ORDER BY id",
            (t0, t0, t0, t0),
        ).fetchall()
    rows = [tuple(None if v is None else float(v) for v in r) for r in rows]
    for o in reversed(objs):
        kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "-n", ns, "--wait=false", check=False)
    gone = time.monotonic() + 120
    while (
        time.monotonic() < gone
        and json.loads(kubectl("get", "pods", "-n", ns, "-l", selector, "-o", "json").stdout)["items"]
    ):
        time.sleep(2)
    return summarize(system, sampler.samples, rows, burst_at, n_burst, cpu), sampler.samples, rows


def plot(path, results, burst_at):
    """One row per system on one time axis: queue depth, workers running, workers busy, SIGTERM to a busy one."""
    import matplotlib  # noqa: PLC0415 - a bench extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.1 * len(results)), sharex=True, squeeze=False)
    for ax, (summary, samples, rows) in zip(axes[:, 0], results):
        t = [s[0] - burst_at for s in samples]
        ax2 = ax.twinx()  # the queue on its own scale, behind the workers
        ax2.fill_between(t, [s[4] for s in samples], color="#dddddd", step="post", label="queue depth (right)")
        ax2.set_ylabel("queued", fontsize=8)
        ax2.set_ylim(bottom=0)
        ax2.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
        ax.step(t, [s[2] for s in samples], where="post", color="#1f77b4", label="workers running", lw=1.5)
        ax.step(t, [s[5] for s in samples], where="post", color="#2ca02c", label="workers busy", lw=1.2)
        for r in rows:
            if r[6] is not None:
                ax.axvline(r[6] - burst_at, color="#d62728", lw=0.8, alpha=0.7)
        ax.set_ylim(0, MAX + 1)
        ax.set_ylabel("workers", fontsize=8)
        ax.set_title(
            f"{summary['system']}: drained {summary['queue_drained_s']} s, {summary['worker_seconds']} worker-s, "
            f"p95 wait {summary['queue_wait_p95_s']} s, busy SIGTERM {summary['busy_sigterm']} (red)",
            fontsize=9,
            loc="left",
        )
    from matplotlib.patches import Patch  # noqa: PLC0415

    handles = [*axes[0, 0].get_legend_handles_labels()[0], Patch(color="#dddddd", label="queue depth (right)")]
    if any(r[6] is not None for _, _, rows in results for r in rows):
        handles.append(plt.Line2D([], [], color="#d62728", lw=0.8, label="SIGTERM to a busy worker"))
    axes[0, 0].legend(handles=handles, loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("seconds since the burst")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def peers_phase(api, kubectl, ns, pg, gateway, systems, window, n_burst, seed, png):
    """Runs each system in turn; returns the summaries (and writes the PNG when matplotlib is there)."""
    from kubernetes import client  # noqa: PLC0415

    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    dsn_pods = pg.dsn(gateway)
    for o in (
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "jobs", "namespace": ns},
            "stringData": {"dsn": dsn_pods, "connection": dsn_pods + "?sslmode=disable"},
        },
        {
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "TriggerAuthentication",
            "metadata": {"name": "jobs", "namespace": ns},
            "spec": {"secretTargetRef": [{"parameter": "connection", "name": "jobs", "key": "connection"}]},
        },
    ):
        kubectl("apply", "-f", "-", input=json.dumps(o))
    burst_at = 20
    trickle = (burst_at + 180, burst_at + 240, 30)
    results = []
    for s in systems:
        say(f"peers: {s} ({window} s)")
        results.append(
            run_system(s, (core, apps, kubectl), ns, pg.dsn(), dsn_pods, window, burst_at, n_burst, trickle, seed)
        )
        say(f"peers: {s}: {json.dumps({k: v for k, v in results[-1][0].items() if k != 'timeline'})}")
    raw = os.path.join(ROOT, "_out", "autoscale-peers-raw.json")
    os.makedirs(os.path.dirname(raw), exist_ok=True)
    with open(raw, "w") as f:  # the samples and rows behind the picture: plot() can be run again on them
        json.dump({"burst_at": burst_at, "results": results}, f)
    if png:
        try:
            plot(png, results, burst_at)
            say(f"peers: wrote {png}")
        except ImportError:
            say("peers: no matplotlib (pip install -e '.[bench]'): no picture")
    return [r[0] for r in results]


def table(rows: list) -> str:
    head = "| system | first decision s | first new Ready s | burst drained s | worker-s | wait p50 / p95 s | busy SIGTERM | started twice | replica changes (flaps) | controller CPU s |"
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cpu = ", ".join(f"{k} {v}" for k, v in r["controller_cpu_s"].items() if v)
        lines.append(
            f"| {r['system']} | {r['first_decision_s']} | {r['first_new_ready_s']} | {r['queue_drained_s']} | {r['worker_seconds']} "
            f"| {r['queue_wait_p50_s']} / {r['queue_wait_p95_s']} | {r['busy_sigterm']} | {r['jobs_started_twice']} "
            f"| {r['replica_changes']} ({r['flaps']}) | {cpu} |"
        )
    return "\n".join(lines)
