"""The example worker: one visible unit of work per loop, and a hang on demand.

Environment (besides the DAEMONPOOL_* the operator sets):
  WORK_SECONDS   time one unit of work takes (default 1)
  HANG_FILE      when this file exists, the worker hangs: it stops calling
                 heartbeat() and sleeps, so the liveness probe must restart it
                 (default $DAEMONPOOL_RUN_DIR/hang, writable on a read-only root:
                 `kubectl exec POD -- touch /run/daemonpool/hang`)

Logs one line per unit of work and one when it stops, with the signal.
"""

import os
import sys
import time

from worker_runtime import Daemon


def main() -> int:
    work = float(os.environ.get("WORK_SECONDS", "1"))
    hang_file = os.environ.get("HANG_FILE") or os.path.join(os.environ.get("DAEMONPOOL_RUN_DIR", "/tmp"), "hang")
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
        with d.busy():
            n += 1
            time.sleep(work)
            print(f"{d.name}: unit {n} done", flush=True)
        running = d.heartbeat()
    print(f"{d.name}: stopping on signal {d.stop_signal} after {n} units", flush=True)
    d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
