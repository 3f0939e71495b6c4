"""The example worker: one visible unit of work per loop, and a hang on demand.

Environment (besides the DAEMONPOOL_* the operator sets):
  WORK_SECONDS   time one unit of work takes (default 1)
                 (0: no work of its own; the worker idles until it is given a job)
  HANG_FILE      when this file exists, the worker hangs: it stops calling
                 heartbeat() and sleeps, so the liveness probe must restart it
                 (default $DAEMONPOOL_RUN_DIR/hang, writable on a read-only root:
                 `kubectl exec POD -- touch /run/daemonpool/hang`)
  JOB_FILE       when this file exists, it holds a number of seconds: the worker
                 takes it as one long item and is busy that long, beating
                 (default $DAEMONPOOL_RUN_DIR/job:
                 `kubectl exec POD -- sh -c 'echo 120 > /run/daemonpool/job'`)

Logs one line per unit of work and one when it stops, with the signal.
"""

import os
import sys
import time

from worker_runtime import Daemon


def main() -> int:
    work = float(os.environ.get("WORK_SECONDS", "1"))
    run_dir = os.environ.get("DAEMONPOOL_RUN_DIR", "/tmp")
    hang_file = os.environ.get("HANG_FILE") or os.path.join(run_dir, "hang")
    job_file = os.environ.get("JOB_FILE") or os.path.join(run_dir, "job")
    d = Daemon.from_env()
    running = d.start()
    if not running:
        print(f"{d.name}: all slots held, exiting", flush=True)
        return 0
    print(f"{d.name}: started pid {os.getpid()} slot {d.slot}", flush=True)
    n = 0
    while running:
        if os.path.exists(hang_file):
            # Remove it first: the run dir outlives the container, and the
            # restarted worker should work again.
            os.unlink(hang_file)
            print(f"{d.name}: hanging on request ({hang_file} existed)", flush=True)
            while True:
                time.sleep(3600)
        if os.path.exists(job_file):
            with open(job_file) as f:
                seconds = float(f.read().strip() or 0)
            os.unlink(job_file)
            print(f"{d.name}: job of {seconds:g}s started", flush=True)
            end = time.monotonic() + seconds
            with d.busy():
                while time.monotonic() < end and d.heartbeat():
                    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
            print(f"{d.name}: job {'done' if time.monotonic() >= end else 'interrupted'}", flush=True)
        elif work > 0:
            with d.busy():
                n += 1
                time.sleep(work)
                print(f"{d.name}: unit {n} done", flush=True)
        else:
            time.sleep(0.2)  # idle: nothing to do until a job comes
        running = d.heartbeat()
    print(f"{d.name}: stopping on signal {d.stop_signal} after {n} units", flush=True)
    d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
