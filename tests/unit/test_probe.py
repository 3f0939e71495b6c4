"""`worker-runtime probe` in-process: every verdict and usage error word for word (the process tier runs the
same command as a subprocess; these make its mutants visible to hack/mutation)."""

import os

import pytest

from worker_runtime import Daemon, probe


@pytest.fixture
def worker(tmp_path, monkeypatch, clock):
    monkeypatch.delenv("DAEMONPOOL_NAME", raising=False)
    monkeypatch.delenv("DAEMONPOOL_TIMEOUT_SECONDS", raising=False)
    d = Daemon("w", timeout=10, run_dir=str(tmp_path), clock=clock, monotonic=clock, signal_map={})
    assert d.start()
    os.utime(tmp_path / "w.0.heartbeat", (clock.t, clock.t))
    yield d, clock, str(tmp_path)
    d.stop()


def run(capsys, *argv):
    code = probe.main(list(argv))
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def test_a_fresh_started_worker_passes_every_probe(worker):
    d, clock, run_dir = worker
    for kind in probe.KINDS:
        assert probe.check(kind, run_dir, "w", 10, now=clock.t + 1) == (True, "ok")
    (s,) = probe.status(run_dir, "w", now=clock.t + 1.5)
    assert s == {"slot": 0, "pid": os.getpid(), "held": True, "heartbeat_age": 1.5, "ready": True, "state": "idle"}


def test_verdicts_word_for_word(worker):
    d, clock, run_dir = worker
    who = f"w slot 0 (pid {os.getpid()})"
    assert probe.check("liveness", run_dir, "w", 10, now=clock.t + 10.5) == (
        False,
        f"{who}: heartbeat is 10.5s old, limit 10s (worker hung?)",
    )
    assert probe.check("startup", run_dir, "w", 10, now=clock.t - 11) == (
        False,
        f"{who}: heartbeat is 11.0s in the future, limit 10s (clock stepped back; worker hung?)",
    )
    assert probe.check("liveness", run_dir, "w", 10, now=clock.t + 10)[0] is True, "exactly the limit is fresh"
    d.set_ready(False)
    assert probe.check("readiness", run_dir, "w", 10, now=clock.t) == (
        False,
        f"{who}: not ready (set_ready(False): a dependency is down?)",
    )
    assert probe.check("liveness", run_dir, "w", 10, now=clock.t) == (True, "ok"), "liveness ignores readiness"
    d.request_stop()
    assert probe.check("readiness", run_dir, "w", 10, now=clock.t) == (False, f"{who}: stopping")
    os.unlink(os.path.join(run_dir, "w.0.heartbeat"))
    assert probe.check("liveness", run_dir, "w", 10, now=clock.t) == (False, f"{who}: no heartbeat file yet")


def test_nobody_holds_the_slot(tmp_path):
    assert probe.check("liveness", str(tmp_path), "w", 10) == (
        False,
        f"no live holder of 'w' in {tmp_path} (worker not started, or exited)",
    )
    (tmp_path / "w.0.pid").write_text("123\n")
    assert probe.holder(str(tmp_path / "w.0.pid")) == (False, 123), "a PID file nobody locks is not a holder"
    assert probe.holder(str(tmp_path / "nope.pid")) == (False, None)
    (tmp_path / "w.0.pid").write_text("x\n")
    assert probe.holder(str(tmp_path / "w.0.pid")) == (False, None)
    with pytest.raises(ValueError, match="probe kind must be one of liveness, readiness, startup, got 'alive'"):
        probe.check("alive", str(tmp_path), "w", 10)


def test_main_exit_codes_and_words(worker, capsys, monkeypatch):
    d, clock, run_dir = worker
    monkeypatch.setattr(probe.time, "time", lambda: clock.t + 1)
    assert run(capsys, "liveness", "--name", "w", "--run-dir", run_dir, "--timeout", "10") == (0, "", "")
    assert run(capsys, "readiness", "--name=w", f"--run-dir={run_dir}", "--timeout=10") == (0, "", "")
    monkeypatch.setenv("DAEMONPOOL_NAME", "w")
    monkeypatch.setenv("DAEMONPOOL_TIMEOUT_SECONDS", "0.5")
    code, out, _ = run(capsys, "liveness", "--run-dir", run_dir)
    assert (code, out) == (1, f"w slot 0 (pid {os.getpid()}): heartbeat is 1.0s old, limit 0.5s (worker hung?)")
    monkeypatch.setenv("DAEMONPOOL_RUN_DIR", run_dir)
    assert run(capsys, "startup", "--timeout", "5")[0] == 0, "the run dir from the environment"


USAGE = "usage: worker-runtime probe liveness|readiness|startup [--name N] [--run-dir D] [--timeout S]"


@pytest.mark.parametrize(
    "argv, err",
    [
        (["liveness", "--name"], f"worker-runtime probe: --name needs a value; {USAGE}"),
        (["liveness", "extra", "--name", "w"], f"worker-runtime probe: unexpected argument 'extra'; {USAGE}"),
        (["--bogus"], f"worker-runtime probe: unexpected argument '--bogus'; {USAGE}"),
        (
            ["--name", "w"],
            f"worker-runtime probe: probe kind must be one of liveness, readiness, startup, got None; {USAGE}",
        ),
        (["liveness"], "worker-runtime probe: no worker name: pass --name or set DAEMONPOOL_NAME"),
        (
            ["liveness", "--name", "-x"],
            "worker-runtime probe: --name must be 1-100 characters of letters, digits, '_', '.', '-' starting "
            "with a letter or digit, got '-x'",
        ),
        (
            ["liveness", "--name", "w", "--timeout", "nan"],
            "worker-runtime probe: --timeout must be a finite number of seconds > 0, got 'nan'",
        ),
        (
            ["liveness", "--name", "w", "--timeout", "soon"],
            "worker-runtime probe: --timeout must be a finite number of seconds > 0, got 'soon'",
        ),
    ],
)
def test_usage_errors(capsys, monkeypatch, argv, err):
    monkeypatch.delenv("DAEMONPOOL_NAME", raising=False)
    assert run(capsys, *argv) == (2, "", err)


def test_the_default_timeout_applies_without_flag_or_environment(worker, capsys, monkeypatch):
    d, clock, run_dir = worker
    monkeypatch.setattr(probe.time, "time", lambda: clock.t + 1)
    assert run(capsys, "liveness", "--name", "w", "--run-dir", run_dir) == (0, "", "")


def test_status_rounds_ages_to_the_millisecond_and_shows_state_only_for_a_holder(worker, tmp_path):
    d, clock, run_dir = worker
    (s,) = probe.status(run_dir, "w", now=clock.t + 1.23456)
    assert s["heartbeat_age"] == 1.235
    (tmp_path / "w.0.state").write_bytes(b"busy \xff\n")
    assert probe.status(run_dir, "w", now=clock.t)[0]["state"] == "busy \ufffd", "undecodable bytes are replaced"
    d.stop()
    (tmp_path / "w.1.pid").write_text("99\n")  # a slot nobody holds, with a state file left behind
    (tmp_path / "w.1.state").write_text("busy\n")
    (left,) = [s for s in probe.status(run_dir, "w", now=clock.t) if s["slot"] == 1]
    assert (left["held"], left["state"], left["pid"]) == (False, None, 99)
