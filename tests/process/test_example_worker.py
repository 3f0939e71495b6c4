"""The example worker in its three forms (loop, threads, asyncio) as real processes: items in flight are
counted, a SIGTERM in the middle of items lets them finish, and a leaking worker recycles at its memory mark
without losing its item (examples/worker/worker.py on the runtime's public API)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from testkit.proc import ROOT, child_env, free_port, get, until, wait_answer

pytestmark = pytest.mark.timeout(120)
WORKER = os.path.join(ROOT, "examples", "worker", "worker.py")


def start(run_dir, mode, **env):
    port = free_port()
    p = subprocess.Popen(
        [sys.executable, WORKER],
        env=child_env(
            DAEMONPOOL_NAME="ex",
            DAEMONPOOL_RUN_DIR=run_dir,
            DAEMONPOOL_PORT=port,
            DAEMONPOOL_TIMEOUT_SECONDS=3,
            WORKER_MODE=mode,
            WORK_SECONDS=0,
            **env,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_answer(port, "/state")
    return port, p


def state(port):
    return json.loads(get(port, "/state")[1])


@pytest.mark.parametrize("mode, capacity", [("threads", 4), ("asyncio", 4)])
def test_concurrent_items_keep_the_worker_busy_until_the_last_ends_and_a_stop_lets_them_finish(run_dir, mode, capacity):
    port, p = start(str(run_dir), mode, DAEMONPOOL_CAPACITY=capacity)
    try:
        (run_dir / "job").write_text("1,4.5")
        until("two items in flight", lambda: state(port)["inflight"] == 2)
        until("the short item done", lambda: state(port)["items_done"] == 1)
        s = state(port)
        assert (s["state"], s["inflight"], s["capacity"]) == ("busy", 1, capacity), "busy while one is in flight"
        p.send_signal(signal.SIGTERM)  # in the middle of the long item
        time.sleep(4.5)  # longer than the 3 s timeout: a worker finishing its item keeps beating
        assert p.poll() is None or p.returncode == 0
        out, _ = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert "item 2 (4.5s) done" in out and "interrupted" not in out
    assert "stopped: SIGTERM; 2 item(s), 0 in flight" in out


def test_the_loop_form_beats_through_a_long_item(run_dir):
    port, p = start(str(run_dir), "loop")
    try:
        (run_dir / "job").write_text("5")
        until("busy", lambda: state(port)["state"] == "busy")
        time.sleep(4.0)
        assert get(port, "/livez")[0] == 200, "an item longer than the timeout is not a hang"
        until("idle", lambda: state(port)["state"] == "idle", timeout=5)
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=15)
    assert "item 1 (5s) done" in out


@pytest.mark.parametrize("mode", ["loop", "asyncio"])
def test_a_leaking_worker_recycles_at_its_memory_mark_after_finishing_its_item(run_dir, mode):
    port, p = start(str(run_dir), mode, LEAK_MIB=40, DAEMONPOOL_MAX_RSS_MIB=100)
    try:
        (run_dir / "job").write_text("0.2,0.2,0.2,0.2,0.2")
        rc = p.wait(20)
        out = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, out
    done = len(re.findall(r"item \d+ \(0.2s\) done", out))
    assert done == out.count(") started"), "every item started was finished"
    assert 1 <= done < 5 and "stopped: recycled at " in out and "(max_rss_mib 100)" in out, out
    left = (run_dir / "job").read_text().strip(",").split(",")
    assert len(left) == 5 - done, "the items not started went back to the queue for the next worker"
