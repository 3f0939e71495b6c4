"""Taking one PID slot: step 3 of ``Daemon.start()``. A reader never sees a half-written PID file."""

import contextlib
import fcntl
import os
import time
import weakref
from typing import TYPE_CHECKING

from . import _files

if TYPE_CHECKING:
    from .daemon import Daemon

# How often a slot whose lock is held for a moment only is asked again:
# probes take a shared lock for microseconds to ask "is anybody home?".
_LOCK_RETRIES = 3
_LOCK_RETRY_SLEEP = 0.005


def take(path: str) -> "int | None":
    """The locked descriptor of our PID file at ``path``, or None when a live process holds the slot.

    A complete PID file is written and locked under a temporary name first, then
    hard-linked to ``path`` (a free slot) or renamed over it (a slot whose holder died:
    the kernel dropped its lock, and we hold the old file's lock while we replace it).
    """
    tmp = _files.temp_name(path)
    new = _files.open_new(tmp, os.O_RDWR)
    try:
        fcntl.flock(new, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(new, f"{os.getpid()}\n".encode())
        taken = _publish(path, tmp)
    except BaseException:
        os.close(new)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    if not taken:
        os.close(new)
        return None
    return new


def _publish(path: str, tmp: str) -> bool:
    """Put our locked ``tmp`` at ``path`` if the slot is free; False if a live process holds it."""
    while True:
        try:
            os.link(tmp, path)  # a free, never-used slot: atomic create
            return True
        except FileExistsError:
            pass
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # removed meanwhile: try to create it again
        try:
            if not _lock(fd):
                return False
            st, cur = os.fstat(fd), None
            with contextlib.suppress(FileNotFoundError):
                cur = os.stat(path)
            if cur is None or (cur.st_dev, cur.st_ino) != (st.st_dev, st.st_ino):
                continue  # replaced while we waited for the lock: ask again
            # The old holder is gone and we hold its lock: replace its file.
            os.rename(tmp, path)
            return True
        finally:
            os.close(fd)


def _lock(fd: int) -> bool:
    for attempt in range(_LOCK_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < _LOCK_RETRIES:
                time.sleep(_LOCK_RETRY_SLEEP)
    return False


# Daemons holding a slot in this process. A forked child (multiprocessing,
# os.fork) inherits the lock's descriptor, and flock locks belong to the open
# file, so the child would keep the slot after the parent died. The child
# closes its copies first thing (the parent's lock is untouched).
holders: "weakref.WeakSet[Daemon]" = weakref.WeakSet()


def _forget_slots_in_child() -> None:
    for d in list(holders):
        d._detach_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_slots_in_child)
