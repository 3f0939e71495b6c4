"""File layout shared by the daemon, the probes and the CLI.

Everything a worker exposes lives in one run directory, one set of files per
PID slot: ``NAME.SLOT.pid`` (locked with ``flock`` while held), and the probe
files ``NAME.SLOT.heartbeat``, ``NAME.SLOT.ready`` and ``NAME.SLOT.state``.
Kept tiny and import-light: the probe path imports this module.
"""

import itertools
import os

_tmp_counter = itertools.count()

ENV_NAME = "DAEMONPOOL_NAME"
ENV_TIMEOUT = "DAEMONPOOL_TIMEOUT_SECONDS"
ENV_MAX_PEERS = "DAEMONPOOL_MAX_PEERS"
ENV_RUN_DIR = "DAEMONPOOL_RUN_DIR"
ENV_HEARTBEAT_FILE = "DAEMONPOOL_HEARTBEAT_FILE"

# /run is tmpfs on hosts and the operator mounts an emptyDir here in pods.
DEFAULT_RUN_DIR = "/run/daemonpool"
# The PHP original's default: a worker silent for 30 s is dead.
DEFAULT_TIMEOUT = 30.0
# One worker per name unless asked: the classic single-instance daemon.
DEFAULT_MAX_PEERS = 1

SUFFIXES = ("pid", "heartbeat", "ready", "state")


def slot_path(run_dir: str, name: str, slot: int, kind: str) -> str:
    return os.path.join(run_dir, f"{name}.{slot}.{kind}")


def fallback_run_dir() -> str:
    """A per-user folder for hosts where /run/daemonpool is not writable."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "daemonpool")
    return os.path.join("/tmp", f"daemonpool-{os.getuid()}")


def default_run_dir() -> str:
    """DAEMONPOOL_RUN_DIR, else /run/daemonpool when usable, else a per-user folder."""
    env = os.environ.get(ENV_RUN_DIR)
    if env:
        return env
    if os.path.isdir(DEFAULT_RUN_DIR):
        if os.access(DEFAULT_RUN_DIR, os.W_OK | os.X_OK):
            return DEFAULT_RUN_DIR
    elif os.access(os.path.dirname(DEFAULT_RUN_DIR), os.W_OK | os.X_OK):
        return DEFAULT_RUN_DIR
    return fallback_run_dir()


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old or the new file, never a part.

    A temporary file in the same folder is written, then renamed over ``path``
    (rename is atomic within one file system). The temporary name is unique
    per write because a signal handler may write while the main code is
    between its own write and rename. No fsync: these files live on tmpfs and
    mean nothing after a reboot.
    """
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def temp_name(path: str) -> str:
    return f"{path}.tmp{os.getpid()}.{next(_tmp_counter)}"


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def list_slots(run_dir: str, name: str) -> list:
    """Slot numbers that have a PID file, sorted."""
    prefix = name + "."
    slots = []
    try:
        entries = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".pid"):
            middle = entry[len(prefix):-4]
            if middle.isdigit():
                slots.append(int(middle))
    return sorted(slots)
