"""File layout shared by the daemon, the probes and the CLI.

Everything a worker exposes lives in one run directory, one set of files per
PID slot: ``NAME.SLOT.pid`` (locked with ``flock`` while held), and the probe
files ``NAME.SLOT.heartbeat``, ``NAME.SLOT.ready`` and ``NAME.SLOT.state``.
Kept tiny and import-light: the probe path imports this module.
"""

import errno
import itertools
import os
import stat  # os imports it anyway: free

from .contract import (  # re-exported: the CLI and the probe read these names from here
    DEFAULT_RUN_DIR as DEFAULT_RUN_DIR,
)
from .contract import (
    DEFAULT_TERMINATION_LOG as DEFAULT_TERMINATION_LOG,
)
from .contract import (
    ENV_HEARTBEAT_FILE as ENV_HEARTBEAT_FILE,
)
from .contract import (
    ENV_MAX_PEERS as ENV_MAX_PEERS,
)
from .contract import (
    ENV_NAME as ENV_NAME,
)
from .contract import (
    ENV_PORT as ENV_PORT,
)
from .contract import (
    ENV_RUN_DIR as ENV_RUN_DIR,
)
from .contract import (
    ENV_TERMINATION_LOG as ENV_TERMINATION_LOG,
)
from .contract import (
    ENV_TIMEOUT as ENV_TIMEOUT,
)

_tmp_counter = itertools.count()


# The PHP original's default: a worker silent for 30 s is dead.
DEFAULT_TIMEOUT = 30.0
# One worker per name unless asked: the classic single-instance daemon.
DEFAULT_MAX_PEERS = 1

SUFFIXES = ("pid", "heartbeat", "ready", "state")

# Worker names become file names and sh glob prefixes: no slashes, no
# newlines, no glob characters. Checked without `re` to keep the probe's imports minimal.
_NAME_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = _NAME_FIRST | frozenset("_.-")
NAME_RULE = "1-100 characters of letters, digits, '_', '.', '-' starting with a letter or digit"


def valid_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= 100
        and name[0] in _NAME_FIRST
        and all(c in _NAME_CHARS for c in name)
    )


def positive_seconds(value: object, what: str) -> float:
    """A finite number > 0, else ValueError naming ``what``: nan passes every comparison, inf never goes stale."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")) or value <= 0:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def beat_age_problem(age: float, timeout: float) -> "str | None":
    """None when a beat ``age`` seconds old is fresh, else why not.

    A beat in the future by more than the limit is stale too: the clock was
    stepped back, and a healthy worker would have rewritten it within a second.
    """
    if age > timeout:
        return f"heartbeat is {age:.1f}s old, limit {timeout:g}s (worker hung?)"
    if age < -timeout:
        return f"heartbeat is {-age:.1f}s in the future, limit {timeout:g}s (clock stepped back; worker hung?)"
    return None


def proc_start(pid: "int | str" = "self") -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or "" off Linux.

    A PID alone does not name a process: a restarted container's worker is PID 1
    again. PID and start time together do, and the sh probe can compare them
    with shell builtins only.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return ""
    fields = raw.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def slot_path(run_dir: str, name: str, slot: int, kind: str) -> str:
    return os.path.join(run_dir, f"{name}.{slot}.{kind}")


def fallback_run_dir() -> str:
    """A per-user folder for hosts where /run/daemonpool is not writable."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return os.path.join(xdg, "daemonpool")
    return os.path.join("/tmp", f"daemonpool-{os.getuid()}")


def is_fallback(path: str) -> bool:
    """The per-user fallback folder: it must be ours alone (see ensure_private_dir)."""
    return os.path.abspath(path) == os.path.abspath(fallback_run_dir())


class UnsafeDirError(PermissionError):
    """The per-user folder is not ours alone; strerror says why."""


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700, or accept it only when it is a real folder, ours, and not writable by others.

    /tmp is shared: another user can create /tmp/daemonpool-UID first and plant
    symlinks or PID files in it. Raises OSError(EACCES) with the reason; the
    caller turns it into a DaemonError naming the fix.
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDirError(13, "not a real folder (a symlink or file was planted there)", path)
    if st.st_uid != os.geteuid():
        raise UnsafeDirError(13, f"owned by uid {st.st_uid}, not by us (uid {os.geteuid()})", path)
    if st.st_mode & 0o022:
        raise UnsafeDirError(13, f"writable by others (mode {stat.S_IMODE(st.st_mode):o})", path)


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
    fd = open_new(tmp)
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


def open_new(path: str, flags: int = os.O_WRONLY) -> int:
    """Create ``path``; never open what is already there. A planted file or symlink fails with EEXIST."""
    return os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def list_slots(run_dir: str, name: str) -> "list[int]":
    """Slot numbers that have a PID file, sorted."""
    prefix = name + "."
    slots = []
    try:
        entries = os.listdir(run_dir)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.startswith(prefix) and entry.endswith(".pid"):
            middle = entry[len(prefix) : -4]
            # ASCII digits only: "mail" must not match "mail.bulk.0.pid", and int() refuses "²".
            if middle.isascii() and middle.isdigit():
                slots.append(int(middle))
    return sorted(slots)


_ERRNO_WORDS = {
    errno.EACCES: "permission denied (wrong owner or mode)",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENOTDIR: "a path component is not a folder",
    errno.EEXIST: "a file is already there (planted?)",
    errno.ELOOP: "a symlink is in the way (planted?)",
    errno.EMFILE: "too many open files in this process (its descriptor limit, ulimit -n, is used up)",
    errno.ENFILE: "too many open files on this machine",
}

_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


def fix_for(exc: OSError, run_dir: str) -> str:
    """What to do about a failed write in ``run_dir``: a descriptor shortage is not a disk problem."""
    if exc.errno in _OUT_OF_DESCRIPTORS:
        return "raise the open-files limit (ulimit -n) or find what holds descriptors open (connections, files)"
    return f"free space in (or remount) {run_dir}, or set {ENV_RUN_DIR} to a writable folder"


def why(exc: OSError) -> str:
    """An OSError in words a user acts on."""
    if isinstance(exc, UnsafeDirError):
        return exc.strerror or "unsafe"
    return _ERRNO_WORDS.get(exc.errno or 0, exc.strerror or str(exc))


def beat_timeout(path: str) -> "float | None":
    """The limit a worker wrote into its heartbeat ("TIME PID START TIMEOUT"), or None (an older runtime, a touch)."""
    try:
        with open(path, "rb") as f:
            fields = f.read(200).split()
        value = float(fields[3])
    except (OSError, IndexError, ValueError):
        return None
    return value if 0 < value < float("inf") else None


def termination_log() -> str:
    """The pod's termination message file: $DAEMONPOOL_TERMINATION_LOG, else Kubernetes' default path."""
    return os.environ.get(ENV_TERMINATION_LOG, DEFAULT_TERMINATION_LOG)


def write_message(path: str, text: str) -> bool:
    """Put ``text`` in ``path``, which ``kubectl describe pod`` shows as the last state's message when it is the
    pod's termination message file. Never created: in a pod the kubelet provides it; elsewhere nothing is written."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        os.write(fd, text.encode()[:4096])
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
