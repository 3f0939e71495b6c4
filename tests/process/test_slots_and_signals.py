"""PID slots, stale takeover and signals, with real processes, signals and files."""

import os
import signal
import subprocess
import sys
import time

import pytest

from testkit.proc import PROG, child_env

pytestmark = pytest.mark.timeout(120)


def test_fifty_processes_race_for_three_slots(tmp_path, run_dir):
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, PROG, "race", str(run_dir), "--max-peers", "3", "--go", str(go), "--hold", "30"],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        for _ in range(50)
    ]
    try:
        time.sleep(1.0)  # let the interpreters start and wait at the barrier
        go.touch()
        results = [p.stdout.readline().split() for p in procs]
        winners = [r for r in results if r[:2] == ["START", "True"]]
        losers = [r for r in results if r[:2] == ["START", "False"]]
        assert len(winners) == 3, results
        assert len(losers) == 47
        assert sorted(r[2] for r in winners) == ["0", "1", "2"]
        pids = {int((run_dir / f"race.{s}.pid").read_text()) for s in range(3)}
        winner_pids = {p.pid for p, r in zip(procs, results) if r[1] == "True"}
        assert pids == winner_pids
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_sigkilled_holder_slot_is_taken_over(run_dir, workers):
    first = workers("w", run_dir)
    assert first.expect("START") == "START True 0"
    pid_file = run_dir / "w.0.pid"
    assert int(pid_file.read_text()) == first.pid
    busy = workers("w", run_dir)
    assert busy.expect("START") == "START False None"
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(5)
    assert pid_file.exists(), "a crash leaves the PID file behind"
    second = workers("w", run_dir)
    assert second.expect("START") == "START True 0"
    assert int(pid_file.read_text()) == second.pid


def test_reused_pid_number_does_not_hold_a_slot(run_dir, workers):
    # A PID file naming a live process (this test runner) but with no lock on it.
    (run_dir / "w.0.pid").write_text(f"{os.getpid()}\n")
    w = workers("w", run_dir)
    assert w.expect("START") == "START True 0"
    assert int((run_dir / "w.0.pid").read_text()) == w.pid


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_first_signal_ends_the_loop_and_stop_cleans_up(run_dir, workers, sig):
    w = workers("w", run_dir)
    w.expect("START True")
    w.proc.send_signal(sig)
    assert w.expect("BEAT-FALSE") == f"BEAT-FALSE {int(sig)}"
    assert w.expect("STOPPED") == f"STOPPED {int(sig)}"
    assert w.proc.wait(5) == 0
    assert sorted(os.listdir(run_dir)) == [], "stop() removes the PID file and the probe files"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_second_signal_while_stopping_exits_at_once(run_dir, workers, sig):
    w = workers("w", run_dir, "--mode", "slowstop")
    w.expect("START True")
    w.proc.send_signal(signal.SIGTERM)
    w.expect("BEAT-FALSE")
    t0 = time.monotonic()
    w.proc.send_signal(sig)
    assert w.proc.wait(5) == 128 + int(sig)
    assert time.monotonic() - t0 < 2.0


def test_signal_map_is_data_a_mapping_overrides_it(run_dir, workers):
    w = workers("w", run_dir, "--ignore-hup")
    w.expect("START True")
    w.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert w.proc.poll() is None, "SIGHUP was mapped to 'ignore'"
    w.proc.send_signal(signal.SIGTERM)
    assert w.expect("STOPPED") == f"STOPPED {int(signal.SIGTERM)}"


def test_subclass_hook_overrides_the_stop_action(run_dir, tmp_path):
    code = f"""
import signal, sys, time
from worker_runtime import Daemon
class Reloading(Daemon):
    reloads = 0
    def on_signal(self, signum):
        if signum == signal.SIGHUP:
            Reloading.reloads += 1
            print("RELOAD", flush=True)
        else:
            super().on_signal(signum)
d = Reloading("w", run_dir={str(run_dir)!r})
print("START", d.start(), flush=True)
while d.heartbeat():
    time.sleep(0.01)
d.stop()
print("DONE", Reloading.reloads, flush=True)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert p.stdout.readline().strip() == "START True"
        p.send_signal(signal.SIGHUP)
        assert p.stdout.readline().strip() == "RELOAD"
        p.send_signal(signal.SIGTERM)
        assert p.stdout.readline().strip() == "DONE 1"
        assert p.wait(5) == 0
    finally:
        p.kill()


def test_heartbeat_false_once_pid_file_removed(run_dir, workers):
    w = workers("w", run_dir, "--timeout", "1")
    w.expect("START True")
    os.unlink(run_dir / "w.0.pid")
    assert w.expect("STOPPED", timeout=5) == "STOPPED lost"


def test_heartbeat_false_once_pid_file_taken_over(run_dir, workers):
    w = workers("w", run_dir, "--timeout", "1")
    w.expect("START True")
    tmp = run_dir / "other"
    tmp.write_text("99999\n")
    os.rename(tmp, run_dir / "w.0.pid")
    assert w.expect("STOPPED", timeout=5) == "STOPPED lost"
    # It must not delete what the new holder owns.
    assert (run_dir / "w.0.pid").read_text() == "99999\n"
