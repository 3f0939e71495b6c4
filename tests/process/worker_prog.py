"""A worker for the process tests, driven by arguments and files.

    worker_prog.py NAME RUN_DIR [--timeout S] [--max-peers K] [--go FILE]
                   [--mode loop|hang|slowstop] [--ignore-hup]

Prints one line per event on stdout (flushed): "START True|False",
"BEAT-FALSE", "STOPPED <signal or lost>". --go waits for FILE to exist
before start() so many processes can race for slots at once.
"""

import argparse
import os
import signal
import sys
import time

from worker_runtime import Daemon


def say(*words):
    print(*words, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("name")
    p.add_argument("run_dir")
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--max-peers", type=int, default=1)
    p.add_argument("--go")
    p.add_argument("--mode", default="loop", choices=["loop", "hang", "slowstop", "busy"])
    p.add_argument("--ignore-hup", action="store_true")
    p.add_argument("--hold", type=float, default=60.0, help="seconds to keep looping at most")
    a = p.parse_args()
    if a.go:
        while not os.path.exists(a.go):
            time.sleep(0.001)
    smap = {signal.SIGHUP: "ignore"} if a.ignore_hup else None
    d = Daemon(a.name, timeout=a.timeout, max_peers=a.max_peers, run_dir=a.run_dir, signal_map=smap)
    running = d.start()
    say("START", running, d.slot)
    deadline = time.monotonic() + a.hold
    while running and time.monotonic() < deadline:
        if a.mode == "hang":
            time.sleep(3600)  # stops beating; signals still set the flag
        if a.mode == "busy":
            with d.busy():
                time.sleep(0.01)
        else:
            time.sleep(0.01)
        running = d.heartbeat()
    say("BEAT-FALSE", d.stop_signal)
    if a.mode == "slowstop":
        time.sleep(10)  # finishing the current item; a second signal ends it now
    d.stop()
    say("STOPPED", d.stop_signal if d.stop_signal is not None else "lost")
    return 0


if __name__ == "__main__":
    sys.exit(main())
