"""`worker-runtime run -- CMD` for unmodified programs: the heartbeat modes, sd_notify served to the child
(a child that follows sd_notify(3) with a plain datagram socket, as libsystemd does), and the child's
busy state (worker_runtime/_run.py). Real processes, signals and sockets."""

import json
import signal
import subprocess
import sys
import time

import pytest

from testkit.proc import child_env, cli_cmd, free_port, get, until, wait_answer

pytestmark = pytest.mark.timeout(120)

PY = sys.executable


def start_run(run_dir, *args, port=None):
    port = port or free_port()
    p = subprocess.Popen(
        [*cli_cmd("run", run_dir), *args],
        env=child_env(DAEMONPOOL_PORT=port),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_answer(port, "/state")
    return port, p


def state(port):
    return json.loads(get(port, "/state")[1])


def finish(p):
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()


def test_an_unmodified_program_is_alive_past_the_timeout_and_never_called_idle(run_dir):
    # Before: `run --timeout 4 -- sleep 12` failed /livez at 5 s ("heartbeat is 5.5s old"): restarted forever.
    port, p = start_run(run_dir, "--timeout", "2", "--", "sleep", "30")
    try:
        time.sleep(3.0)
        assert get(port, "/livez") == (200, "ok\n")
        s = state(port)
        assert s["state"] == "unknown", "a child that never says is neither idle nor busy"
    finally:
        assert finish(p) == 128 + signal.SIGTERM


def test_auto_hands_over_to_a_child_that_beats_itself_and_then_sees_its_hang(run_dir):
    prog = "import os, time\nfor _ in range(6):\n    os.utime(os.environ['DAEMONPOOL_HEARTBEAT_FILE']); time.sleep(0.3)\ntime.sleep(60)\n"
    port, p = start_run(run_dir, "--timeout", "2", "--", PY, "-c", prog)
    try:
        assert get(port, "/livez")[0] == 200
        code, body = until("the hang to be seen", lambda: (c := get(port, "/livez"))[0] == 503 and c, timeout=8)
        assert "heartbeat is" in body
    finally:
        finish(p)


def test_alive_mode_beats_for_a_program_that_cannot(run_dir):
    prog = "import os, time\nos.utime(os.environ['DAEMONPOOL_HEARTBEAT_FILE'])\ntime.sleep(60)\n"
    port, p = start_run(run_dir, "--timeout", "2", "--heartbeat", "alive", "--", PY, "-c", prog)
    try:
        time.sleep(3.0)
        assert get(port, "/livez")[0] == 200, "alive: the touch does not switch to file mode"
    finally:
        finish(p)


NOTIFY_CHILD = r"""
import os, socket, sys, time
addr = os.environ["NOTIFY_SOCKET"]
if addr.startswith("@"):
    addr = "\0" + addr[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def say(text):
    s.sendto(text.encode(), addr)
assert int(os.environ["WATCHDOG_USEC"]) == 2_000_000
time.sleep(0.8)                       # initialising: not ready yet
say("READY=1\nSTATUS=warming up")
for n in range(15):                   # WATCHDOG=1 every 0.2 s; an item in flight from the 5th
    say("WATCHDOG=1" + ("\nX_DAEMONPOOL_INFLIGHT=1\nSTATUS=sending" if n == 5 else ""))
    time.sleep(0.2)
say("X_DAEMONPOOL_INFLIGHT=0")
time.sleep(60)                        # hangs: no more WATCHDOG=1
"""


def test_sd_notify_ready_watchdog_status_inflight_and_a_hang(run_dir):
    port, p = start_run(run_dir, "--timeout", "2", "--heartbeat", "notify", "--", PY, "-c", NOTIFY_CHILD)
    try:
        assert get(port, "/readyz")[0] == 503, "Type=notify: not ready before READY=1"
        until("READY=1", lambda: get(port, "/readyz")[0] == 200)
        until("busy from X_DAEMONPOOL_INFLIGHT", lambda: state(port)["state"] == "busy")
        s = state(port)
        assert (s["inflight"], s["status"]) == (1, "sending")
        until("idle again", lambda: state(port)["state"] == "idle")
        code, body = until("the hang", lambda: (c := get(port, "/livez"))[0] == 503 and c, timeout=8)
        assert "heartbeat is" in body
    finally:
        finish(p)


def test_stopping_from_the_child_turns_readiness_off(run_dir):
    prog = (
        "import os, socket, time\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        "a = os.environ['NOTIFY_SOCKET']\n"
        "a = '\\0' + a[1:] if a.startswith('@') else a\n"
        "s.sendto(b'STOPPING=1', a)\n"
        "time.sleep(60)\n"
    )
    port, p = start_run(run_dir, "--timeout", "5", "--", PY, "-c", prog)
    try:
        until("stopping", lambda: state(port)["state"] == "stopping")
        assert get(port, "/readyz")[0] == 503 and get(port, "/livez")[0] == 200, "finishing is not hanging"
        assert state(port)["stop_reason"] == "the program said STOPPING=1"
    finally:
        finish(p)


def test_exec_mode_beats_while_the_check_passes(run_dir, tmp_path):
    flag = tmp_path / "healthy"
    flag.write_text("")
    port, p = start_run(
        run_dir,
        "--timeout",
        "2",
        "--heartbeat",
        "exec",
        "--check",
        f"test -f {flag}",
        "--check-period",
        "0.3",
        "--",
        "sleep",
        "60",
    )
    try:
        time.sleep(2.5)
        assert get(port, "/livez")[0] == 200
        flag.unlink()
        until("the failing check to show", lambda: get(port, "/livez")[0] == 503, timeout=6)
    finally:
        finish(p)


def test_run_refuses_a_check_without_exec_mode(run_dir):
    r = subprocess.run(
        [*cli_cmd("run", run_dir), "--check", "true", "--", "true"], env=child_env(), capture_output=True, text=True
    )
    assert r.returncode == 2 and "--check CMD goes with --heartbeat exec" in r.stderr


def test_both_clis_say_their_version():
    r = subprocess.run([PY, "-m", "worker_runtime", "--version"], env=child_env(), capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("worker-runtime 0.")


def test_the_operator_cli_says_its_version_too():
    r = subprocess.run(
        [PY, "-m", "daemonpool_operator", "--version"], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith("daemonpool-operator 0."), (r.stdout, r.stderr)
