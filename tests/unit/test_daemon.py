"""The Daemon in-process (worker_runtime/daemon.py): real signals and files, word for word (the process tier
runs the same steps in subprocesses; these make its mutants visible to hack/mutation), and its pure parts
with injected time. Signals go to this process; every handler is put back by stop()."""

import ast
import os
import pathlib
import signal
import sys
import threading

import pytest

from worker_runtime import Daemon, DaemonError, probe

from testkit.clock import Clock


def make(tmp_path, clock, **kw):
    return Daemon("u", timeout=10, run_dir=str(tmp_path), clock=clock, monotonic=clock, **kw)


def test_a_bad_signal_action_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError) as e:
        Daemon("u", run_dir=str(tmp_path), signal_map={signal.SIGHUP: "bogus"})
    assert str(e.value) == "signal_map[SIGHUP] must be 'stop', 'ignore', 'default' or a callable, got 'bogus'"
    for ok in ("stop", "ignore", "default", print):
        Daemon("u", run_dir=str(tmp_path), signal_map={signal.SIGHUP: ok})


def test_stop_signals_set_the_flag_and_stop_puts_the_handlers_back(tmp_path, clock):
    seen = []
    before = {s: signal.signal(s, lambda n, f: seen.append(n)) for s in (signal.SIGHUP, signal.SIGUSR1)}
    try:
        d = make(tmp_path, clock, signal_map={signal.SIGUSR1: "ignore"})
        assert d.start()
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_IGN
        assert (tmp_path / "u.0.ready").exists()
        os.kill(os.getpid(), signal.SIGHUP)
        assert d.stop_signal == signal.SIGHUP and seen == []
        assert not d.heartbeat()
        assert (tmp_path / "u.0.state").read_text() == "stopping\n"
        assert not (tmp_path / "u.0.ready").exists()
        os.kill(os.getpid(), signal.SIGHUP)  # a second SIGHUP is not "asked twice": no exit
        assert d.state_view()["state"] == "stopping"
        d.stop()
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == [signal.SIGHUP, signal.SIGUSR1], "the handlers from before start() are back"
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_default_and_callable_actions(tmp_path, clock):
    got = []
    d = make(tmp_path, clock, signal_map={signal.SIGUSR1: got.append, signal.SIGUSR2: "default"})
    old = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        assert d.start()
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == [signal.SIGUSR1] and d.stop_signal is None and d.heartbeat()
        d.stop()
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, old)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_asked_twice_exits_at_once_with_128_plus_the_signal_running_finally_blocks(tmp_path, clock, signum):
    # The same steps in this process first (without the second ask), so the mutation run knows this test
    # exercises on_signal: what runs in the child is invisible to its coverage.
    here = make(tmp_path / "here", clock, signal_map={})
    here.start()
    here.request_stop(signal.SIGHUP)
    here.on_signal(signal.SIGHUP)
    assert here.stop_signal == signal.SIGHUP
    here.stop()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: start, be asked to stop, then asked again
        code = 0
        try:
            d = make(tmp_path, clock, signal_map={})
            d.start()
            d.on_stop(lambda: os.write(w, b"on_stop "))
            d.request_stop(signal.SIGHUP)
            d.on_signal(signal.SIGHUP)  # not an exit
            try:
                d.on_signal(signum)
            finally:
                os.write(w, b"finally ")
        except SystemExit as e:
            code = e.code
            d.stop()
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        said = f.read()
    assert os.waitstatus_to_exitcode(status) == 128 + signum
    assert said == b"finally on_stop ", "finally blocks and on_stop callbacks run (os._exit skipped them before)"
    assert os.listdir(tmp_path) == ["here"] and os.listdir(tmp_path / "here") == [], "the files went before the exit"


def test_start_off_the_main_thread_says_how_to_fix_it(tmp_path, clock):
    d = make(tmp_path, clock)
    err = []
    t = threading.Thread(target=lambda: err.append(pytest.raises(DaemonError, d.start).value))
    t.start()
    t.join()
    assert str(err[0]) == (
        "start() must run in the main thread to install signal handlers; "
        "call it there or pass signal_map={} and handle signals yourself"
    )


def test_busy_seconds_add_up_and_idle_first(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    v = d.state_view()
    assert (v["state"], v["busy_seconds_total"], v["ready"], v["slot"]) == ("idle", 0.0, True, 0)
    with d.busy():
        clock.t += 5
        assert (tmp_path / "u.0.state").read_text() == "busy\n"
        assert d.state_view()["busy_seconds_total"] == 5.0
    clock.t += 3
    v = d.state_view()
    assert (v["state"], v["seconds_in_state"], v["busy_seconds_total"]) == ("idle", 3.0, 5.0)
    with d.busy():
        with d.busy():  # nested: still one busy stretch
            clock.t += 2
    assert d.state_view()["busy_seconds_total"] == 7.0
    d.set_ready(False)
    assert not (tmp_path / "u.0.ready").exists() and d.state_view()["ready"] is False
    d.set_ready()
    assert (tmp_path / "u.0.ready").read_text() == f"{os.getpid()}\n"
    d.stop()


def test_a_lost_pid_file_ends_the_loop_and_readiness(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    beat = (tmp_path / "u.0.heartbeat").read_text().split()
    assert beat[0] == "1000.000" and beat[1] == str(os.getpid()) and beat[2] != "-"
    os.unlink(tmp_path / "u.0.pid")
    d.set_ready(False)  # the ready file is already gone when the loss is found
    assert d.heartbeat(), "no check before the next beat is due"
    clock.t += d.beat_interval
    assert not d.heartbeat()
    assert not (tmp_path / "u.0.ready").exists()
    clock.t += d.beat_interval
    stat_calls = []
    real_stat = os.stat
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "stat", lambda *a, **k: stat_calls.append(a) or real_stat(*a, **k))
        assert not d.heartbeat(), "lost stays lost"
    assert stat_calls == [], "a lost slot is not looked at again"
    with d.busy():
        assert (tmp_path / "u.0.state").read_text() == "idle\n", "a lost worker writes no state"
    d.stop()


def test_beats_are_spaced_by_the_interval(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    hb = tmp_path / "u.0.heartbeat"
    clock.t += d.beat_interval
    assert d.heartbeat() and hb.read_text().startswith("1001.000 ")
    clock.t += d.beat_interval / 2
    assert d.heartbeat() and hb.read_text().startswith("1001.000 "), "not due yet"
    clock.t += d.beat_interval / 2
    assert d.heartbeat() and hb.read_text().startswith("1002.000 ")
    d.stop()


def test_a_run_dir_that_is_a_file_is_refused_with_the_fix(tmp_path, clock):
    f = tmp_path / "file"
    f.write_text("")
    d = Daemon("u", run_dir=str(f), signal_map={})
    with pytest.raises(DaemonError) as e:
        d.start()
    assert str(e.value).startswith(f"run directory {str(f)!r} is not usable: ")
    assert str(e.value).endswith("; set DAEMONPOOL_RUN_DIR to a writable folder (in a pod: an emptyDir volume)")
    made = tmp_path / "new"
    Daemon("u", run_dir=str(made), signal_map={}).start()
    assert oct(made.stat().st_mode & 0o777) == oct(0o755)
    assert not [p for p in os.listdir(made) if p.startswith(".write-test")]


def test_from_env_words(monkeypatch, tmp_path):
    monkeypatch.setenv("DAEMONPOOL_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("DAEMONPOOL_NAME", "envname")
    assert Daemon.from_env().name == "envname"
    assert Daemon.from_env(name="given").name == "given"
    monkeypatch.setenv("DAEMONPOOL_TIMEOUT_SECONDS", "abc")
    with pytest.raises(ValueError) as e:
        Daemon.from_env()
    assert str(e.value) == "DAEMONPOOL_TIMEOUT_SECONDS='abc' is not a valid finite number > 0"
    monkeypatch.setenv("DAEMONPOOL_TIMEOUT_SECONDS", "-1")
    with pytest.raises(ValueError, match=r"^DAEMONPOOL_TIMEOUT_SECONDS='-1' is not a valid finite number > 0$"):
        Daemon.from_env()
    monkeypatch.setenv("DAEMONPOOL_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("DAEMONPOOL_MAX_PEERS", "0")
    with pytest.raises(ValueError) as e:
        Daemon.from_env()
    assert str(e.value) == "DAEMONPOOL_MAX_PEERS='0' is not a valid whole number > 0"
    monkeypatch.setenv("DAEMONPOOL_MAX_PEERS", "3")
    d = Daemon.from_env()
    assert (d.timeout, d.max_peers) == (2.5, 3)


def test_a_forked_child_lets_go_without_touching_the_files(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    before = sorted(os.listdir(tmp_path))
    d._detach_after_fork()  # what os.register_at_fork runs in a child
    assert not d.heartbeat() and not d.running
    assert sorted(os.listdir(tmp_path)) == before, "the parent's files stay"
    with d.busy():
        pass
    assert (tmp_path / "u.0.state").read_text() == "idle\n"
    other = make(tmp_path, clock, signal_map={})
    assert other.start() and other.slot == 0, "the slot is free again"
    other.stop()
    d.stop()


def test_one_slot_one_holder_even_in_one_process(tmp_path, clock):
    a = make(tmp_path, clock, signal_map={}, max_peers=1)
    b = make(tmp_path, clock, signal_map={}, max_peers=1)
    assert a.slot is None and a.state_view()["slot"] is None
    assert a.start() and not b.start()
    a.stop()
    assert b.start()
    b.stop()


def test_after_stop_nothing_is_written_and_heartbeat_is_false(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    d.stop()
    clock.t += 5
    assert not d.heartbeat()
    with d.busy():
        pass
    assert os.listdir(tmp_path) == []


def test_start_again_after_a_stop_signal_is_false(tmp_path, clock):
    d = make(tmp_path, clock, signal_map={})
    assert d.start()
    d.request_stop()
    assert d.start() is False
    d.stop()


def test_a_write_that_fails_says_where_and_what_to_do(tmp_path, clock):
    import shutil

    run = tmp_path / "run"
    d = make(run, clock, signal_map={})
    assert d.start()
    shutil.rmtree(run)
    with pytest.raises(DaemonError) as e:
        with d.busy():
            pass
    msg = str(e.value)
    assert msg.startswith(f"cannot write {str(run / 'u.0.state')!r}: ")
    assert msg.endswith(f"; free space in (or remount) {run}, or set DAEMONPOOL_RUN_DIR to a writable folder")
    d.stop()


def test_a_given_port_is_served(tmp_path, clock):
    import json
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = make(tmp_path, clock, signal_map={}, port=port)
    assert d.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/state", timeout=5) as r:
            assert json.loads(r.read())["pool"] == "u"
    finally:
        d.stop()


def test_a_name_given_needs_no_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("DAEMONPOOL_NAME", raising=False)
    monkeypatch.setenv("DAEMONPOOL_RUN_DIR", str(tmp_path))
    assert Daemon.from_env(name="given").name == "given"
    with pytest.raises(DaemonError, match="DAEMONPOOL_NAME is not set"):
        Daemon.from_env()


ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def daemon(tmp_path):
    clock = Clock()
    d = Daemon("u", timeout=30, run_dir=str(tmp_path), clock=clock, monotonic=clock, signal_map={})
    assert d.start()
    yield d, clock, tmp_path
    d.stop()


def test_heartbeat_writes_at_most_every_interval(daemon):
    d, clock, run_dir = daemon
    hb = run_dir / "u.0.heartbeat"
    assert d.beat_interval == 1.0
    first = hb.read_text()
    for _ in range(1000):
        assert d.heartbeat()
    assert hb.read_text() == first, "no write before the interval elapsed"
    clock.t += 1.0
    assert d.heartbeat()
    assert float(hb.read_text().split()[0]) == pytest.approx(1001.0)


def test_short_timeouts_beat_ten_times_per_timeout(tmp_path):
    assert Daemon("u", timeout=2, run_dir=str(tmp_path)).beat_interval == pytest.approx(0.2)


def test_request_stop_and_stop_twice(daemon):
    d, _, run_dir = daemon
    with d.busy():
        assert (run_dir / "u.0.state").read_text() == "busy\n"
    assert (run_dir / "u.0.state").read_text() == "idle\n"
    d.request_stop()
    assert not d.heartbeat()
    assert not (run_dir / "u.0.ready").exists()
    assert (run_dir / "u.0.state").read_text() == "stopping\n"
    d.stop()
    d.stop()
    assert os.listdir(run_dir) == []


def test_context_manager(tmp_path):
    with Daemon("c", run_dir=str(tmp_path), signal_map={}) as d:
        assert d.running and d.heartbeat()
        assert (tmp_path / "c.0.pid").read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"timeout": 0}, "timeout must be a finite number > 0"),
        ({"timeout": -1}, "timeout must be a finite number > 0"),
        ({"timeout": float("nan")}, "timeout must be a finite number > 0"),
        ({"timeout": float("inf")}, "timeout must be a finite number > 0"),
        ({"timeout": "30"}, "timeout must be a positive number"),
        ({"max_peers": 0}, "max_peers must be > 0"),
        ({"max_peers": 1.5}, "max_peers must be a positive whole number"),
        ({"max_peers": True}, "max_peers must be a positive whole number"),
        ({"name": ""}, "name must be"),
        ({"name": "a/b"}, "name must be"),
        ({"name": "mail\n"}, "name must be"),
        ({"name": "mail*"}, "name must be"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(tmp_path, kwargs, needle):
    args = {"name": "x", "run_dir": str(tmp_path), **kwargs}
    with pytest.raises(ValueError, match=needle):
        Daemon(**args)


def test_bad_signal_action_names_the_signal(tmp_path):
    with pytest.raises(ValueError, match=r"signal_map\[SIGTERM\] must be"):
        Daemon("x", run_dir=str(tmp_path), signal_map={15: "explode"})


def test_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DAEMONPOOL_NAME", "envy")
    monkeypatch.setenv("DAEMONPOOL_TIMEOUT_SECONDS", "12")
    monkeypatch.setenv("DAEMONPOOL_MAX_PEERS", "4")
    monkeypatch.setenv("DAEMONPOOL_RUN_DIR", str(tmp_path))
    d = Daemon.from_env()
    assert (d.name, d.timeout, d.max_peers, d.run_dir) == ("envy", 12.0, 4, str(tmp_path))
    monkeypatch.setenv("DAEMONPOOL_MAX_PEERS", "four")
    with pytest.raises(ValueError, match="DAEMONPOOL_MAX_PEERS='four'"):
        Daemon.from_env()
    monkeypatch.delenv("DAEMONPOOL_NAME")
    with pytest.raises(DaemonError, match="DAEMONPOOL_NAME is not set"):
        Daemon.from_env()


def test_probe_check_reasons(daemon):
    d, clock, run_dir = daemon
    ok, why = probe.check("liveness", str(run_dir), "u", 30)
    assert ok, why
    hb_mtime = os.stat(run_dir / "u.0.heartbeat").st_mtime
    ok, why = probe.check("liveness", str(run_dir), "u", 30, now=hb_mtime + 45)
    assert not ok and "heartbeat is 45.0s old, limit 30s" in why
    with pytest.raises(ValueError):
        probe.check("sideways", str(run_dir), "u", 30)


def _imports(path):
    """Modules a file imports at run time: ``if TYPE_CHECKING:`` blocks are for the type checker only."""
    tree = ast.parse(path.read_text(), str(path))
    for node in list(ast.walk(tree)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_worker_runtime_imports_only_the_standard_library():
    files = sorted((ROOT / "worker_runtime").rglob("*.py"))
    assert files
    outside = {(f.name, m) for f in files for m in _imports(f) if m not in sys.stdlib_module_names}
    assert outside == set()


def test_probe_path_imports_nothing_heavy():
    """`worker-runtime probe` runs every few seconds in every pod: keep its imports minimal."""
    allowed = {"os", "time", "fcntl", "sys", "itertools", "stat", "errno"}  # built in, or imported by os itself
    # (typing only under TYPE_CHECKING, which is False at run time: never imported on the probe path)
    for name in ("probe.py", "_files.py", "__main__.py", "__init__.py"):
        mods = set(_imports(ROOT / "worker_runtime" / name))
        assert mods <= allowed, (name, mods - allowed)
    import subprocess
    import sys

    code = "import sys, worker_runtime.probe, worker_runtime.__main__; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not loaded & {"typing", "argparse", "json", "asyncio", "socket"}, "the probe path stays light at run time"


def test_the_sh_probe_uses_the_contracts_names_and_defaults():
    """The sh probe cannot import contract.py: prove it spells the same environment names and defaults."""
    from worker_runtime import contract

    sh = (ROOT / "worker_runtime" / contract.PROBE_COMMAND).read_text()
    assert f"name=${{{contract.ENV_NAME}:-}}" in sh
    assert f"dir=${{{contract.ENV_RUN_DIR}:-{contract.DEFAULT_RUN_DIR}}}" in sh
    assert f"timeout=${{{contract.ENV_TIMEOUT}:-{int(contract_default_timeout())}}}" in sh


def contract_default_timeout():
    from worker_runtime import _files

    return _files.DEFAULT_TIMEOUT


# -- literal tests: what the Daemon's own steps say and do, word for word (hack/mutation's survivors) ----------


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "worker_runtime"]


def test_start_and_stop_log_lines_word_for_word(tmp_path, clock, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="worker_runtime")
    pid = os.getpid()
    d = make(tmp_path, clock, capacity=2)
    assert d.start()
    assert _messages(caplog)[-1] == f"u slot 0 (pid {pid}): started; timeout 10s, capacity 2"

    def failing():
        raise RuntimeError("boom")

    d.on_stop(failing)
    d.stop()
    said = _messages(caplog)
    assert f"u: on_stop callback {failing!r} failed" in said
    assert said[-1] == f"u slot 0 (pid {pid}): stopped (stop()); 0 item(s) done"


def test_start_says_its_port_and_a_full_run_dir_says_whose_slots(tmp_path, clock, caplog):
    import logging

    from testkit.services import free_port

    caplog.set_level(logging.INFO, logger="worker_runtime")
    port = free_port()
    d = make(tmp_path, clock, max_peers=1, port=port, host="127.0.0.1")
    try:
        assert d.start()
        assert (
            _messages(caplog)[-1]
            == f"u slot 0 (pid {os.getpid()}): started; timeout 10s, capacity 1, answering on port {port}"
        )
        other = make(tmp_path, clock, max_peers=1)
        assert not other.start()
        assert _messages(caplog)[-1] == f"u: all 1 slot(s) in {tmp_path} are held by live processes"
    finally:
        d.stop()


def test_a_lost_pid_file_stops_the_daemon_saying_which_file_and_drops_readiness(tmp_path, clock, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="worker_runtime")
    d = make(tmp_path, clock)
    assert d.start()
    assert (tmp_path / "u.0.ready").exists()
    os.unlink(tmp_path / "u.0.pid")
    clock.t += 5
    assert not d.heartbeat()
    why = f"lost its PID file {tmp_path}/u.0.pid (removed or taken over by another process)"
    assert d.stop_reason == why
    assert _messages(caplog)[-1] == f"u slot 0 (pid {os.getpid()}): {why}; stopping"
    assert not (tmp_path / "u.0.ready").exists(), "a worker that lost its slot is not ready"
    assert not d.beat(), "beat() says the slot is gone"
    d.stop()


def test_beat_writes_now_even_while_stopping_and_is_false_without_a_slot(tmp_path, clock):
    d = make(tmp_path, clock)
    assert not d.beat(), "not started: no slot to beat for"
    assert d.start()
    d.request_stop()
    before = (tmp_path / "u.0.heartbeat").read_text()
    clock.t += 0.001  # less than the beat interval: heartbeat() would not write, beat() does
    assert d.beat()
    assert (tmp_path / "u.0.heartbeat").read_text() != before
    d.stop()
    assert not d.beat()


def test_capacity_is_refused_by_its_name(tmp_path):
    with pytest.raises(ValueError) as e:
        Daemon("u", run_dir=str(tmp_path), capacity=0)
    assert str(e.value) == "capacity must be > 0, got 0"


def test_a_recycled_worker_says_why_in_the_termination_log_and_a_plain_stop_does_not(tmp_path, clock, monkeypatch):
    log_file = tmp_path / "termination-log"
    log_file.write_text("")
    monkeypatch.setenv("DAEMONPOOL_TERMINATION_LOG", str(log_file))
    plain = make(tmp_path / "a", clock)
    assert plain.start()
    plain.stop()
    assert log_file.read_text() == ""
    d = make(tmp_path / "b", clock, max_items=1, recycle_jitter=0)
    assert d.start()
    with d.busy():
        pass
    assert d.stop_reason == "recycled after 1 items (max_items 1)"
    d.stop()
    assert log_file.read_text().strip() == "recycled after 1 items (max_items 1)"


def test_a_passing_shortage_of_descriptors_is_tried_three_times_other_errors_once(tmp_path, clock, monkeypatch):
    import errno

    from worker_runtime import _files

    d = make(tmp_path, clock)
    assert d.start()
    real = _files.atomic_write
    calls, naps = [], []
    monkeypatch.setattr("time.sleep", naps.append)

    def failing(errs):
        def write(path, data):
            calls.append(path)
            if errs:
                raise OSError(errs.pop(0), os.strerror(errno.EMFILE))
            return real(path, data)

        return write

    try:
        monkeypatch.setattr(_files, "atomic_write", failing([errno.EMFILE, errno.ENFILE]))
        d._write("state", "idle\n")
        assert len(calls) == 3 and naps == [0.01, 0.01]
        calls.clear(), naps.clear()
        monkeypatch.setattr(_files, "atomic_write", failing([errno.EMFILE] * 3))
        with pytest.raises(DaemonError):
            d._write("state", "idle\n")
        assert len(calls) == 3 and naps == [0.01, 0.01]
        calls.clear(), naps.clear()
        monkeypatch.setattr(_files, "atomic_write", failing([errno.ENOSPC]))
        with pytest.raises(DaemonError) as e:
            d._write("state", "idle\n")
        assert len(calls) == 1 and naps == []
        assert str(e.value).startswith(f"cannot write {str(tmp_path / 'u.0.state')!r}: ")
    finally:
        monkeypatch.setattr(_files, "atomic_write", real)
        d.stop()


def test_the_notify_socket_given_beats_the_environment_and_ready_says_status(tmp_path, clock, monkeypatch):
    import socket

    ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.bind(str(tmp_path / "ours.sock"))
    ours.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "elsewhere.sock"))
    d = make(tmp_path / "run", clock, notify_socket=str(tmp_path / "ours.sock"))
    try:
        assert d.start()
        got = []
        while not any(m.startswith("READY=") for m in got):
            got.append(ours.recv(4096).decode())
        ready = next(m for m in got if m.startswith("READY="))
        assert ready == f"READY=1\nMAINPID={os.getpid()}\nSTATUS={d._status_line()}"
        assert d._status_line(), "a status to show"
    finally:
        d.stop()
        ours.close()


def _in_a_forked_child(fn) -> str:
    """Run ``fn()`` in a forked child; returns what it printed (its repr), or the error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            out = repr(fn())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = f"raised {type(exc).__name__}: {exc}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def test_a_forked_child_holds_no_slot_and_its_stop_leaves_the_parents_callbacks_and_files(tmp_path, clock):
    from testkit.services import free_port

    d = make(tmp_path, clock, port=free_port(), host="127.0.0.1")
    ran = []
    d.on_stop(lambda: ran.append("callback"))
    assert d.start()
    try:

        def child():
            alive = (d.running, d.heartbeat())
            d.stop()
            return alive, ran

        assert _in_a_forked_child(child) == "((False, False), [])"
        assert (tmp_path / "u.0.pid").exists() and d.running, "the parent's slot and files are untouched"
    finally:
        d.stop()
    assert ran == ["callback"]


def test_stop_before_start_runs_the_callbacks_and_is_safe_twice(tmp_path, clock):
    d = make(tmp_path, clock)
    ran = []
    d.on_stop(lambda: ran.append(1))
    d.stop()
    d.stop()
    assert ran == [1]
