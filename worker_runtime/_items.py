"""Items in flight, recycling and the worker's own view of itself: a part of ``Daemon``.

Threads and asyncio tasks enter and leave ``busy()`` at will; one lock keeps the count, the state file
and the busy seconds together. The worker is idle only when no item is in flight.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from ._core import DaemonCore as _Base
else:
    _Base = object

log = logging.getLogger("worker_runtime")


def _rss_bytes() -> int:
    """This process's resident memory (Linux /proc/self/statm; 0 elsewhere: recycling by memory is off)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_D = TypeVar("_D", bound="ItemsMixin")


class _Item(Generic[_D]):
    """One item in flight: ``with d.busy():`` or ``async with d.busy():``."""

    __slots__ = ("_d",)

    def __init__(self, d: _D) -> None:
        self._d = d

    def __enter__(self) -> _D:
        self._d._item_begins()
        return self._d

    def __exit__(self, *exc: object) -> None:
        self._d._item_ends()

    async def __aenter__(self) -> _D:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


class ItemsMixin(_Base):
    """``busy()``, the state file, recycling and ``state_view()``; mixed into ``Daemon``."""

    _version = 0  # bumped on every change /state shows (but the clocks): what a waiting /state?wait= waits for

    @property
    def state_version(self) -> int:
        """A number that changes whenever ``/state`` shows something new (but the clocks)."""
        return self._version

    def _changed(self) -> None:
        """Something the operator looks at changed: wake the ``/state?wait=`` asks waiting for it."""
        self._version += 1
        http = self._http
        if http is not None:
            http.poke()

    def set_ready(self, ready: bool = True) -> None:
        """Readiness for a dependency outage: False fails the readiness probe, not liveness.
        Before start(), it sets the readiness start() begins with."""
        changed = bool(ready) != self._ready
        self._ready = bool(ready)
        if self._fd is not None:
            self._sync_ready()
            if changed:
                log.info("%s slot %s: %s", self.name, self.slot, "ready" if ready else "not ready (set_ready(False))")
                self._notify.send(READY=1, STATUS=self._status_line()) if ready else self._notify.send(
                    STATUS=self._status_line()
                )

    def set_status(self, text: str) -> None:
        """One line for humans (``/state``'s ``status``, systemd's ``STATUS=``): what the worker is doing."""
        self._status = " ".join(str(text).split())[:200]
        self._notify.send(STATUS=self._status_line())

    def _status_line(self) -> str:
        if self._status:
            return self._status
        return f"{self._state}, {self._inflight}/{self.capacity} in flight" + ("" if self._ready else ", not ready")

    def _sync_ready(self) -> None:
        self._changed()  # readiness, a drain or its end
        path = self._path("ready")
        if self._ready and self.running and not self._drained_now():
            if not os.path.exists(path):
                self._write("ready", f"{os.getpid()}\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def busy(self: _D) -> _Item[_D]:
        """One item in flight for the block: ``with d.busy():`` or ``async with d.busy():``, from any thread or task.

        The worker is busy while any item is in flight and idle when none is (idle workers go first when a
        pool scales in). After the item, recycling is checked (``max_items``, ``max_rss_mib``)."""
        if not self._started:
            raise self._not_started("busy()")
        return _Item(self)

    def report_inflight(self, n: int | None) -> None:
        """Set the items in flight from outside (``worker-runtime run`` for its child); None: cannot tell, and
        the state is ``unknown`` (the operator's scale-in then treats it as neither idle nor busy). Not for
        workers that use ``busy()``."""
        with self._lock:
            self._inflight = max(0, n or 0)
            self._write_state("unknown" if n is None else ("busy" if n > 0 else "idle"))
            self._changed()
        if n and self._drain_until is not None and not self._retiring:  # the child took an item anyway: kept
            self.undrain("an item started")
        elif self._retiring:
            self._sync_ready()  # a retiring worker is not ready once nothing is in flight

    def _item_begins(self) -> None:
        with self._lock:
            self._inflight += 1
            if self._inflight == 1:
                self._write_state("busy")
            self._changed()
            drained, retiring = self._drain_until is not None, self._retiring
        if drained and not retiring:  # an item started anyway: the worker is busy, the operator must keep it
            self.undrain("an item started")
        elif retiring:
            self._sync_ready()  # ready again while busy: a not-ready busy pod is the first a ReplicaSet removes

    def _item_ends(self) -> None:
        with self._lock:
            self._inflight -= 1
            self._items_done += 1
            if self._inflight == 0:
                self._write_state("idle")
            self._changed()
            retiring = self._retiring
        if retiring:
            self._sync_ready()  # the last item of a retiring worker ended: not ready now, removed first
        self._check_recycle()

    def _check_recycle(self) -> None:
        if not self.running:
            return
        why = None
        if self.max_items is not None and self._items_done >= self.max_items:
            why = f"recycled after {self._items_done} items (max_items {self.max_items})"
        elif self.max_rss_mib is not None:
            rss = self._rss() / 2**20
            if rss > self.max_rss_mib:
                why = f"recycled at {rss:.0f} MiB resident (max_rss_mib {self.max_rss_mib:g})"
        if why:
            self.request_stop(reason=why)

    def _write_state(self, state: str) -> None:
        if self._fd is None or self._lost:
            return
        with self._lock:
            if not self.running:
                state = "stopping"
            if state != self._state:
                now = self._monotonic()
                if self._state == "busy":
                    self._busy_total += now - self._state_since
                self._state, self._state_since = state, now
                self._changed()
            self._write("state", f"{state}\n")

    def state_view(self) -> dict[str, Any]:
        """What ``GET /state`` answers: who this worker is and what it is doing."""
        draining = self.draining  # first: it ends a drain whose time ran out
        now = self._monotonic()
        hb = None
        if self.slot is not None:
            try:
                hb = round(self._clock() - os.stat(self._path("heartbeat")).st_mtime, 3)
            except OSError:
                hb = None
        with self._lock:
            state = "stopping" if not self.running and self._fd is not None else self._state
            busy = self._busy_total + (now - self._state_since if self._state == "busy" else 0.0)
            view: dict[str, Any] = {
                "pool": self.name,
                "slot": self.slot,
                "pid": os.getpid(),
                "state": state,
                "seconds_in_state": round(now - self._state_since, 3),
                "heartbeat_age": hb,
                "ready": bool(self._ready and self.running and not (draining and self._drained_now())),
                "busy_seconds_total": round(busy, 3),
                "inflight": self._inflight,
                "capacity": self.capacity,
                "items_done": self._items_done,
                "stop_reason": self._stop_reason,
                "draining": draining,
                "retiring": draining and self._retiring,
                "backlog": self._backlog,
                "version": self._version,
            }
        if self._status:
            view["status"] = self._status
        return view
