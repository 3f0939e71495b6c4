"""Read-only view of a worker's run directory: probes and status.

Imports only os, time and fcntl so that ``worker-runtime probe`` starts fast.
The lock is the truth about whether a slot is held: a probe asks for a shared
``flock`` without blocking; if it gets one, nobody holds the slot.
"""

import fcntl
import os
import time

from . import _files

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the probe path
if TYPE_CHECKING:
    from typing import Any

KINDS = ("liveness", "readiness", "startup")


def holder(pid_path: str) -> "tuple[bool, int | None]":
    """(held, pid) for one PID file."""
    try:
        fd = os.open(pid_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False, None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        raw = os.read(fd, 32).strip()
    finally:
        os.close(fd)
    return held, int(raw) if raw.isdigit() else None


def _read(path: str) -> "str | None":
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip()
    except FileNotFoundError:
        return None


def slot_status(run_dir: str, name: str, slot: int, now: float) -> "dict[str, Any]":
    held, pid = holder(_files.slot_path(run_dir, name, slot, "pid"))
    hb_path = _files.slot_path(run_dir, name, slot, "heartbeat")
    try:
        # mtime, not content: `worker-runtime run` children beat with `touch`.
        age = now - os.stat(hb_path).st_mtime
    except FileNotFoundError:
        age = None
    return {
        "slot": slot,
        "pid": pid,
        "held": held,
        # Signed: a negative age is a beat in the future (the clock was stepped back).
        "heartbeat_age": None if age is None else round(age, 3),
        "ready": os.path.exists(_files.slot_path(run_dir, name, slot, "ready")),
        "state": _read(_files.slot_path(run_dir, name, slot, "state")) if held else None,
    }


def status(run_dir: str, name: str, now: "float | None" = None) -> "list[dict[str, Any]]":
    now = time.time() if now is None else now
    return [slot_status(run_dir, name, s, now) for s in _files.list_slots(run_dir, name)]


def check(kind: str, run_dir: str, name: str, timeout: float, now: "float | None" = None) -> "tuple[bool, str]":
    """(ok, reason) for one probe kind. The reason is one line a human can act on."""
    if kind not in KINDS:
        raise ValueError(f"probe kind must be one of {', '.join(KINDS)}, got {kind!r}")
    slots = [s for s in status(run_dir, name, now) if s["held"]]
    if not slots:
        return False, f"no live holder of {name!r} in {run_dir} (worker not started, or exited)"
    for s in slots:
        age = s["heartbeat_age"]
        who = f"{name} slot {s['slot']} (pid {s['pid']})"
        if age is None:
            return False, f"{who}: no heartbeat file yet"
        # startup checks the age too: a restarted container finds the files
        # its predecessor left behind, and a stale beat is not a start.
        problem = _files.beat_age_problem(age, timeout)
        if problem:
            return False, f"{who}: {problem}"
    if kind == "readiness":
        for s in slots:
            if s["state"] == "stopping":
                return False, f"{name} slot {s['slot']} (pid {s['pid']}): stopping"
            if not s["ready"]:
                return (
                    False,
                    f"{name} slot {s['slot']} (pid {s['pid']}): not ready (set_ready(False): a dependency is down?)",
                )
    return True, "ok"


USAGE = "usage: worker-runtime probe liveness|readiness|startup [--name N] [--run-dir D] [--timeout S]"


def main(argv: "list[str]") -> int:
    """``worker-runtime probe``: exit 0 healthy, 1 unhealthy (one line why), 2 usage error."""
    import sys  # noqa: PLC0415 - sys is built in; kept next to its only use

    env = os.environ
    opts = {
        "--name": env.get(_files.ENV_NAME, ""),
        "--run-dir": None,
        "--timeout": env.get(_files.ENV_TIMEOUT) or str(_files.DEFAULT_TIMEOUT),
    }
    kind = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        key, eq, val = arg.partition("=")
        if key in opts:
            if not eq:
                if not args:
                    print(f"worker-runtime probe: {key} needs a value; {USAGE}", file=sys.stderr)
                    return 2
                val = args.pop(0)
            opts[key] = val
        elif kind is None and not arg.startswith("-"):
            kind = arg
        else:
            print(f"worker-runtime probe: unexpected argument {arg!r}; {USAGE}", file=sys.stderr)
            return 2
    if kind not in KINDS:
        print(
            f"worker-runtime probe: probe kind must be one of {', '.join(KINDS)}, got {kind!r}; {USAGE}",
            file=sys.stderr,
        )
        return 2
    if not opts["--name"]:
        print(f"worker-runtime probe: no worker name: pass --name or set {_files.ENV_NAME}", file=sys.stderr)
        return 2
    if not _files.valid_name(opts["--name"]):
        print(f"worker-runtime probe: --name must be {_files.NAME_RULE}, got {opts['--name']!r}", file=sys.stderr)
        return 2
    try:
        timeout = _files.positive_seconds(float(opts["--timeout"] or ""), "--timeout")
    except ValueError:
        print(
            f"worker-runtime probe: --timeout must be a finite number of seconds > 0, got {opts['--timeout']!r}",
            file=sys.stderr,
        )
        return 2
    run_dir = opts["--run-dir"] or _files.default_run_dir()
    ok, reason = check(kind, run_dir, opts["--name"], timeout)
    if not ok:
        print(reason)
        return 1
    return 0
