"""The runtime answering over HTTP (DAEMONPOOL_PORT): the same verdicts as the probes, from real processes."""

import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from testkit.proc import PROG, child_env, cli_cmd, free_port, get, wait_answer

pytestmark = pytest.mark.timeout(120)


def probe(kind, run_dir, timeout):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker_runtime",
            "probe",
            kind,
            "--name",
            "w",
            "--run-dir",
            str(run_dir),
            "--timeout",
            str(timeout),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=20,
    )
    return r.returncode, r.stdout.strip()


def started_worker(run_dir, *args):
    """A worker_prog.py worker answering on a free port, past its start()."""
    port = free_port()
    w = subprocess.Popen(
        [sys.executable, PROG, "w", str(run_dir), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(DAEMONPOOL_PORT=port),
    )
    assert w.stdout.readline().startswith("START True")
    wait_answer(port)
    return port, w


def test_verdicts_match_the_probes_through_a_hang_and_a_stop(run_dir):
    port, w = started_worker(run_dir, "--timeout", "2", "--mode", "hang")
    try:
        for path, kind in (("/livez", "liveness"), ("/readyz", "readiness"), ("/startupz", "startup")):
            assert wait_answer(port, path) == (200, "ok\n")
            assert probe(kind, run_dir, 2) == (0, "")
        state = json.loads(get(port, "/state")[1])
        assert (state["pool"], state["slot"], state["pid"], state["state"], state["ready"]) == (
            "w",
            0,
            w.pid,
            "idle",
            True,
        )
        time.sleep(3.2)  # the main thread hangs: no beats; the server thread still answers
        code, body = get(port, "/livez?timeout=2")
        assert code == 503 and "heartbeat is" in body and "limit 2s" in body
        words = lambda text: re.sub(r"\d+\.\ds old", "N s old", text.strip())  # noqa: E731 - the age moves on
        assert words(probe("liveness", run_dir, 2)[1]) == words(body), "the same words as the probe"
        assert get(port, "/livez?timeout=60")[0] == 200, "the limit comes from the query, as the kubelet sends it"
        w.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        code, body = get(port, "/readyz?timeout=60")
        assert code == 503 and "stopping" in body
        assert json.loads(get(port, "/state")[1])["state"] == "stopping"
        metrics = get(port, "/metrics")[1]
        for name in (
            "daemonpool_heartbeat_age_seconds",
            "daemonpool_busy",
            "daemonpool_busy_seconds_total",
            "daemonpool_ready",
            "daemonpool_stop_requested",
        ):
            assert f"# HELP {name} " in metrics and f'{name}{{pool="w",slot="0"}}' in metrics
        assert 'daemonpool_stop_requested{pool="w",slot="0"} 1' in metrics
    finally:
        w.kill()
        w.wait()


def test_busy_state_and_seconds(run_dir):
    port, w = started_worker(run_dir, "--mode", "busy")
    try:
        seen = {json.loads(get(port, "/state")[1])["state"] for _ in range(200)}
        assert "busy" in seen
        assert float(get(port, "/metrics")[1].split("daemonpool_busy_seconds_total{")[1].split()[1]) > 0
    finally:
        w.kill()
        w.wait()


def test_run_wrapper_answers_for_its_child(run_dir):
    port = free_port()
    p = subprocess.Popen(
        [
            *cli_cmd("run", run_dir),
            "--timeout",
            "2",
            "--heartbeat",
            "file",
            "--",
            "sleep",
            "30",
        ],
        env=child_env(DAEMONPOOL_PORT=port),
    )
    try:
        assert wait_answer(port) == (200, "ok\n")
        time.sleep(2.5)  # the child never touches its heartbeat file (file mode: only its touches count)
        assert get(port, "/livez")[0] == 503
    finally:
        p.kill()
        p.wait()


def test_a_taken_port_is_a_daemon_error_naming_it(run_dir):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-c", f"from worker_runtime import Daemon; Daemon('w', run_dir={str(run_dir)!r}).start()"],
            capture_output=True,
            text=True,
            env=child_env(DAEMONPOOL_PORT=port),
            timeout=20,
        )
    assert r.returncode == 1 and f"cannot answer on port {port}" in r.stderr and "DaemonError" in r.stderr
