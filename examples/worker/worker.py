"""The example worker, in the three forms the runtime supports: a loop, threads, asyncio.

Environment (besides the DAEMONPOOL_* the operator sets):
  WORKER_MODE    loop (default: the classic daemon loop), threads (DAEMONPOOL_CAPACITY items at once,
                 one thread each) or asyncio (tasks fed from an asyncio.Queue with prefetch)
  WORK_SECONDS   loop mode: time one unit of work takes (default 1; 0: idle until given a job)
  HANG_FILE      when this file exists, the worker hangs: it stops beating and sleeps, so the
                 liveness probe must restart it (default $DAEMONPOOL_RUN_DIR/hang, writable on a
                 read-only root: `kubectl exec POD -- touch /run/daemonpool/hang`)
  JOB_FILE       when this file exists, it holds item durations in seconds, comma-separated: the
                 worker takes them as items and is busy while any is in flight (default
                 $DAEMONPOOL_RUN_DIR/job: `kubectl exec POD -- sh -c 'echo 5,120 > /run/daemonpool/job'`)
  LEAK_MIB       each item keeps this many MiB for good (a leak), to show recycling by memory
                 (spec.recycle.maxRssMiB); default 0
  DONE_FILE      when set, one line per finished item is appended there (in the run directory it
                 outlives restarts: a count of items done by every container of the pod)
  QUEUE_URL      loop mode: take items from this queue server (queue_server.py: POST /take, /done)
                 instead of JOB_FILE, report its backlog (d.report_backlog), and tell it when a stop
                 reached the worker in the middle of an item (what autoscaling must never do)

Logs one line per item ("item 3 (5s) started/done/interrupted") and one when it stops, with the reason.
An item is never cut short by a stop: SIGTERM ends the taking of new items, and items in flight finish.
"""

import asyncio
import os
import sys
import threading
import time

from worker_runtime import Daemon

LEAKED: list = []


def say(d: Daemon, text: str) -> None:
    print(f"{d.name}: {text}", flush=True)


class Jobs:
    """Items handed over through JOB_FILE, and the hang switch."""

    def __init__(self) -> None:
        run_dir = os.environ.get("DAEMONPOOL_RUN_DIR", "/tmp")
        self.hang_file = os.environ.get("HANG_FILE") or os.path.join(run_dir, "hang")
        self.job_file = os.environ.get("JOB_FILE") or os.path.join(run_dir, "job")
        self.leak = int(os.environ.get("LEAK_MIB", "0"))
        self.done_file = os.environ.get("DONE_FILE")
        self.n = 0

    def mark_done(self, d: Daemon, n: int, seconds: float) -> None:
        say(d, f"item {n} ({seconds:g}s) done")
        if self.done_file:
            with open(self.done_file, "a") as f:
                f.write(f"{os.getpid()}:{n}:{seconds:g}\n")

    def hang_if_asked(self, d: Daemon) -> None:
        if os.path.exists(self.hang_file):
            # Removed first: the run directory outlives the container, and the restarted worker works again.
            os.unlink(self.hang_file)
            say(d, f"hanging on request ({self.hang_file} existed)")
            while True:
                time.sleep(3600)

    def take(self) -> list:
        if not os.path.exists(self.job_file):
            return []
        with open(self.job_file) as f:
            text = f.read().strip()
        os.unlink(self.job_file)
        return [float(x) for x in text.split(",") if x.strip()]

    def give_back(self, items: list) -> None:
        """Items taken but not started when a stop came: back to the job file (the run directory outlives the
        container, so the restarted worker takes them), never dropped."""
        if items:
            with open(self.job_file, "a") as f:
                f.write("," + ",".join(f"{x:g}" for x in items))

    def run_item(self, d: Daemon, seconds: float, beat: bool, quiet: bool = False, cpu: bool = False) -> None:
        """One item, start to end (the caller holds d.busy()): never cut short by a stop. On the main thread
        it beats while it works (``beat``); in a thread of its own the main thread beats. ``quiet``: the
        loop's own units of work log one line each, not two (hundreds of pods log through one node).
        ``cpu``: compute for those seconds instead of sleeping (load an HPA on CPU can see)."""
        self.n += 1
        n = self.n
        if not quiet:
            say(d, f"item {n} ({seconds:g}s) started")
        if self.leak:
            LEAKED.append(bytearray(self.leak * 2**20))
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if cpu:
                until = time.monotonic() + min(left, 0.5)
                while time.monotonic() < until:
                    sum(i * i for i in range(1000))
            else:
                time.sleep(min(left, 0.5))
            if beat:
                d.heartbeat()  # False once a stop was asked for: the item goes on all the same
        self.mark_done(d, n, seconds)


def loop_mode(d: Daemon, jobs: Jobs) -> None:
    work = float(os.environ.get("WORK_SECONDS", "1"))
    for _ in d.loop():
        jobs.hang_if_asked(d)
        taken = jobs.take()
        items = taken or ([work] if work > 0 else [])
        if not items:
            d.sleep(0.2)  # idle: beats while it waits, and a stop ends the wait at once
        for i, seconds in enumerate(items):
            if not d.running:  # asked to stop (a signal, recycling): take no new item
                jobs.give_back(items[i:])
                break
            with d.busy():
                jobs.run_item(d, seconds, beat=True, quiet=not taken)


def queue_mode(d: Daemon, jobs: Jobs, url: str) -> None:
    """Items from a queue server: take one after each heartbeat (which waits while the operator drains us)."""
    import urllib.request  # noqa: PLC0415 - only this mode talks HTTP

    me = os.environ.get("HOSTNAME", "worker")

    def post(path: str):
        with urllib.request.urlopen(urllib.request.Request(url + path, method="POST"), timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("X-Backlog")

    for _ in d.loop():
        try:
            status, body, backlog = post(f"/take?worker={me}")
        except OSError as exc:
            say(d, f"queue unreachable: {exc}")
            d.sleep(1)
            continue
        if backlog is not None:
            d.report_backlog(int(backlog))
        if status != 200:
            d.sleep(0.2)
            continue
        item_id, item = body.split()
        kind, _, seconds = item.rpartition(":")  # "2.5" sleeps, "cpu:2.5" computes (queue_server.py)
        with d.busy():
            running_at_start = d.running
            jobs.run_item(d, float(seconds), beat=True, quiet=True, cpu=kind == "cpu")
            stopped_busy = running_at_start and not d.running and d.stop_signal is not None
        for _ in range(10):  # the item is done: say so, even while stopping
            try:
                post(f"/done?id={item_id}&worker={me}&stopped_busy={int(stopped_busy)}")
                break
            except OSError:
                time.sleep(0.5)


def threads_mode(d: Daemon, jobs: Jobs) -> None:
    threads: list = []
    for _ in d.loop():
        jobs.hang_if_asked(d)
        for seconds in jobs.take():

            def item(seconds: float = seconds) -> None:
                with d.busy():  # counted: the worker is busy while any thread has an item
                    jobs.run_item(d, seconds, beat=False)

            t = threading.Thread(target=item)
            t.start()
            threads.append(t)
        d.sleep(0.2)
        if d.stop_reason:  # finish what is in flight before loop() stops the daemon, beating meanwhile
            while any(t.is_alive() for t in threads):
                d.heartbeat()
                for t in threads:
                    t.join(0.2)


async def asyncio_main(d: Daemon, jobs: Jobs) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    beating = asyncio.create_task(d.keep_beating())  # beats from the event loop: a blocked loop is a hang

    async def consumer() -> None:
        while True:
            get = asyncio.ensure_future(queue.get())
            stop = asyncio.ensure_future(d.stopped())
            done, _ = await asyncio.wait([get, stop], return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if get not in done:
                get.cancel()
                return
            seconds = get.result()
            if not d.running:  # a stop came with the item: it goes back, not started
                jobs.give_back([seconds])
                return
            async with d.busy():
                jobs.n += 1
                n = jobs.n
                say(d, f"item {n} ({seconds:g}s) started")
                if jobs.leak:
                    LEAKED.append(bytearray(jobs.leak * 2**20))
                await asyncio.sleep(seconds)
                jobs.mark_done(d, n, seconds)

    consumers = [asyncio.create_task(consumer()) for _ in range(d.capacity)]
    d.on_stop(lambda: jobs.give_back([queue.get_nowait() for _ in range(queue.qsize())]))  # prefetched, not started
    while await d.asleep(0.2):  # the prefetching side: takes items while running
        jobs.hang_if_asked(d)
        for seconds in jobs.take():
            queue.put_nowait(seconds)
    await asyncio.gather(*consumers)  # items in flight finish, with beats
    beating.cancel()


def main() -> int:
    mode = os.environ.get("WORKER_MODE", "loop")
    d = Daemon.from_env()
    jobs = Jobs()
    if mode == "asyncio":
        if d.start():
            try:
                asyncio.run(asyncio_main(d, jobs))
            finally:
                d.stop()
    elif mode == "threads":
        threads_mode(d, jobs)
    elif os.environ.get("QUEUE_URL"):
        queue_mode(d, jobs, os.environ["QUEUE_URL"].rstrip("/"))
    else:
        loop_mode(d, jobs)
    say(d, f"stopped: {d.stop_reason or 'no free slot'}; {jobs.n} item(s), {d.inflight} in flight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
