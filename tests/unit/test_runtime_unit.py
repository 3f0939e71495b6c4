"""Fast tests of the runtime's pure parts, with injected time."""

import ast
import os
import pathlib
import sys

import pytest

from worker_runtime import Daemon, DaemonError, probe

ROOT = pathlib.Path(__file__).resolve().parents[2]


class FakeTime:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def daemon(tmp_path):
    clock = FakeTime()
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
