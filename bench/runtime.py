"""Benchmark the worker runtime's hot paths against baselines measured in the same run.

    python bench/runtime.py [--seconds 1.0] [--probes 40]

Prints JSON. Ratios matter, not absolute numbers: these machines are noisy.
- heartbeat(): calls/s of Daemon.heartbeat() vs a naive heartbeat that locks
  and rewrites the PID file on every call (what the PHP original did).
- probes: median wall time of one liveness probe (the sh probe the kubelet
  runs, and the Python `worker-runtime probe`) vs `sh -c 'test -f FILE'`.
"""

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from worker_runtime import Daemon  # noqa: E402


def rate(fn, seconds):
    n, batch = 0, 1000
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        for _ in range(batch):
            fn()
        n += batch
    return n / (time.perf_counter() - start)


def naive_heartbeat(path):
    def beat():
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {time.time()}\n".encode())
        finally:
            os.close(fd)
        return True

    return beat


def wall(cmd, n, env):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--probes", type=int, default=40)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as run_dir:
        d = Daemon("bench", timeout=30, run_dir=run_dir, signal_map={})
        assert d.start()
        hb = rate(d.heartbeat, a.seconds)
        naive = rate(naive_heartbeat(os.path.join(run_dir, "naive.pid")), a.seconds)
        env = dict(os.environ, PYTHONPATH=ROOT, DAEMONPOOL_NAME="bench", DAEMONPOOL_RUN_DIR=run_dir)
        test_f = os.path.join(run_dir, "bench.0.heartbeat")
        base = wall(["sh", "-c", f"test -f {test_f}"], a.probes, env)
        sh_probe = wall(["sh", os.path.join(ROOT, "worker_runtime", "worker-runtime-probe"), "liveness"], a.probes, env)
        py_probe = wall([sys.executable, "-m", "worker_runtime", "probe", "liveness"], a.probes, env)
        py_probe_isolated = wall(
            [sys.executable, "-I", "-S", os.path.join(ROOT, "bench", "_probe_entry.py"), "liveness"], a.probes, env
        )
        ok = subprocess.run(
            ["sh", os.path.join(ROOT, "worker_runtime", "worker-runtime-probe"), "liveness"], env=env
        ).returncode
        d.stop()
    print(
        json.dumps(
            {
                "heartbeat_calls_per_s": round(hb),
                "naive_heartbeat_calls_per_s": round(naive),
                "heartbeat_speedup_vs_naive": round(hb / naive, 1),
                "probe_healthy_exit": ok,
                "sh_test_f_ms": round(base * 1000, 2),
                "sh_probe_ms": round(sh_probe * 1000, 2),
                "sh_probe_ratio_vs_test_f": round(sh_probe / base, 2),
                "python_probe_ms": round(py_probe * 1000, 2),
                "python_probe_ratio_vs_test_f": round(py_probe / base, 2),
                "python_probe_isolated_ms": round(py_probe_isolated * 1000, 2),
                "targets": {
                    "heartbeat_calls_per_s": ">= 1000000",
                    "heartbeat_speedup_vs_naive": ">= 50",
                    "probe_ms": "<= 25",
                    "probe_ratio_vs_test_f": "<= 5",
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
