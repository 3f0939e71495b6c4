"""What the two probe modes say about a worker that holds the GIL for seconds (one long C call).

    python bench/gil.py [--hold 10] [--timeout 30]

A real worker process (timeout 30 s, HTTP answers on) holds the GIL for ``--hold`` seconds in one C call
(libc sleep through ctypes.PyDLL, which does not release it). Meanwhile, every 0.5 s, the sh exec probe
(what `probes: exec` runs) and an HTTP GET /livez (what `probes: http` has the kubelet do, with the 1 s
timeout of a kubelet HTTP probe) are timed. Prints JSON: per mode, how many checks passed,
failed and timed out, and the worst latency. The baseline is the same worker not holding the GIL.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_SH = os.path.join(ROOT, "worker_runtime", "worker-runtime-probe")

WORKER = r"""
import ctypes, sys, time
from worker_runtime import Daemon
d = Daemon("gil", timeout=float(sys.argv[2]), run_dir=sys.argv[1], port=int(sys.argv[3]))
d.start()
print("up", flush=True)
sys.stdin.readline()                       # the bench says when
hold = float(sys.argv[4])
if hold:
    ctypes.PyDLL(None).sleep(int(hold))    # libc sleep, GIL held: no bytecode, no thread runs
else:
    d.sleep(10)
print("done", flush=True)
d.sleep(1)
d.stop()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_check(port: int, timeout: float) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=timeout) as r:
            ok = r.status == 200
    except urllib.error.HTTPError:
        ok = False
    except OSError:
        return "timeout", time.monotonic() - t0
    return ("pass" if ok else "fail"), time.monotonic() - t0


def exec_check(run_dir: str, limit: float) -> tuple[str, float]:
    t0 = time.monotonic()
    r = subprocess.run(
        ["sh", PROBE_SH, "liveness", "--name", "gil", "--run-dir", run_dir, "--timeout", f"{limit:g}"],
        capture_output=True,
    )
    return ("pass" if r.returncode == 0 else "fail"), time.monotonic() - t0


def run(hold: float, timeout: float) -> dict:
    run_dir = tempfile.mkdtemp(prefix="gil-bench-")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT)
    w = subprocess.Popen(
        [sys.executable, "-c", WORKER, run_dir, str(timeout), str(port), str(hold)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert w.stdout.readline().strip() == "up"
    w.stdin.write("go\n")
    w.stdin.flush()
    results: dict = {"http": [], "exec": []}
    end = time.monotonic() + max(hold, 10.0)
    while time.monotonic() < end:
        results["http"].append(http_check(port, 1.0))
        results["exec"].append(exec_check(run_dir, timeout))
        time.sleep(0.5)
    w.wait(30)
    out = {}
    for mode, rows in results.items():
        verdicts = [v for v, _ in rows]
        out[mode] = {
            "checks": len(rows),
            "pass": verdicts.count("pass"),
            "fail": verdicts.count("fail"),
            "timeout": verdicts.count("timeout"),
            "worst_seconds": round(max(t for _, t in rows), 3),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    report = {"hold_seconds": args.hold, "timeout_seconds": args.timeout, "baseline": run(0, args.timeout)}
    report["gil_held"] = run(args.hold, args.timeout)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
