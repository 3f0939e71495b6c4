"""Scale: pools on fake nodes against the same number of plain Deployments, in one run on one cluster.

    python bench/scale.py --pools 100,300,1000 --peers 10 [--operator in-cluster|dev] [--idle 60] [--set K=V]

For each size: `apply` (create everything at once, seconds until every pool is Ready / every Deployment
Available, and the ratio), `scale` (every pool x2 and back, the same for the Deployments), `idle` (the
operator's API writes and reads per minute with nothing changing, from the audit log), and per phase the
operator's peak RSS, CPU seconds and API requests by verb. Prints a short table, then JSON.

Runs on the local cluster (started if it is not up; fake nodes are added as needed). Ratios matter, not
absolute numbers: these machines are noisy. Nothing here is a test: it measures.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import os
import subprocess
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "operator"), os.path.join(ROOT, "hack")]

from kubernetes import client, config  # noqa: E402

from daemonpool_operator import desired, model  # noqa: E402
from localcluster import cluster as local  # noqa: E402
from localcluster import config as C  # noqa: E402
from localcluster import fakenodes, images, install  # noqa: E402

POD_CAPACITY = int(C.FAKE_NODE_CAPACITY["pods"])
THREADS = 16  # parallel creates and patches, the same for pools and Deployments
# How often a phase looks whether it is done: at 1 s a 10 s phase is known to +-1 s per side, up to 0.25 on a
# ratio near 1.3; a LIST of the phase's objects 4 times a second costs both sides the same.
POLL_SECONDS = 0.25


def say(msg):
    print(f"[scale] {msg}", file=sys.stderr, flush=True)


def example_spec(peers: int, placement: dict | None = None, **spec) -> dict:
    """A pool spec of the example worker (also used by bench/probes.py); ``placement`` puts it on fake nodes."""
    container = {
        "name": "worker",
        "image": "daemonpool/example-worker:dev",
        "imagePullPolicy": "IfNotPresent",
        "resources": spec.pop("resources", {"requests": {"cpu": "1m", "memory": "4Mi"}}),
    }
    if "env" in spec:
        container["env"] = spec.pop("env")
    return {
        "peers": peers,
        "timeoutSeconds": 30,
        **spec,
        "template": {"spec": {"containers": [container], **(placement or {})}},
    }


def worker_template(peers: int) -> dict:
    return example_spec(peers, fakenodes.pod_placement())


def pool_body(ns, name, peers):
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "metadata": {"name": name, "namespace": ns},
        "spec": worker_template(peers),
    }


def deployment_body(ns, name, peers):
    """The Deployment the operator would make for the same pool, without the pool's label and owner."""
    d = desired.build_deployment({"metadata": {"name": name, "namespace": ns}, "spec": worker_template(peers)})
    sel = {"bench.daemonpool.dev/deployment": name}
    d["spec"]["selector"] = {"matchLabels": sel}
    labels = {k: v for k, v in d["spec"]["template"]["metadata"]["labels"].items() if k != model.POOL_LABEL}
    d["spec"]["template"]["metadata"]["labels"] = {**labels, **sel}
    d["metadata"]["labels"] = {k: v for k, v in d["metadata"]["labels"].items() if k != model.POOL_LABEL}
    return d


# -- the operator under test ----------------------------------------------------------


class Operator:
    """The operator as users run it: installed by the chart (in-cluster), or `daemonpool-operator --dev`."""

    def __init__(self, mode: str, sets: tuple = ()):
        self.mode = mode
        self.sets = sets  # extra chart values, --set KEY=VALUE each
        self.release = f"daemonpool-operator-bench-{uuid.uuid4().hex[:4]}"
        self.namespace = f"daemonpool-bench-{uuid.uuid4().hex[:4]}"
        self.proc = None

    @property
    def user(self) -> str:
        if self.mode == "dev":
            return "kubernetes-admin"
        return f"system:serviceaccount:{self.namespace}:{self.release}"

    def start(self):
        if self.mode == "dev":
            log = open(os.path.join(ROOT, "_out", "bench-operator.log"), "ab")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemonpool_operator", "--dev", "--log-level", "info"],
                env=dict(
                    os.environ,
                    KUBECONFIG=str(C.KUBECONFIG),
                    PYTHONPATH=os.path.join(ROOT, "operator") + os.pathsep + ROOT,
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            return
        images.build_image("operator/Dockerfile", "daemonpool/operator:dev")
        subprocess.run(
            [
                install.ensure_helm(),
                "upgrade",
                "--install",
                self.release,
                os.path.join(ROOT, "helm", "daemonpool-operator"),
                "-n",
                self.namespace,
                "--create-namespace",
                "--set",
                "image.tag=dev",
                "--take-ownership",  # the chart's CRD may belong to another release (hack/demo, the tests)
                *[a for kv in self.sets for a in ("--set", kv)],
                "--wait",
                "--timeout",
                "180s",
            ],
            check=True,
            env=dict(os.environ, KUBECONFIG=str(C.KUBECONFIG)),
            stdout=subprocess.DEVNULL,
        )

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            return
        subprocess.run(
            [install.ensure_helm(), "uninstall", self.release, "-n", self.namespace, "--wait"],
            env=dict(os.environ, KUBECONFIG=str(C.KUBECONFIG)),
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                str(C.BIN / "kubectl"),
                "--kubeconfig",
                str(C.KUBECONFIG),
                "delete",
                "namespace",
                self.namespace,
                "--wait=false",
            ],
            stdout=subprocess.DEVNULL,
        )

    def pid(self) -> int | None:
        if self.proc is not None:
            return self.proc.pid
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if b"daemonpool-operator" in cmd and b"bench" not in cmd and b"helm" not in cmd:
                    return int(entry)
        return None


class Sampler(threading.Thread):
    """Peak RSS and CPU seconds of the operator's process, sampled every 0.5 s."""

    def __init__(self, op: Operator):
        super().__init__(daemon=True)
        self.op, self.peak, self.stopped = op, 0, False

    def cpu(self) -> float:
        pid = self.op.pid()
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, TypeError):
            return 0.0

    def run(self):
        while not self.stopped:
            pid = self.op.pid()
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) // 1024)
            except (OSError, TypeError):
                pass
            time.sleep(0.5)

    def phase(self):
        self.peak = 0
        return self.cpu()


def audit_lines() -> int:
    with open(C.RUN / "audit" / "audit.log", "rb") as f:
        return sum(1 for _ in f)


def requests_by_verb(user: str, since: int) -> dict:
    out: dict = {}
    with open(C.RUN / "audit" / "audit.log") as f:
        for i, line in enumerate(f):
            if i < since:
                continue
            ev = json.loads(line)
            if ev.get("stage") == "ResponseComplete" and ev["user"]["username"] == user:
                # The leader's Lease renewals are HA, not reconciling: counted apart.
                verb = ("lease-" if "/leases/" in ev["requestURI"] else "") + ev["verb"]
                out[verb] = out.get(verb, 0) + 1
    return out


def pause_other_operators(apps):
    """Another daemonpool operator (hack/demo's) would reconcile the bench's pools too: 0 replicas meanwhile."""
    paused = []
    for d in apps.list_deployment_for_all_namespaces(label_selector="app.kubernetes.io/name=daemonpool-operator").items:
        if d.spec.replicas:
            paused.append((d.metadata.namespace, d.metadata.name, d.spec.replicas))
            apps.patch_namespaced_deployment_scale(d.metadata.name, d.metadata.namespace, {"spec": {"replicas": 0}})
            say(f"paused the operator {d.metadata.namespace}/{d.metadata.name} for the run")

    def restore():
        for ns, name, n in paused:
            apps.patch_namespaced_deployment_scale(name, ns, {"spec": {"replicas": n}})

    return restore


# -- phases ---------------------------------------------------------------------------


def parallel(fn, items):
    with cf.ThreadPoolExecutor(THREADS) as ex:
        list(ex.map(fn, items))


def wait_until(check, timeout, what, every=1.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def namespaces_gone(core, prefix="bench-"):
    """Wait until no namespace of an earlier round (or the warm-up) is still being deleted: the namespace
    controller's deletes would otherwise load the API server during whichever side runs first (the pools)."""

    def left():
        return [n.metadata.name for n in core.list_namespace().items if n.metadata.name.startswith(prefix)]

    try:
        took = wait_until(lambda: not left(), 600, "earlier rounds' namespaces deleted")
    except RuntimeError as exc:
        say(f"{exc}: {left()}; measuring anyway")
        return
    if took >= 1:
        say(f"waited {took:.0f}s for earlier rounds' namespaces to be deleted")


def pools_ready(custom, ns, n, peers):
    items = custom.list_namespaced_custom_object(model.GROUP, model.VERSION, ns, model.PLURAL)["items"]
    ok = 0
    for p in items:
        conds = {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}
        r = conds.get("Ready", {})
        if (
            r.get("status") == "True"
            and r.get("observedGeneration") == p["metadata"]["generation"]
            and p["status"].get("readyPeers") == peers
        ):
            ok += 1
    return ok == n


def deployments_ready(apps, ns, n, peers):
    items = apps.list_namespaced_deployment(ns).items
    return (
        sum(
            1
            for d in items
            if d.status
            and d.status.observed_generation == d.metadata.generation
            and (d.status.ready_replicas or 0) == peers
            and (d.status.replicas or 0) == peers
        )
        == n
    )


def run_size(api, op, sampler, n, peers, idle_seconds):
    core, apps, custom = client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)
    namespaces_gone(core)
    tag = uuid.uuid4().hex[:4]
    pns, dns = f"bench-pools-{n}-{tag}", f"bench-deps-{n}-{tag}"
    for ns in (pns, dns):
        core.create_namespace({"metadata": {"name": ns}})
    names = [f"w{i:04d}" for i in range(n)]
    timeout = 120 + n * peers * 0.2
    result = {"pools": n, "peers": peers}

    def phase(label, fn):
        line, cpu0 = audit_lines(), sampler.phase()
        t = fn()
        result.setdefault(label, {}).update(
            {
                "operator_peak_rss_mib": sampler.peak,
                "operator_cpu_seconds": round(sampler.cpu() - cpu0, 1),
                "operator_requests": requests_by_verb(op.user, line),
            }
        )
        return t

    try:
        say(f"{n} pools x {peers}: apply")

        def apply_pools():
            t0 = time.monotonic()
            parallel(
                lambda nm: custom.create_namespaced_custom_object(
                    model.GROUP, model.VERSION, pns, model.PLURAL, pool_body(pns, nm, peers)
                ),
                names,
            )
            wait_until(lambda: pools_ready(custom, pns, n, peers), timeout, f"{n} pools Ready", POLL_SECONDS)
            return time.monotonic() - t0

        t_pools = phase("apply", apply_pools)
        t0 = time.monotonic()
        parallel(lambda nm: apps.create_namespaced_deployment(dns, deployment_body(dns, nm, peers)), names)
        wait_until(lambda: deployments_ready(apps, dns, n, peers), timeout, f"{n} Deployments Available", POLL_SECONDS)
        t_deps = time.monotonic() - t0
        result["apply"].update(
            pools_seconds=round(t_pools, 1), deployments_seconds=round(t_deps, 1), ratio=round(t_pools / t_deps, 2)
        )
        say(f"apply: pools {t_pools:.1f}s, Deployments {t_deps:.1f}s")

        say("scale x2 and back")

        def scale_pools():
            t0 = time.monotonic()
            for want in (peers * 2, peers):
                parallel(
                    lambda nm, w=want: custom.patch_namespaced_custom_object(
                        model.GROUP, model.VERSION, pns, model.PLURAL, nm, {"spec": {"peers": w}}
                    ),
                    names,
                )
                wait_until(lambda w=want: pools_ready(custom, pns, n, w), timeout * 2, f"pools at {want}", POLL_SECONDS)
            return time.monotonic() - t0

        t_pools = phase("scale", scale_pools)
        t0 = time.monotonic()
        for want in (peers * 2, peers):
            parallel(lambda nm, w=want: apps.patch_namespaced_deployment(nm, dns, {"spec": {"replicas": w}}), names)
            wait_until(
                lambda w=want: deployments_ready(apps, dns, n, w), timeout * 2, f"Deployments at {want}", POLL_SECONDS
            )
        t_deps = time.monotonic() - t0
        result["scale"].update(
            pools_seconds=round(t_pools, 1), deployments_seconds=round(t_deps, 1), ratio=round(t_pools / t_deps, 2)
        )
        say(f"scale: pools {t_pools:.1f}s, Deployments {t_deps:.1f}s")

        say(f"idle {idle_seconds}s")
        time.sleep(10)  # the last status patches land

        def idle():
            time.sleep(idle_seconds)

        phase("idle", idle)
        reqs = result["idle"]["operator_requests"]
        per_min = 60.0 / idle_seconds
        writes = sum(v for k, v in reqs.items() if k in ("create", "update", "patch", "delete"))
        reads = sum(v for k, v in reqs.items() if k in ("get", "list"))
        result["idle"].update(
            writes_per_minute=round(writes * per_min, 1),
            reads_per_minute=round(reads * per_min, 1),
            requests_per_minute=round(sum(reqs.values()) * per_min, 1),
        )
    finally:
        for ns in (pns, dns):
            core.delete_namespace(ns)
        try:  # the pods gone (room on the fake nodes); the namespace objects may follow later
            wait_until(
                lambda: not any(core.list_namespaced_pod(ns, limit=1).items for ns in (pns, dns)),
                600,
                "the pods gone",
            )
        except RuntimeError as exc:
            say(str(exc))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/scale.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--pools", default="100,300,1000", help="comma-separated sizes (default 100,300,1000)")
    p.add_argument("--peers", type=int, default=10, help="workers per pool (default 10)")
    p.add_argument(
        "--operator",
        choices=["in-cluster", "dev"],
        default="in-cluster",
        help="the chart's operator as users run it (default), or --dev from this machine",
    )
    p.add_argument("--idle", type=int, default=60, help="seconds of the idle phase (default 60)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a chart value of the in-cluster operator, e.g. controller.reconcileThreads=8 (repeatable)",
    )
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.pools.split(",")]
    os.makedirs(os.path.join(ROOT, "_out"), exist_ok=True)
    if not local.is_up():
        local.up()
    # Room for the largest size: pools at x2 while the Deployments run at x1 (or the other way), plus a spare node.
    fakenodes.add(math.ceil(max(sizes) * a.peers * 3 / (POD_CAPACITY - 10)) + 1)
    config.load_kube_config(str(C.KUBECONFIG))
    cfg = client.Configuration.get_default_copy()
    cfg.connection_pool_maxsize = THREADS * 2
    api = client.ApiClient(cfg)
    warm = "bench-warmup-" + uuid.uuid4().hex[:4]
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    core.create_namespace({"metadata": {"name": warm}})
    d = deployment_body(warm, "warm", 20)
    apps.create_namespaced_deployment(warm, d)
    say("warming up the fake nodes (the first Deployment after kwok starts is slow)")
    wait_until(lambda: deployments_ready(apps, warm, 1, 20), 300, "the warm-up Deployment")
    core.delete_namespace(warm)
    restore = pause_other_operators(apps)
    op = Operator(a.operator, tuple(a.set))
    op.start()
    sampler = Sampler(op)
    sampler.start()
    results = []
    try:
        for n in sizes:
            results.append(run_size(api, op, sampler, n, a.peers, a.idle))
            print(json.dumps(results[-1]), file=sys.stderr)
    finally:
        sampler.stopped = True
        op.stop()
        restore()
    out = {
        "operator": a.operator,
        "sizes": results,
        "flags": {
            "kube-controller-manager": "--kube-api-qps=200 --kube-api-burst=300",
            # in-cluster: the chart's defaults but these; --dev: the operator's settings from this environment
            "chart_values": a.set,
            "operator_environment": {k: v for k, v in os.environ.items() if k.startswith("DAEMONPOOL_")},
        },
    }
    print(
        f"{'pools':>6} {'peers':>5} {'apply s (pool/dep)':>20} {'ratio':>6} {'scale s (pool/dep)':>20} {'ratio':>6} "
        f"{'idle w/min':>10} {'idle r/min':>10} {'peak MiB':>9}"
    )
    for r in results:
        print(
            f"{r['pools']:>6} {r['peers']:>5} {r['apply']['pools_seconds']:>9}/{r['apply']['deployments_seconds']:<10}"
            f"{r['apply']['ratio']:>6} {r['scale']['pools_seconds']:>9}/{r['scale']['deployments_seconds']:<10}"
            f"{r['scale']['ratio']:>6} {r['idle']['writes_per_minute']:>10} {r['idle']['reads_per_minute']:>10} "
            f"{max(r[p]['operator_peak_rss_mib'] for p in ('apply', 'scale', 'idle')):>9}"
        )
    print(json.dumps(out, indent=1))
    with open(os.path.join(ROOT, "_out", "scale.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
