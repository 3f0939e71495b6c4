"""The Daemon class: classic Unix daemon semantics for one worker process."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from . import _config, _files, _http, _notify, _slots
from ._config import DaemonError, SignalAction, _positive_int
from ._drain import DrainMixin
from ._items import ItemsMixin, _rss_bytes
from ._signals import SignalsMixin, _default_logging, log
from ._waits import WaitsMixin

__all__ = ["Daemon", "DaemonError", "SignalAction"]


class Daemon(ItemsMixin, WaitsMixin, DrainMixin, SignalsMixin):
    """One worker under the classic daemon contract, ready for a kubelet, systemd or a crontab.

    ``start()`` does these steps, in this order:

    1. Create the run directory (``run_dir``) if missing and prove it writable by writing a file there; otherwise
       raise ``DaemonError`` naming the path and the fix (set ``DAEMONPOOL_RUN_DIR``).
    2. Install the signal handlers from ``signal_map`` (SIGHUP, SIGINT and SIGTERM set the kill flag by default),
       before any slot is held, so a signal that arrives while starting is not lost.
    3. Take the first free PID slot of ``max_peers``: write a complete PID file under a temporary name and
       ``flock`` it; if ``NAME.SLOT.pid`` does not exist, hard-link ours there (atomic create); if it does,
       ``flock`` it without blocking, check the path still names the locked file, and rename ours over it. A
       reader never sees a half-written PID file. A slot whose holder died is free because the kernel dropped its
       lock: the lock, not the PID number, is the truth.
    4. If every slot is held by a live process: restore the signal handlers, return False.
    5. Write the first heartbeat, the state file (``idle``) and the ready file.
    6. When a port is set (``port``, else $DAEMONPOOL_PORT), answer over HTTP on a daemon thread: ``/livez``,
       ``/readyz``, ``/startupz`` (the probes' verdicts), ``/state`` and ``/metrics``.
    7. When ``$NOTIFY_SOCKET`` is set (systemd ``Type=notify``), send ``READY=1``; every beat then sends
       ``WATCHDOG=1`` (``WatchdogSec=`` works with no cron) and a stop request ``STOPPING=1``. Return True.

    Steps 5-7 are all or nothing: if one fails (a taken port), the slot and its files are given back and the
    signal handlers restored before the error is raised, so ``start()`` can be called again.

    ``heartbeat()`` returns False once a stop was asked for (a signal, ``request_stop()``, recycling) or once the
    PID file was removed or replaced; it writes the heartbeat file at most every ``min(1 s, timeout / 10)``, so
    calling it on every loop is cheap.

    Items in flight are counted: ``with d.busy():`` (or ``async with``) from any number of threads or tasks; the
    worker is idle only when none is in flight. ``capacity`` is how many it runs at once, for the autoscaler.

    A blocking wait longer than ``timeout`` (``queue.get()`` with no timeout) makes an idle worker look hung: wait
    with ``d.sleep(s)``/``await d.asleep(s)`` (they beat), or beat from the event loop with
    ``asyncio.create_task(d.keep_beating())``.

    A signal that arrives during ``start()`` is kept: ``start()`` then returns False (the slot is held until
    ``stop()``), as ``heartbeat()`` would. A ``fork()``ed child does not inherit the slot: its copy of the lock's
    descriptor is closed in the child, so only the parent holds the slot.

    On a shared ``/tmp`` (no ``XDG_RUNTIME_DIR``, e.g. cron) the per-user folder is created 0700 and refused when
    another user owns it or may write to it; every file is created with ``O_EXCL | O_NOFOLLOW``, never opened
    through a planted symlink.

    ``stop()`` runs the ``on_stop`` callbacks (last registered first), removes the probe files and its PID file (a
    clean exit leaves nothing behind; a crash leaves the PID file, and the next start() takes the slot over),
    releases the lock and restores the signal handlers. It is safe to call twice.

    A second SIGINT or SIGTERM while stopping means "now": the probe files go and ``SystemExit(128 + signal)`` is
    raised in the main thread, so ``finally`` blocks, ``with`` blocks and the ``on_stop`` callbacks still run
    (unless the code in flight swallows ``BaseException``).

    Time is injectable (``clock`` for wall time, ``monotonic`` for intervals) so tests run fast.
    """

    #: What each signal does. "stop" sets the kill flag (a second SIGINT or
    #: SIGTERM while stopping exits at once with 128+signal); "ignore";
    #: "default" (the OS default); a callable replaces the stop (see SignalAction).
    #: Override in a subclass or per instance.
    signal_map: Mapping[int, SignalAction] = {
        signal.SIGHUP: "stop",
        signal.SIGINT: "stop",
        signal.SIGTERM: "stop",
    }

    def __init__(
        self,
        name: str,
        timeout: float = _files.DEFAULT_TIMEOUT,
        max_peers: int = _files.DEFAULT_MAX_PEERS,
        run_dir: str | None = None,
        *,
        signal_map: Mapping[int, SignalAction] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        port: int | None = None,
        host: str | None = None,
        capacity: int = 1,
        max_items: int | None = None,
        max_rss_mib: float | None = None,
        recycle_jitter: float = 0.1,
        rss: Callable[[], int] = _rss_bytes,
        notify_socket: str | None = None,
    ) -> None:
        if not _files.valid_name(name):
            raise ValueError(f"name must be {_files.NAME_RULE}, got {name!r}")
        self.name = name
        self.timeout = _files.positive_seconds(timeout, "timeout")
        self.max_peers = _positive_int(max_peers, "max_peers")
        self.capacity = _positive_int(capacity, "capacity")
        self.run_dir = run_dir if run_dir is not None else _files.default_run_dir()
        self.signal_map = _config.signal_actions(type(self).signal_map, signal_map)
        self.max_items, self.max_rss_mib = _config.recycle_limits(max_items, max_rss_mib, recycle_jitter)
        self._rss = rss
        self._clock = clock
        self._monotonic = monotonic
        # Beat at least ten times per timeout, and at least once a second so
        # the file's age tells a human something.
        self.beat_interval = min(1.0, self.timeout / 10.0)

        self.slot: int | None = None
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None
        self._who = ""
        self._next_beat = 0.0
        self._ready = True
        self._lost = False
        self._started = False  # start() was called: heartbeat() and busy() before it are mistakes
        self.stop_signal: int | None = None
        self._stop_reason: str | None = None
        self._old_handlers: dict[int, Any] = {}
        # The HTTP answers (/livez, /state, ...): on ``port``, else $DAEMONPOOL_PORT, else none.
        self.port = port
        self.host = host
        self._http: _http.StateServer | None = None
        # Items in flight, counted under one lock: threads enter and leave busy() at will. Reentrant
        # because a stop signal's handler runs in the main thread, maybe while it holds the lock.
        self._lock = threading.RLock()
        self._inflight = 0
        self._items_done = 0
        self._state, self._state_since, self._busy_total = "idle", monotonic(), 0.0
        self._status = ""
        self._drain_until: float | None = None  # drained by the operator until then (monotonic); see _drain.py
        self._backlog: int | None = None  # report_backlog()
        self._on_stop: list[Callable[[], object]] = []
        # Woken on a stop: sleep() waits on this pipe, so a signal ends a sleep at once.
        self._wake: tuple[int, int] | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        # Log lines from the signal handler wait here: writing to a stream the interrupted code is
        # writing to raises "reentrant call"; they are written at the next heartbeat, sleep or stop.
        self._pending_logs: list[tuple[int, str]] = []
        self._exit_code: int | None = None
        self._notify = _notify.Notifier(notify_socket if notify_socket is not None else os.environ.get("NOTIFY_SOCKET"))
        self._pid = os.getpid()

    # -- construction from the environment the operator sets ---------------
    @classmethod
    def from_env(cls, **overrides: Any) -> Daemon:
        """Build from DAEMONPOOL_NAME, _TIMEOUT_SECONDS, _MAX_PEERS, _RUN_DIR, _CAPACITY, _MAX_ITEMS, _MAX_RSS_MIB, _HOST."""
        return cls(**_config.kwargs_from_env(overrides))

    # -- paths ---------------------------------------------------------------
    def _path(self, kind: str, slot: int | None = None) -> str:
        which = self.slot if slot is None else slot
        assert which is not None, "a path needs a slot"
        return _files.slot_path(self.run_dir, self.name, which, kind)

    @property
    def pid_file(self) -> str | None:
        return None if self.slot is None else self._path("pid")

    @property
    def heartbeat_file(self) -> str | None:
        return None if self.slot is None else self._path("heartbeat")

    @property
    def running(self) -> bool:
        """True while a slot is held and no stop was asked for."""
        return self._fd is not None and self.stop_signal is None and self._stop_reason is None and not self._lost

    @property
    def stop_reason(self) -> str | None:
        """Why the loop ends, in words ("SIGTERM", "lost its PID file ...", "recycled after 1000 items"); None while running."""
        return self._stop_reason

    @property
    def inflight(self) -> int:
        """Items in flight now (``busy()`` blocks entered and not yet left)."""
        return self._inflight

    @property
    def items_done(self) -> int:
        """Items finished since start."""
        return self._items_done

    # -- start ---------------------------------------------------------------
    def start(self) -> bool:
        """Take a PID slot; see the class docstring for the steps. Safe to call twice."""
        self._started = True
        if self._fd is not None:
            return self.running
        _default_logging()
        _config.prepare_run_dir(self.run_dir)
        self._install_signals()
        for slot in range(self.max_peers):
            if self._take_slot(slot):
                break
        else:
            self._restore_signals()
            log.info("%s: all %d slot(s) in %s are held by live processes", self.name, self.max_peers, self.run_dir)
            return False
        try:
            self._lost = False
            if self._wake is None:
                self._wake = os.pipe()  # close-on-exec by default (PEP 446)
                os.set_blocking(self._wake[1], False)  # a signal handler must never block on a full pipe
                if not self.running:
                    self._poke()  # a stop that came while starting
            self._beat(self._monotonic())
            self._write_state("idle")
            self._sync_ready()
            self._serve()
        except BaseException:
            self._give_back()
            raise
        atexit.register(self._at_exit)
        port = f", answering on port {self._http.port}" if self._http else ""
        log.info("%s: started; timeout %gs, capacity %d%s", self._me(), self.timeout, self.capacity, port)
        self._notify.send(READY=int(self._ready), MAINPID=os.getpid(), STATUS=self._status_line())
        self._flush_logs()
        # False when a stop signal arrived while starting: the loop must not begin.
        return self.running

    def _give_back(self) -> None:
        """Undo start()'s steps 3-6 after one failed: no slot, no files, no port, the old handlers."""
        if self._http is not None:
            with contextlib.suppress(OSError):
                self._http.stop()
            self._http = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._cleanup_files()
            os.close(self._fd)
            self._fd = None
            _slots.holders.discard(self)
        self.slot = None
        self._restore_signals()

    def _take_slot(self, slot: int) -> bool:
        fd = _slots.take(self._path("pid", slot))
        if fd is None:
            return False
        nst = os.fstat(fd)
        self._fd, self.slot, self._ident = fd, slot, (nst.st_dev, nst.st_ino)
        _slots.holders.add(self)
        self._who = f"{os.getpid()} {_files.proc_start() or '-'}"
        return True

    # -- the loop ------------------------------------------------------------
    def _not_started(self, what: str) -> DaemonError:
        return DaemonError(f"{what} before start(): call start() first (and loop only while it returns True)")

    def heartbeat(self) -> bool:
        """True to go on; False once a stop was asked for, or once the PID file was removed or taken over.
        It still beats while stopping (finishing an item after SIGTERM is not hung); while drained, it waits."""
        return self._heartbeat(park=True)

    def _heartbeat(self, park: bool) -> bool:
        if not self._started:
            raise self._not_started("heartbeat()")
        if self._pending_logs:
            self._flush_logs()
        if self._fd is None or self._lost:
            return False
        if (now := self._monotonic()) >= self._next_beat:
            self._beat(now)
        if park and self._drain_until is not None and not self._inflight and self.draining:  # never inside an item
            self._park()
        return self.running

    def beat(self) -> bool:
        """Write a beat now, even while stopping: for a supervisor (``worker-runtime run``) reporting for a
        child that is still finishing its work. False once the slot is lost or released."""
        if self._fd is None or self._lost:
            return False
        self._beat(self._monotonic())
        return not self._lost

    def _beat(self, now: float) -> bool:
        if not self._still_ours():
            self._lost = True
            if self._stop_reason is None:
                self._stop_reason = f"lost its PID file {self._path('pid')} (removed or taken over by another process)"
                log.warning("%s slot %s (pid %d): %s; stopping", self.name, self.slot, os.getpid(), self._stop_reason)
            with contextlib.suppress(OSError):
                os.unlink(self._path("ready"))
            self._poke()
            return False
        # "TIME PID START TIMEOUT": PID and start time name this process, so the sh
        # probe can tell our beat from one a previous container left behind
        # (the emptyDir survives a restart, and the new worker is PID 1 again);
        # the timeout lets `worker-runtime status` judge the beat by the worker's own limit.
        self._write("heartbeat", f"{self._clock():.3f} {self._who} {self.timeout:g}\n")
        self._next_beat = now + self.beat_interval
        self._notify.send(WATCHDOG=1)
        return self.running

    def _write(self, kind: str, text: str) -> None:
        path = self._path(kind)
        for attempt in range(3):
            try:
                _files.atomic_write(path, text.encode())
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM) and attempt < 2:
                    time.sleep(0.01)  # a passing shortage (a flood of connections): try again before giving up
                    continue
                raise DaemonError(
                    f"cannot write {path!r}: {_files.why(exc)}; {_files.fix_for(exc, self.run_dir)}"
                ) from exc

    def _serve(self) -> None:
        """Step 6: answer over HTTP when a port is set (the operator sets DAEMONPOOL_PORT)."""
        if self._http is not None:
            return
        try:
            self._http = _http.serve(self)
        except ValueError as exc:
            raise DaemonError(f"{exc}; set it to a free port, or unset it to answer through files only") from None
        except OSError as exc:
            raise DaemonError(
                f"cannot answer on port {exc.filename}: {exc.strerror}; pick a free port "
                f"({_files.ENV_PORT}, or spec.port in the pool)"
            ) from None

    def _detach_after_fork(self) -> None:
        """In a forked child: let go of the parent's slot without touching its files."""
        self._lock = threading.RLock()  # another thread may have held it at the fork: it never lets go here
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._lost = True
        if self._http is not None:  # the parent's listening socket and connections are the parent's
            self._http.close_in_child()
            self._http = None
        self._waiters = []
        self._notify = _notify.Notifier(None)

    def _still_ours(self) -> bool:
        try:
            st = os.stat(self._path("pid"))
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    def on_stop(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Run ``fn()`` when the daemon stops cleanly (``stop()``, a second signal included), last registered
        first; an error in one is logged and the others still run. Usable as a decorator."""
        self._on_stop.append(fn)
        return fn

    # -- stop ----------------------------------------------------------------
    def _cleanup_files(self) -> None:
        if self._fd is None:
            return
        if self._still_ours():
            for kind in ("ready", "state", "heartbeat", "pid"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(kind))

    def stop(self) -> None:
        """Run the on_stop callbacks, remove the probe files and the PID file, release the slot, restore
        signals. Safe to call twice."""
        if os.getpid() != self._pid and self._fd is None and self._http is None:
            return  # a forked child: the parent's callbacks are the parent's
        callbacks, self._on_stop = self._on_stop[::-1], []
        for fn in callbacks:
            try:
                fn()
            except Exception:  # noqa: BLE001 - one failing cleanup must not skip the others
                log.exception("%s: on_stop callback %r failed", self.name, fn)
        if self._fd is not None or self._http is not None:
            held = self.slot
            self._give_back()
            self._flush_logs()
            why, done = self._stop_reason or "stop()", self._items_done
            if why.startswith("recycled"):  # the kubelet restarts us: say it was on purpose, where kubectl shows it
                _files.write_message(_files.termination_log(), why)
            log.info("%s slot %s (pid %d): stopped (%s); %d item(s) done", self.name, held, os.getpid(), why, done)
        self._restore_signals()
        if self._wake is not None:
            for fd in self._wake:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._wake = None
        self._notify.close()
        with contextlib.suppress(Exception):
            atexit.unregister(self._at_exit)

    def _at_exit(self) -> None:
        """After a second signal's SystemExit: the on_stop callbacks and the slot, if nobody stopped us."""
        if self._exit_code is not None and os.getpid() == self._pid:
            self.stop()
        self._flush_logs()

    def __enter__(self) -> Daemon:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Daemon(name={self.name!r}, slot={self.slot}, running={self.running}, run_dir={self.run_dir!r})"
