"""What one autoscaler pass costs the operator's CPU, without a cluster: N workers in pools of 10 kept in a real
cache (operator/daemonpool_operator/cache.py), their ``/state`` answered by one process of the runtime's own
HTTP server listening on 0.0.0.0 (each worker its own 127.x.y.z address, so each has its own connection).

    python bench/signal_cost.py [--workers 100,1000] [--passes 30] [--churn 0] [--profile]

For each size, the same passes (one a second, as the operator runs them) with long polls
(``statewatch.StateWatch``, what the operator runs) and with every worker asked each pass on a new connection
(the way before: the baseline of this run). --churn S: every worker's state changes every S seconds (0: a
steady load, never). Prints JSON: CPU seconds per pass (the operator's process only: the fake workers are
another process), the cores that is, and the ratio. --profile adds where a long-polling pass spends its time.
It measures; nothing here is a test. The cluster version (fake nodes, the operator in its pod) is
``bench/autoscale.py --phases signal``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "operator")]

from daemonpool_operator import autoscaler, cache, desired, statewatch, workers  # noqa: E402

PORT = 19309
SERVER = """
import sys
sys.path.insert(0, "bench")
from _fakeworkers import serve
server, fake = serve(%d, %r)
print("up", flush=True)
sys.stdin.read()
"""


class PerPass:
    """The way before long polls (the baseline): every worker asked once a pass, a new connection each."""

    answers = 0

    def __init__(self) -> None:
        self.asker = workers.Asker(keep=0)
        self.connects = 0

    def current(self, targets: dict) -> dict:
        by_port: dict = {}
        for key, (ip, port) in targets.items():
            by_port.setdefault(port, {})[key] = ip
        out: dict = {}
        for port, group in by_port.items():
            raw = self.asker.ask_all(group, port)
            out.update({k: (None if r is None else workers.parse(r)) for k, r in raw.items()})
        self.answers += len(targets)
        self.connects = self.asker.connects
        return out

    def close(self) -> None:
        pass


def world(n_workers: int) -> cache.World:
    w = cache.World()
    for p in range(n_workers // 10):
        name = f"s{p:03d}"
        pool = {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": name, "namespace": "bench", "uid": f"u{p}", "generation": 1, "resourceVersion": "1"},
            "spec": {
                "port": PORT,
                "autoscale": {"minPeers": 10, "maxPeers": 10},
                "template": {"spec": {"containers": [{"name": "w", "image": "i"}]}},
            },
        }
        w.set_pool(pool)
        dep = desired.build_deployment(pool, replicas=10, drain_token="tok")
        dep["metadata"]["resourceVersion"] = "2"
        dep["status"] = {"replicas": 10, "updatedReplicas": 10, "readyReplicas": 10}
        w.set_deployment(dep)
        for i in range(10):
            k = p * 10 + i
            w.set_pod(
                {
                    "metadata": {
                        "name": f"{name}-{i}",
                        "namespace": "bench",
                        "uid": f"pod-{k}",
                        "resourceVersion": "3",
                        "labels": {"daemonpool.dev/pool": name, "pod-template-hash": "h1"},
                        "creationTimestamp": "2026-12-01T00:00:00Z",
                        "ownerReferences": [
                            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-h1", "controller": True}
                        ],
                    },
                    "status": {
                        "podIP": f"127.{1 + k // 65536}.{(k // 256) % 256}.{k % 256 or 1}",
                        "phase": "Running",
                        "conditions": [{"type": "Ready", "status": "True"}],
                    },
                }
            )
    return w


def measure(n_workers: int, passes: int, long_poll: bool, profile: bool) -> dict:
    w = world(n_workers)
    watch = statewatch.StateWatch() if long_poll else PerPass()
    a = autoscaler.Autoscaler(
        w,
        enqueue=lambda key: None,
        patch_cost=lambda ns, pod, cost: None,
        post_event=lambda *args: None,
        now=lambda: "2026-12-01T00:00:00Z",
        watch=watch,  # type: ignore[arg-type]
    )
    a.tick()  # warm: connections made, memories built
    answered = sum(1 for k in a._pools)
    prof = cProfile.Profile() if profile else None
    cpu0, t0, connects0, answers0 = time.process_time(), time.monotonic(), watch.connects, watch.answers
    if prof:
        prof.enable()
    for _ in range(passes):
        t = time.monotonic()
        a.tick()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))  # one pass a second, as the operator runs them
    if prof:
        prof.disable()
    cpu = (time.process_time() - cpu0) / passes
    out = {
        "cpu_seconds_per_pass": round(cpu, 5),
        "cores_at_one_pass_a_second": round(cpu, 3),
        "wall_seconds_per_pass": round((time.monotonic() - t0) / passes, 4),
        "new_connections_per_pass": round((watch.connects - connects0) / passes, 1),
        "answers_per_pass": round((watch.answers - answers0) / passes, 1),
        "pools": answered,
    }
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        out["profile"] = buf.getvalue().splitlines()[-20:]
    watch.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/signal_cost.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="100,1000", help="sizes, in workers (pools of 10; default 100,1000)")
    p.add_argument("--passes", type=int, default=30, help="passes measured per size and way (default 30)")
    p.add_argument("--profile", action="store_true", help="where a long-polling pass spends its time")
    p.add_argument("--churn", type=float, default=0.0, help="seconds between state changes of every worker (0: never)")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": ROOT}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER % (PORT, args.churn)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "up"
        result: dict = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine_cores": os.cpu_count()}
        rows = []
        for n in (int(x) for x in args.workers.split(",")):
            row = {
                "workers": n,
                "churn_seconds": args.churn,
                "asked_every_pass": measure(n, args.passes, False, False),
                "long_polls": measure(n, args.passes, True, args.profile),
            }
            row["cpu_ratio_long_polls_to_baseline"] = round(
                row["long_polls"]["cpu_seconds_per_pass"] / row["asked_every_pass"]["cpu_seconds_per_pass"], 3
            )
            rows.append(row)
            print(
                f"{n} workers: {row['asked_every_pass']['cores_at_one_pass_a_second']} cores asking every worker each"
                f" pass, {row['long_polls']['cores_at_one_pass_a_second']} with long polls"
                f" (ratio {row['cpu_ratio_long_polls_to_baseline']})",
                file=sys.stderr,
            )
        result["sizes"] = rows
        print(json.dumps(result, indent=1))
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
