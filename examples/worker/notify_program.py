"""An unmodified program that speaks systemd's sd_notify and knows nothing of daemonpool.

Run it under `worker-runtime run --heartbeat notify -- python3 notify_program.py` (the pool's command in
examples/forms.yaml), or under systemd with `Type=notify` and `WatchdogSec=`: the same protocol, the same
program. It says READY=1 when initialised, WATCHDOG=1 every second, STATUS= what it does, and
X_DAEMONPOOL_INFLIGHT=N while it works on items (so `run` reports it busy, not unknown). Standard library
only; items come through $JOB_FILE (comma-separated seconds) and $HANG_FILE hangs it, as in worker.py.
"""

import os
import signal
import socket
import sys
import time

RUN_DIR = os.environ.get("DAEMONPOOL_RUN_DIR", "/tmp")
JOB_FILE = os.environ.get("JOB_FILE") or os.path.join(RUN_DIR, "job")
HANG_FILE = os.environ.get("HANG_FILE") or os.path.join(RUN_DIR, "hang")
stopping = False


def notifier():
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return lambda text: None
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    return lambda text: sock.sendto(text.encode(), addr)


def on_term(signum, frame):
    global stopping
    stopping = True


def main() -> int:
    notify = notifier()
    signal.signal(signal.SIGTERM, on_term)
    time.sleep(1.0)  # initialising
    notify("READY=1\nX_DAEMONPOOL_INFLIGHT=0\nSTATUS=waiting for items")
    print("notify-program: ready", flush=True)
    while not stopping:
        notify("WATCHDOG=1")
        if os.path.exists(HANG_FILE):
            os.unlink(HANG_FILE)
            print("notify-program: hanging on request", flush=True)
            while True:
                time.sleep(3600)
        if os.path.exists(JOB_FILE):
            with open(JOB_FILE) as f:
                items = [float(x) for x in f.read().split(",") if x.strip()]
            os.unlink(JOB_FILE)
            for n, seconds in enumerate(items, 1):
                notify(f"X_DAEMONPOOL_INFLIGHT=1\nSTATUS=item {n} of {len(items)}")
                print(f"notify-program: item {n} ({seconds:g}s) started", flush=True)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    notify("WATCHDOG=1")
                    time.sleep(min(1.0, max(0.0, end - time.monotonic())))
                print(f"notify-program: item {n} ({seconds:g}s) done", flush=True)
            notify("X_DAEMONPOOL_INFLIGHT=0\nSTATUS=waiting for items")
        time.sleep(0.5)
    notify("STOPPING=1")
    print("notify-program: stopped on SIGTERM", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
