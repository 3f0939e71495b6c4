"""Probe cost on the local cluster: exec probes against HTTP probes, for the same workers, in one run.

    python bench/probes.py [--pods 40] [--minutes 3]

Runs N example workers with every probe each second, first with `probes: exec`, then with `probes: http`,
each for the given minutes once all are Ready, and measures the CPU seconds per minute the node's
machinery spends: kubelet + containerd + the containerd shims, including everything they reaped (runc
and the exec'd probe processes end up in the shims' children time). Then the /livez latency of one
busy worker under 200 requests/s, and how soon /livez flips after a hang. Prints JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "operator"), os.path.join(ROOT, "hack")]

from scale import example_spec  # noqa: E402  (bench/ is on the path: the same worker as the scale bench)

from daemonpool_operator import desired  # noqa: E402
from localcluster import cluster as local  # noqa: E402
from localcluster import config as C  # noqa: E402
from localcluster import images  # noqa: E402
from localcluster.procs import kubectl  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print(f"[probes] {msg}", file=sys.stderr, flush=True)


def machinery_cpu() -> float:
    """CPU seconds of kubelet, containerd and every shim of the cluster's containerd, with reaped children."""
    total = 0.0
    sock = str(C.CONTAINERD_SOCK).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            if not (
                cmd.startswith(str(C.BIN / "kubelet").encode())
                or (b"containerd" in cmd.split(b"\0")[0] and sock in cmd)
                or (b"containerd-shim" in cmd and sock in cmd)
            ):
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime
        except (OSError, ValueError):
            continue
    return total


def deployment(ns, name, n, how):
    spec = example_spec(
        n,
        timeoutSeconds=4,
        probePeriodSeconds=1,
        probes=how,
        env=[{"name": "WORK_SECONDS", "value": "0.5"}],
        resources={"requests": {"cpu": "1m", "memory": "16Mi"}, "limits": {"memory": "48Mi"}},
    )
    return desired.build_deployment({"metadata": {"name": name, "namespace": ns}, "spec": spec})


def ready(ns, name, n) -> bool:
    r = kubectl("get", "deploy", name, "-n", ns, "-o", "json", check=False)
    if r.returncode:
        return False
    st = json.loads(r.stdout).get("status", {})
    return st.get("readyReplicas", 0) == n


def measure(ns, how, n, minutes) -> dict:
    name = f"probe-{how}"
    kubectl("apply", "-f", "-", input=json.dumps(deployment(ns, name, n, how)))
    t0 = time.monotonic()
    while not ready(ns, name, n):
        if time.monotonic() - t0 > 600:
            raise RuntimeError(f"{n} {how} workers not Ready after 600s")
        time.sleep(2)
    say(f"{n} workers with {how} probes Ready in {time.monotonic() - t0:.0f}s; measuring {minutes} min")
    time.sleep(10)
    c0, w0 = machinery_cpu(), time.monotonic()
    time.sleep(minutes * 60)
    cpu, wall = machinery_cpu() - c0, time.monotonic() - w0
    kubectl("delete", "deploy", name, "-n", ns, "--wait=true", "--timeout=300s")
    return {"pods": n, "cpu_seconds_per_minute": round(cpu * 60 / wall, 2)}


def endpoint(ns) -> dict:
    """p99 of /livez while the worker is busy, at 200 requests/s; and how soon /livez flips after a hang."""
    name = "probe-endpoint"
    kubectl("apply", "-f", "-", input=json.dumps(deployment(ns, name, 1, "http")))
    t0 = time.monotonic()
    while not ready(ns, name, 1):
        if time.monotonic() - t0 > 300:
            raise RuntimeError("the endpoint worker is not Ready")
        time.sleep(1)
    pod = json.loads(
        kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/instance=probe-endpoint", "-o", "json").stdout
    )["items"][0]
    url = f"http://{pod['status']['podIP']}:9309"
    lat, stop = [], threading.Event()

    def one():
        t = time.perf_counter()
        with urllib.request.urlopen(url + "/livez?timeout=3", timeout=2) as r:
            r.read()
        return (time.perf_counter() - t) * 1000

    with cf.ThreadPoolExecutor(8) as ex:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            tick = time.monotonic()
            lat += list(ex.map(lambda _: one(), range(20)))
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))  # 20 per 0.1 s = 200/s
    stop.set()
    lat.sort()
    kubectl("exec", "-n", ns, pod["metadata"]["name"], "--", "touch", "/run/daemonpool/hang")
    hung = time.monotonic()
    flipped = None
    while time.monotonic() - hung < 20:
        try:
            urllib.request.urlopen(url + "/livez?timeout=3", timeout=1).read()
        except urllib.error.HTTPError:
            flipped = time.monotonic() - hung
            break
        except OSError:
            pass
        time.sleep(0.05)
    kubectl("delete", "deploy", name, "-n", ns, "--wait=false")
    return {
        "requests": len(lat),
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 2),
        "livez_flip_after_hang_seconds": None if flipped is None else round(flipped, 1),
        "limit_seconds": 3,
        "note": "the flip comes once the beat is older than the limit (3 s), then at once",
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/probes.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--pods", type=int, default=40, help="workers (default 40)")
    p.add_argument("--minutes", type=float, default=3, help="minutes measured each way (default 3)")
    p.add_argument("--endpoint-only", action="store_true", help="only the /livez latency and flip")
    a = p.parse_args(argv)
    if not local.is_up():
        local.up()
    images.build_image("examples/worker/Dockerfile", "daemonpool/example-worker:dev")
    ns = f"bench-probes-{uuid.uuid4().hex[:4]}"
    kubectl("create", "namespace", ns)
    try:
        if a.endpoint_only:
            out = {"endpoint": endpoint(ns)}
        else:
            exec_ = measure(ns, "exec", a.pods, a.minutes)
            http = measure(ns, "http", a.pods, a.minutes)
            out = {
                "exec": exec_,
                "http": http,
                "http_over_exec": round(http["cpu_seconds_per_minute"] / exec_["cpu_seconds_per_minute"], 3),
                "endpoint": endpoint(ns),
            }
    finally:
        kubectl("delete", "namespace", ns, "--wait=false")
    print(json.dumps(out, indent=1))
    os.makedirs(os.path.join(ROOT, "_out"), exist_ok=True)
    with open(os.path.join(ROOT, "_out", "probes.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
