"""Processes of the harness: run commands, spawn daemons with PID files, stop them, wait on readiness.

The one home of `say`, `sh`, `kubectl` and `ctr`; every other module imports them from here.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from . import config as C


class ClusterError(RuntimeError):
    """A component failed to come up: names it and carries the end of its log."""

    def __init__(self, component: str, why: str):
        self.component = component
        log = C.LOGS / f"{component}.log"
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        super().__init__(f"{component} failed: {why}\n--- last lines of {log} ---\n{tail}")


def say(msg: str) -> None:
    print(f"[local-cluster] {msg}", file=sys.stderr, flush=True)


def sh(*args, check=True, capture=True, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], check=check, capture_output=capture, text=True, env=env, input=input, timeout=timeout
    )


def kubectl(*args, check=True, timeout=60, input=None) -> subprocess.CompletedProcess:
    return sh(C.BIN / "kubectl", "--kubeconfig", C.KUBECONFIG, *args, check=check, timeout=timeout, input=input)


def ctr(*args, check=True, timeout=600, input=None) -> subprocess.CompletedProcess:
    """The cluster's own containerd (namespace k8s.io), never the host's."""
    return sh("ctr", "-n", "k8s.io", "--address", C.CONTAINERD_SOCK, *args, check=check, timeout=timeout, input=input)


def _pidfile(name: str) -> pathlib.Path:
    return C.RUN / "pids" / f"{name}.pid"


def pid_of(name: str) -> int | None:
    """The PID of a daemon we spawned, if it still runs our binary (a recycled PID does not count)."""
    try:
        pid = int(_pidfile(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except FileNotFoundError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        _reap(pid)
        return None
    # A recycled PID would not be running our binary ("" while it is still exec'ing).
    return pid if os.path.basename(cmd) in (name, "") or cmd.endswith("/python3") else None


def spawn(name: str, argv: list, env: dict | None = None) -> int:
    """Start a daemon in a session of its own, its output in LOGS/NAME.log, its PID in a PID file."""
    C.LOGS.mkdir(parents=True, exist_ok=True)
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    log = open(C.LOGS / f"{name}.log", "ab")
    proc = subprocess.Popen(
        [str(a) for a in argv],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log.close()
    _pidfile(name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; forget the PID file."""
    pid = pid_of(name)
    if pid is None:
        _pidfile(name).unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    _pidfile(name).unlink(missing_ok=True)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_for(component: str, check, timeout: float, what: str, *, watch_pid: bool = True) -> None:
    """Poll ``check`` until true; fail naming ``component`` (and at once when its process exited)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if watch_pid and pid_of(component) is None:
            raise ClusterError(component, "the process exited")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - a probe of a starting server
            last = exc
        time.sleep(0.2)
    raise ClusterError(component, f"not {what} after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


def kill_matching(match) -> int:
    """SIGKILL every process whose command line ``match``es; returns how many."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if match(cmd):
            try:
                os.kill(int(pid), signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
    return n
