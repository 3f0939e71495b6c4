"""Helpers for the process tests: spawn real workers, run the CLI."""

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

from testkit.services import free_port  # noqa: F401  (one home; re-exported for the process tier)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "process")  # the process tier (its worker program lives there)
PROG = os.path.join(HERE, "worker_prog.py")
PROBE_SH = os.path.join(ROOT, "worker_runtime", "worker-runtime-probe")


def child_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DAEMONPOOL_RUN_DIR", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Worker:
    def __init__(self, name, run_dir, *args, **popen):
        self.proc = subprocess.Popen(
            [sys.executable, PROG, name, str(run_dir), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            **popen,
        )
        self.lines = []

    def expect(self, prefix, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    break
                continue
            self.lines.append(line.strip())
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(
            f"no {prefix!r} from worker; got {self.lines}; stderr={self.proc.stderr.read() if self.proc.poll() is not None else ''}"
        )

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def wr(*args, env=None, timeout=20):
    """Run the worker-runtime CLI as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "worker_runtime", *args],
        capture_output=True,
        text=True,
        env=env or child_env(),
        timeout=timeout,
    )


def probe_cmds():
    """Both probe implementations: the Python reference and the sh one the kubelet runs."""
    cmds = {"python": [sys.executable, "-m", "worker_runtime", "probe"]}
    if shutil.which("sh"):
        cmds["sh"] = ["sh", PROBE_SH]
    return cmds


def cli(command, run_dir, name="w"):
    """The worker-runtime arguments most tests start with: COMMAND --name NAME --run-dir DIR."""
    return [command, "--name", name, "--run-dir", str(run_dir)]


def cli_cmd(command, run_dir, name="w"):
    """The same, as a command line of its own (python -m worker_runtime ...)."""
    return [sys.executable, "-m", "worker_runtime", *cli(command, run_dir, name)]


def until(what, predicate, timeout=15.0):
    """Poll ``predicate`` until it returns something truthy (returned); fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


# HTTP to a worker's runtime on 127.0.0.1 (the process tier's HTTP tests and the run modes').
def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_answer(port, path="/livez", timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return get(port, path)
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing answers on {port}")
