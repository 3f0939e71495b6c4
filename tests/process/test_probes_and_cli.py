"""Probe files, the probes (Python reference and sh), status, run, watchdog, bad places."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from testkit.proc import PROBE_SH, child_env, cli_cmd, probe_cmds, wr
from testkit.skips import need_root

pytestmark = pytest.mark.timeout(120)

PROBES = probe_cmds()


def probe(impl, kind, run_dir, name="w", timeout=30):
    r = subprocess.run(
        PROBES[impl] + [kind, "--name", name, "--run-dir", str(run_dir), "--timeout", str(timeout)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=10,
    )
    return r.returncode, r.stdout.strip()


@pytest.mark.parametrize("impl", sorted(PROBES))
def test_probe_verdicts_follow_the_worker(impl, run_dir, workers):
    for kind in ("liveness", "readiness", "startup"):
        rc, out = probe(impl, kind, run_dir)
        assert rc == 1 and "no live holder of" in out, (kind, out)
    w = workers("w", run_dir, "--timeout", "2", "--mode", "hang")
    w.expect("START True")
    for kind in ("liveness", "readiness", "startup"):
        assert probe(impl, kind, run_dir, timeout=2) == (0, ""), kind
    time.sleep(3.2)  # the hung worker stops beating
    rc, out = probe(impl, "liveness", run_dir, timeout=2)
    assert rc == 1 and "heartbeat is" in out and "limit 2s" in out and f"pid {w.pid}" in out, out
    w.proc.send_signal(signal.SIGTERM)  # the flag is set, the ready file goes
    time.sleep(0.3)
    rc, out = probe(impl, "readiness", run_dir, timeout=60)
    assert rc == 1 and "stopping" in out, out
    w.kill()
    rc, out = probe(impl, "liveness", run_dir, timeout=60)
    assert rc == 1 and "no live holder" in out, out


@pytest.mark.parametrize("impl", sorted(PROBES))
def test_set_ready_false_fails_readiness_not_liveness(impl, run_dir):
    code = f"""
import sys
from worker_runtime import Daemon
d = Daemon("w", run_dir={str(run_dir)!r})
d.start(); d.set_ready(False)
print("NOTREADY", flush=True); sys.stdin.readline()
d.set_ready(True)
print("READY", flush=True); sys.stdin.readline()
d.stop()
"""
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert p.stdout.readline().strip() == "NOTREADY"
        assert probe(impl, "liveness", run_dir)[0] == 0
        rc, out = probe(impl, "readiness", run_dir)
        assert rc == 1 and "not ready" in out
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "READY"
        assert probe(impl, "readiness", run_dir) == (0, "")
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.wait(5) == 0
    finally:
        p.kill()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["bogus"], "probe kind must be one of"),
        (["liveness", "--timeout", "zero"], "--timeout"),
        (["liveness", "--frobnicate"], "frobnicate"),
    ],
)
@pytest.mark.parametrize("impl", sorted(PROBES))
def test_probe_usage_errors_exit_2(impl, args, needle, run_dir):
    r = subprocess.run(
        PROBES[impl] + args + ["--name", "w", "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    assert r.returncode == 2
    assert needle in r.stdout + r.stderr


def test_busy_and_idle_state_and_status_json(run_dir, workers):
    w = workers("w", run_dir, "--mode", "busy")
    w.expect("START True")
    seen = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and seen != {"busy", "idle"}:
        seen.add((run_dir / "w.0.state").read_text().strip())
    assert seen == {"busy", "idle"}
    r = wr("status", "--name", "w", "--run-dir", str(run_dir), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    (slot,) = data["slots"]
    assert slot["pid"] == w.pid and slot["held"] and slot["ready"] and slot["state"] in ("busy", "idle")
    assert 0 <= slot["heartbeat_age"] < 2
    human = wr("status", "--name", "w", "--run-dir", str(run_dir))
    assert str(w.pid) in human.stdout and "yes" in human.stdout


def test_files_are_never_seen_half_written(run_dir):
    """A reader hammering the heartbeat and PID files while a worker beats as fast as it can."""
    code = f"""
import time
from worker_runtime import Daemon
d = Daemon("w", timeout=0.0001, run_dir={str(run_dir)!r})
assert d.start()
end = time.monotonic() + 1.5
while time.monotonic() < end:
    d.heartbeat()
d.stop()
"""
    p = subprocess.Popen([sys.executable, "-c", code], env=child_env())
    bad, reads = [], 0
    hb, pid = run_dir / "w.0.heartbeat", run_dir / "w.0.pid"
    while p.poll() is None:
        for path, conv in ((hb, lambda t: (float(t.split()[0]), int(t.split()[1]))), (pid, int)):
            try:
                data = path.read_text()
            except FileNotFoundError:
                continue
            reads += 1
            try:
                conv(data)
                assert data.endswith("\n")
            except (ValueError, AssertionError):
                bad.append(data)
    assert p.wait() == 0
    assert reads > 100
    assert bad == []


def test_unusable_run_dirs_raise_daemon_error_naming_path_and_fix(tmp_path):
    cases = {}
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cases["notdir"] = str(not_a_dir / "run")
    if os.geteuid() == 0:
        owned = tmp_path / "rootonly"
        owned.mkdir(mode=0o755)
        cases["owner"] = str(owned / "run")
    for key, path in cases.items():
        code = f"""
import os, sys
from worker_runtime import Daemon, DaemonError
if {key == "owner"!r}:
    os.setgid(65534); os.setuid(65534)
try:
    Daemon("w", run_dir={path!r}).start()
except DaemonError as e:
    print(e); sys.exit(0)
sys.exit(1)
"""
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
        assert r.returncode == 0, (key, r.stdout, r.stderr)
        assert path in r.stdout and "DAEMONPOOL_RUN_DIR" in r.stdout, r.stdout


@pytest.mark.parametrize("case", ["full", "readonly"])
def test_full_or_read_only_run_dir(tmp_path, case):
    need_root("mounting a small tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    opts = "size=64k" + (",ro" if case == "readonly" else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], check=True)
    try:
        if case == "full":
            fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while True:
                    os.write(fd, b"x" * 4096)
            except OSError:
                pass
            finally:
                os.close(fd)
        code = f"""
from worker_runtime import Daemon, DaemonError
try:
    Daemon("w", run_dir={str(mnt)!r}).start()
except DaemonError as e:
    print(e)
"""
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env())
        want = "no space left" if case == "full" else "read-only file system"
        assert want in r.stdout and str(mnt) in r.stdout and "DAEMONPOOL_RUN_DIR" in r.stdout, r.stdout + r.stderr
        assert [n for n in os.listdir(mnt) if n != "filler"] == [], "nothing half-written is left"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_run_wraps_a_non_python_program(run_dir):
    script = 'echo "HB=$DAEMONPOOL_HEARTBEAT_FILE"; trap "echo TERM; exit 7" TERM; while :; do touch "$DAEMONPOOL_HEARTBEAT_FILE"; sleep 0.1; done'
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker_runtime",
            "run",
            "--name",
            "sh",
            "--run-dir",
            str(run_dir),
            "--timeout",
            "2",
            "--",
            "sh",
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        line = p.stdout.readline().strip()
        assert line == f"HB={run_dir}/sh.0.heartbeat"
        time.sleep(2.5)  # longer than the timeout: only the child's touches keep it alive
        assert probe("python", "liveness", run_dir, name="sh", timeout=2) == (0, "")
        second = wr("run", "--name", "sh", "--run-dir", str(run_dir), "--", "true")
        assert second.returncode == 3 and "held by live processes" in second.stderr
        p.send_signal(signal.SIGTERM)
        assert p.stdout.readline().strip() == "TERM"
        assert p.wait(5) == 7, "run exits with the child's status"
        assert os.listdir(run_dir) == []
    finally:
        p.kill()


def test_run_reports_signal_death_as_128_plus_n(run_dir):
    r = wr("run", "--name", "k", "--run-dir", str(run_dir), "--", "sh", "-c", "kill -KILL $$")
    assert r.returncode == 128 + 9


def test_watchdog_respawns_dead_and_hung_workers(tmp_path, run_dir, workers):
    log = tmp_path / "spawned.log"
    cmd = [
        sys.executable,
        os.path.join(os.path.dirname(__file__), "worker_prog.py"),
        "w",
        str(run_dir),
        "--timeout",
        "1",
    ]
    env = child_env()

    def watchdog():
        return subprocess.run(
            [
                *cli_cmd("watchdog", run_dir),
                "--timeout",
                "1",
                "--grace",
                "2",
                "--log",
                str(log),
                "--",
                *cmd,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )

    def holder_pid(timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return int((run_dir / "w.0.pid").read_text())
            except (FileNotFoundError, ValueError):
                time.sleep(0.05)
        raise AssertionError("nobody took the slot")

    spawned = []
    try:
        r = watchdog()  # nobody runs: start one
        assert r.returncode == 3 and "started" in r.stdout, r.stdout + r.stderr
        spawned.append(holder_pid())
        time.sleep(0.5)
        r = watchdog()  # healthy: nothing to do, nothing printed
        assert (r.returncode, r.stdout) == (0, "")
        hung = workers("w2", run_dir)  # unrelated name, untouched
        hung.expect("START True")
        os.kill(spawned[0], signal.SIGSTOP)  # a hung worker: alive, holding the lock, not beating
        time.sleep(1.5)
        r = watchdog()
        assert r.returncode == 3 and "stale" in r.stdout and "SIGKILL" in r.stdout, r.stdout
        new = holder_pid()
        deadline = time.monotonic() + 10
        while new == spawned[0] and time.monotonic() < deadline:
            time.sleep(0.05)
            new = holder_pid()
        assert new != spawned[0]
        spawned.append(new)
        assert hung.proc.poll() is None
    finally:
        for pid in spawned:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_cli_usage_errors_exit_2(run_dir):
    assert wr("frobnicate").returncode == 2
    r = wr("run", "--name", "x", "--run-dir", str(run_dir))
    assert r.returncode == 2 and "needs a command" in r.stderr
    r = wr("status", "--name", "x", "--timeout", "-1")
    assert r.returncode == 2 and "--timeout" in r.stderr


def test_sh_probe_is_the_installed_script():
    assert os.access(PROBE_SH, os.X_OK)


def test_status_judges_a_beat_by_the_workers_own_limit(run_dir):
    # Before: `status` assumed 30 s; a worker hung for 7 s with a 5 s limit showed no STALE.
    code = (
        "import sys, time\nfrom worker_runtime import Daemon\n"
        f"d = Daemon('w', timeout=5, run_dir={str(run_dir)!r}, signal_map={{}})\n"
        "d.start(); print('up', flush=True); time.sleep(60)\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "up"
        time.sleep(6.0)
        r = wr("status", "--name", "w", "--run-dir", str(run_dir))
        assert r.returncode == 0 and "STALE" in r.stdout, r.stdout
        r = wr("status", "--name", "w", "--run-dir", str(run_dir), "--timeout", "60")
        assert "STALE" not in r.stdout, "--timeout given wins"
    finally:
        p.kill()
        p.wait()
