"""Regression tests for the runtime defects an adversarial review found (issue 11, items 1-6).

Real processes, PID namespaces (unshare), other users (setpriv), signals and files.
Each test names the defect it pins; each failed on the code before the fix.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from testkit.proc import PROBE_SH, PROG, child_env, cli, cli_cmd, probe_cmds, until, wr
from testkit.skips import need_root, unavailable

pytestmark = pytest.mark.timeout(180)

PROBES = probe_cmds()
PY = sys.executable


def _tool(name):
    path = shutil.which(name)
    if not path:
        unavailable(f"{name} (util-linux) is not installed")
    return path


def _wait_for(cond, timeout=10.0, what="condition"):
    return until(what, cond, timeout)


def _children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append((int(entry), fields[0]))
    return out


def run_probe(impl, args):
    return subprocess.run(PROBES[impl] + args, capture_output=True, text=True, env=child_env(), timeout=10)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


# -- 1. a restarted container's probes ---------------------------------------------------------------
@pytest.mark.parametrize("impl", sorted(PROBES))
def test_restarted_container_fails_probes_until_its_own_worker_starts(impl, tmp_path):
    """Before: the sh probe trusted `kill -0 1` from the old PID file and passed while the new worker imported."""
    need_root("PID namespaces (unshare -p)")
    unshare, nsenter = _tool("unshare"), _tool("nsenter")
    run = tmp_path / "run"
    run.mkdir()
    env = child_env()
    # Container 1: the worker is PID 1 of its namespace, takes slot 0, beats; then it is SIGKILLed.
    first = subprocess.Popen(
        [unshare, "-pf", "--kill-child", "--mount-proc", PY, PROG, "w", str(run), "--timeout", "30"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert first.stdout.readline().split()[:2] == ["START", "True"]
        assert (run / "w.0.pid").read_text().strip() == "1"
        os.kill(_children(first.pid)[0][0], signal.SIGKILL)  # the container's PID 1 dies
        first.wait(10)
    finally:
        first.kill()
        first.wait(10)
    # Container 2: PID 1 again, "still importing" (a sleep) before it calls start().
    go = tmp_path / "go"
    second = subprocess.Popen(
        [
            unshare,
            "-pf",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            f"while [ ! -e {go} ]; do sleep 0.05; done; exec {PY} {PROG} w {run} --timeout 30",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        pid1 = _wait_for(lambda: [c for c, _ in _children(second.pid)], what="the namespace's PID 1")[0]

        def probe(kind):
            r = subprocess.run(
                [
                    nsenter,
                    "-t",
                    str(pid1),
                    "-p",
                    "-m",
                    *PROBES[impl],
                    kind,
                    "--name",
                    "w",
                    "--run-dir",
                    str(run),
                    "--timeout",
                    "30",
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            return r.returncode, r.stdout.strip()

        for kind in ("startup", "liveness", "readiness"):
            rc, out = probe(kind)
            assert rc == 1 and "no live holder" in out, (kind, rc, out)
        go.touch()
        assert second.stdout.readline().split()[:2] == ["START", "True"]
        for kind in ("startup", "liveness", "readiness"):
            assert probe(kind) == (0, ""), kind
    finally:
        second.kill()
        second.wait(10)


# -- 2. the per-user fallback folder ------------------------------------------------------------------
def _uid():
    for _ in range(100):
        uid = random.randint(61000, 64000)
        if not os.path.exists(f"/tmp/daemonpool-{uid}"):
            return uid
    raise AssertionError("no free test uid")


def _as(uid, *cmd, **kw):
    setpriv = _tool("setpriv")
    env = child_env(HOME="/")
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("DAEMONPOOL_RUN_DIR", None)
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *cmd], dict(kw, env=env)


def test_fallback_folder_made_by_another_user_is_refused(tmp_path):
    """Before: /tmp/daemonpool-UID created by someone else (mode 0777) was used as is."""
    need_root("running as two users (setpriv)")
    victim = _uid()
    folder = f"/tmp/daemonpool-{victim}"
    os.mkdir(folder)
    os.chmod(folder, 0o777)  # the attacker's folder, writable by all
    code = "from worker_runtime import Daemon\nd = Daemon('w')\nprint(d.run_dir)\nd.start()\nprint('STARTED')\n"
    try:
        cmd, kw = _as(victim, PY, "-c", code)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        assert r.stdout.splitlines()[0] == folder
        assert "STARTED" not in r.stdout
        assert (
            "DaemonError" in r.stderr and "owned by uid 0, not by us" in r.stderr and "XDG_RUNTIME_DIR" in r.stderr
        ), r.stderr
        # The folder the runtime makes itself is 0700 and accepted.
        shutil.rmtree(folder)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, **kw)
        assert "STARTED" in r.stdout, r.stderr
        st = os.lstat(folder)
        assert (st.st_uid, st.st_mode & 0o777) == (victim, 0o700)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_planted_symlinks_never_truncate_a_file(tmp_path):
    """Before: temporary files were opened O_CREAT|O_TRUNC and followed a planted symlink."""
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o1777)  # a shared folder, like an emptyDir (0777)
    precious = tmp_path / "precious"
    precious.write_text("do not truncate\n")
    code = textwrap.dedent(f"""
        import os, sys
        from worker_runtime import Daemon, DaemonError
        print(os.getpid(), flush=True)
        sys.stdin.readline()
        try:
            print("START", Daemon("w", run_dir={str(run)!r}).start(), flush=True)
        except DaemonError as exc:
            print("REFUSED", exc, flush=True)
    """)
    p = subprocess.Popen([PY, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        pid = int(p.stdout.readline())
        # The attacker predicts the temporary names (NAME.tmpPID.COUNTER) and plants symlinks at all of them.
        for base in (f".write-test.{pid}", "w.0.pid", "w.0.heartbeat", "w.0.state", "w.0.ready"):
            for n in range(12):
                os.symlink(precious, run / f"{base}.tmp{pid}.{n}")
        p.stdin.write("\n")
        p.stdin.flush()
        out = p.stdout.readline()
        assert p.wait(10) == 0
    finally:
        p.kill()
    assert precious.read_text() == "do not truncate\n"
    assert out.startswith("REFUSED") and "planted" in out, out


def test_watchdog_never_signals_a_pid_it_was_told_about():
    """Before: the watchdog SIGTERMed/SIGKILLed whatever PID the (attacker's) PID file named."""
    need_root("running as two users (setpriv)")
    victim, attacker = _uid(), _uid() + 1
    import tempfile

    run = __import__("pathlib").Path(tempfile.mkdtemp(prefix="dp-shared-"))  # pytest's tmp_path is root-only
    os.chmod(run, 0o1777)
    cmd, kw = _as(victim, "sleep", "120")
    innocent = subprocess.Popen(cmd, **kw)  # the victim's own process, e.g. their editor
    holder_code = textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(run / "w.0.pid")!r}, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"{innocent.pid}\\n")
        print("HELD", flush=True)
        time.sleep(120)
    """)
    cmd, kw = _as(attacker, PY, "-c", holder_code)
    holder = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **kw)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        cmd, kw = _as(
            victim,
            PY,
            "-m",
            "worker_runtime",
            "watchdog",
            "--name",
            "w",
            "--run-dir",
            str(run),
            "--timeout",
            "1",
            "--grace",
            "1",
            "--",
            "true",
        )
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        time.sleep(0.3)
        assert innocent.poll() is None, f"the watchdog killed an innocent process: {r.stdout} {r.stderr}"
        assert r.returncode == 1 and "cannot tell which process holds" in r.stderr, (r.returncode, r.stdout, r.stderr)
    finally:
        for p in (innocent, holder):
            p.kill()
            p.wait(10)
        shutil.rmtree(run, ignore_errors=True)


# -- 3. fork ------------------------------------------------------------------------------------------
def test_forked_child_does_not_keep_the_slot(run_dir, workers):
    """Before: a child made by fork() kept the flock, so after the parent's SIGKILL nobody could start."""
    code = textwrap.dedent(f"""
        import os, time
        from worker_runtime import Daemon
        d = Daemon("w", run_dir={str(run_dir)!r})
        assert d.start()
        child = os.fork()
        # One write(2) a line: print() may write its parts one by one (stdout unbuffered), and the two
        # processes' lines were seen interleaved ("CHILDPARENT 22186" then " False").
        if child == 0:
            os.write(1, f"CHILD {{d.heartbeat()}}\\n".encode())  # the child is not the holder
            time.sleep(120)
            os._exit(0)
        os.write(1, f"PARENT {{child}}\\n".encode())
        time.sleep(120)
    """)
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    lines = [p.stdout.readline().split(), p.stdout.readline().split()]
    child = int(dict((x[0], x[1]) for x in lines)["PARENT"])
    try:
        assert ["CHILD", "False"] in lines
        p.kill()
        p.wait(5)
        assert _alive(child)
        w = workers("w", run_dir)
        assert w.expect("START") == "START True 0"
    finally:
        os.kill(child, signal.SIGKILL)


def test_watchdog_ends_every_real_holder_and_checks_the_slot_is_free(run_dir):
    """Before: with the lock inherited by a child, the watchdog killed the PID in the file, started a
    replacement that could not take the slot, and said "started" on every run."""
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        from worker_runtime import Daemon
        d = Daemon("w", timeout=1, run_dir={str(run_dir)!r}, signal_map={{15: "ignore"}})
        assert d.start()
        # A helper that inherits the lock's descriptor explicitly (not through the runtime's fork).
        c = subprocess.Popen(["sleep", "120"], pass_fds=[d._fd])
        print("CHILD", c.pid, flush=True)
        time.sleep(120)  # hung: no more beats, SIGTERM ignored
    """)
    p = subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env())
    child = int(p.stdout.readline().split()[1])
    try:
        time.sleep(1.5)
        args = [
            *cli("watchdog", run_dir),
            "--timeout",
            "1",
            "--grace",
            "1",
            "--",
            PY,
            PROG,
            "w",
            str(run_dir),
            "--timeout",
            "30",
            "--hold",
            "120",
        ]
        r = wr(*args)
        assert r.returncode == 3 and "started" in r.stdout, (r.stdout, r.stderr)
        assert p.wait(5) == -signal.SIGKILL
        _wait_for(lambda: not _alive(child), what="the helper that inherited the lock to be gone")
        _wait_for(
            lambda: (
                wr("probe", "liveness", "--name", "w", "--run-dir", str(run_dir), "--timeout", "30").returncode == 0
            ),
            what="the replacement to hold the slot",
        )
        r = wr(*args)
        assert r.returncode == 0, ("the replacement holds the slot: healthy, nothing done", r.stdout, r.stderr)
    finally:
        p.kill()
        with_pid = [int(x) for x in (run_dir / "w.0.pid").read_text().split()] if (run_dir / "w.0.pid").exists() else []
        for pid in with_pid + [child]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- 4. run and watchdog process handling -------------------------------------------------------------
def test_watchdog_ends_a_hung_run_child_too(run_dir, tmp_path):
    """Before: the watchdog SIGKILLed the `run` wrapper and left its hung child running (orphaned)."""
    pidfile = tmp_path / "child.pid"
    hung = f"import os, signal, time; signal.signal(15, signal.SIG_IGN); open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    run = subprocess.Popen(
        [
            *cli_cmd("run", run_dir),
            "--timeout",
            "1",
            "--heartbeat",
            "file",  # the child must beat itself, and never does
            "--",
            PY,
            "-c",
            hung,
        ],
        env=child_env(),
        start_new_session=True,
    )
    try:
        child = int(_wait_for(lambda: pidfile.exists() and pidfile.read_text(), what="the child's pid"))
        time.sleep(1.5)  # the child never beats
        r = wr("watchdog", "--name", "w", "--run-dir", str(run_dir), "--timeout", "1", "--grace", "1", "--", "true")
        assert r.returncode == 3, (r.stdout, r.stderr)
        run.wait(10)
        _wait_for(lambda: not _alive(child), timeout=5, what="the hung child to be ended")
    finally:
        run.kill()
        if pidfile.exists():
            try:
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_run_never_loses_a_sigterm_that_arrives_while_it_starts_the_child(tmp_path):
    """Before: a SIGTERM between start() and the child's spawn was dropped (14 of 20 tries in the review)."""
    lost = []
    for i in range(20):
        rd = tmp_path / f"r{i}"
        rd.mkdir()
        p = subprocess.Popen(
            [PY, "-m", "worker_runtime", "run", "--name", "w", "--run-dir", str(rd), "--", "sleep", "60"],
            env=child_env(),
        )
        try:
            # The moment the child is forked, `run` is inside its spawn: that is when the signal comes.
            children = f"/proc/{p.pid}/task/{p.pid}/children"
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with open(children) as f:
                    if f.read().strip():
                        break
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(5)
                assert rc in (143, 128 + signal.SIGTERM), rc
            except subprocess.TimeoutExpired:
                lost.append(i)
        finally:
            p.kill()
            p.wait()
    assert lost == [], f"SIGTERM lost in tries {lost}"


def test_a_process_group_signal_reaches_the_run_child_once(run_dir):
    """Before: `kill -TERM -PGID` reached the child twice (its own and the forwarded one): a Daemon child
    took the second as "asked twice" and exited 143 at once instead of finishing its item."""
    child = textwrap.dedent(f"""
        import time
        from worker_runtime import Daemon
        d = Daemon("inner", run_dir={str(run_dir)!r})
        running = d.start()
        print("UP", flush=True)
        while running:
            time.sleep(0.01)
            running = d.heartbeat()
        time.sleep(1.0)  # finishing the current item
        d.stop()
    """)
    p = subprocess.Popen(
        [PY, "-m", "worker_runtime", "run", "--name", "w", "--run-dir", str(run_dir), "--", PY, "-c", child],
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
    )
    try:
        assert p.stdout.readline().strip() == "UP"
        os.killpg(p.pid, signal.SIGTERM)
        assert p.wait(10) == 0
    finally:
        p.kill()


def test_run_as_pid_1_reaps_orphans(run_dir):
    """Before: as PID 1, `run` waited for its child only; orphans it inherited stayed zombies."""
    need_root("a PID namespace (unshare -p)")
    unshare = _tool("unshare")
    script = "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 3"
    p = subprocess.Popen(
        [
            unshare,
            "-pf",
            "--kill-child",
            "--mount-proc",
            *cli_cmd("run", run_dir),
            "--",
            "sh",
            "-c",
            script,
        ],
        env=child_env(),
    )
    try:
        pid1 = _wait_for(lambda: [c for c, _ in _children(p.pid)], what="PID 1")[0]
        time.sleep(1.5)  # the orphans have exited and were re-parented to PID 1
        zombies = [c for c, state in _children(pid1) if state == "Z"]
        assert zombies == [], f"zombies under PID 1: {zombies}"
        assert p.wait(10) == 0
    finally:
        p.kill()
        p.wait()


# -- 5. clock steps -----------------------------------------------------------------------------------
@pytest.mark.parametrize("impl", sorted(PROBES))
def test_a_beat_far_in_the_future_is_stale(impl, run_dir, workers):
    """Before: a hung worker whose beat lay in the future (clock stepped back) passed for as long as the step."""
    w = workers("w", run_dir, "--timeout", "2", "--mode", "hang")
    w.expect("START True")
    hb = run_dir / "w.0.heartbeat"
    future = time.time() + 300
    os.utime(hb, (future, future))
    r = run_probe(impl, ["liveness", "--name", "w", "--run-dir", str(run_dir), "--timeout", "2"])
    assert r.returncode == 1 and "in the future" in r.stdout, r.stdout
    near = time.time() + 1  # within the limit: a small step is forgiven
    os.utime(hb, (near, near))
    r = run_probe(impl, ["liveness", "--name", "w", "--run-dir", str(run_dir), "--timeout", "2"])
    assert r.returncode == 0, r.stdout


# -- 6. input hygiene ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["nan", "inf", "-1", "0", "1e999"])
@pytest.mark.parametrize("impl", sorted(PROBES))
def test_probe_refuses_a_timeout_that_is_not_finite(impl, bad, run_dir):
    """Before: the Python probe took nan and then passed a worker whatever its beat's age."""
    r = run_probe(impl, ["liveness", "--name", "w", "--run-dir", str(run_dir), "--timeout", bad])
    assert r.returncode == 2 and "--timeout" in (r.stdout + r.stderr), (r.stdout, r.stderr)


def test_from_env_and_the_cli_refuse_nan(run_dir):
    code = "from worker_runtime import Daemon\nDaemon.from_env()"
    r = subprocess.run(
        [PY, "-c", code],
        capture_output=True,
        text=True,
        timeout=10,
        env=child_env(DAEMONPOOL_NAME="w", DAEMONPOOL_TIMEOUT_SECONDS="nan"),
    )
    assert r.returncode == 1 and "DAEMONPOOL_TIMEOUT_SECONDS='nan' is not a valid finite number" in r.stderr, r.stderr
    r = wr("watchdog", "--name", "w", "--run-dir", str(run_dir), "--timeout", "nan", "--", "true")
    assert r.returncode == 2 and "finite" in r.stderr, r.stderr


def test_sh_probe_takes_fractional_timeouts(run_dir, workers):
    """Before: the sh probe cut 2.9 to 2 and refused .5 as a usage error."""
    w = workers("w", run_dir, "--timeout", "30", "--mode", "hang")
    w.expect("START True")
    hb = run_dir / "w.0.heartbeat"

    def sh(timeout, age):
        t = time.time() - age
        os.utime(hb, (t, t))
        r = subprocess.run(
            ["sh", PROBE_SH, "liveness", "--name", "w", "--run-dir", str(run_dir), "--timeout", timeout],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return r.returncode, r.stdout.strip()

    assert sh(".5", 0.1)[0] == 0
    rc, out = sh(".5", 1.5)
    assert rc == 1 and "limit 0.5s" in out, out
    assert sh("2.9", 2.5)[0] == 0, "2.5 s is within a 2.9 s limit"
    rc, out = sh("2.9", 3.5)
    assert rc == 1 and "limit 2.9s" in out, out


@pytest.mark.parametrize("impl", sorted(PROBES))
def test_a_name_does_not_match_a_longer_name(impl, run_dir, workers):
    """Before: the sh probe's glob let `--name mail` see the holder of `mail.bulk`."""
    w = workers("mail.bulk", run_dir)
    w.expect("START True")
    r = run_probe(impl, ["liveness", "--name", "mail", "--run-dir", str(run_dir)])
    assert r.returncode == 1 and "no live holder of" in r.stdout, r.stdout


@pytest.mark.parametrize("impl", sorted(PROBES))
def test_a_name_with_a_newline_is_a_usage_error(impl, run_dir):
    r = run_probe(impl, ["liveness", "--name", "mail\n", "--run-dir", str(run_dir)])
    assert r.returncode == 2 and "--name must be" in (r.stdout + r.stderr), (r.stdout, r.stderr)


def test_heartbeat_on_a_full_disk_raises_daemon_error(tmp_path):
    """Before: heartbeat() raised a raw OSError(ENOSPC)."""
    need_root("mounting a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    code = textwrap.dedent(f"""
        import os
        from worker_runtime import Daemon, DaemonError
        clock = [1000.0]
        d = Daemon("w", timeout=10, run_dir={str(mnt)!r}, monotonic=lambda: clock[0])
        assert d.start()
        with open({str(mnt / "fill")!r}, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096); f.flush()
            except OSError:
                pass
        clock[0] += 5
        try:
            d.heartbeat()
            print("NO ERROR")
        except DaemonError as exc:
            print("DAEMONERROR", exc)
    """)
    try:
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=child_env(), timeout=30)
        assert (
            r.stdout.startswith("DAEMONERROR")
            and "no space left on device" in r.stdout
            and "DAEMONPOOL_RUN_DIR" in r.stdout
        ), (r.stdout, r.stderr)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_unwritable_log_is_an_error_not_a_traceback(run_dir, tmp_path):
    r = wr(
        *cli("watchdog", run_dir),
        "--log",
        str(tmp_path / "no" / "such" / "log"),
        "--",
        "true",
    )
    assert r.returncode == 1 and "cannot open --log" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_start_returns_false_when_sigterm_arrives_during_start(run_dir):
    """Before: start() returned True although SIGTERM had arrived while it ran."""
    code = textwrap.dedent(f"""
        import os, signal, time
        from worker_runtime import Daemon
        def clock():  # called by the first beat, inside start()
            os.kill(os.getpid(), signal.SIGTERM)
            return time.time()
        d = Daemon("w", run_dir={str(run_dir)!r}, clock=clock)
        print("START", d.start(), d.stop_signal, d.heartbeat(), flush=True)
        d.stop()
    """)
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=child_env(), timeout=10)
    assert r.stdout.split() == ["START", "False", "15", "False"], (r.stdout, r.stderr)
    assert not (run_dir / "w.0.ready").exists()
