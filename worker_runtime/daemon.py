"""The Daemon class: classic Unix daemon semantics for one worker process."""

import contextlib
import os
import signal
import time

from . import _files, _http, _slots

__all__ = ["Daemon", "DaemonError"]


class DaemonError(Exception):
    """The runtime cannot do what was asked; the message names the path and the fix."""


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return value


class Daemon:
    """One worker under the classic daemon contract, ready for a kubelet or a crontab.

    ``start()`` does these steps, in this order:

    1. Create the run directory (``run_dir``) if missing and prove it writable
       by writing a file there; otherwise raise ``DaemonError`` naming the path
       and the fix (set ``DAEMONPOOL_RUN_DIR``).
    2. Install the signal handlers from ``signal_map`` (SIGHUP, SIGINT and
       SIGTERM set the kill flag by default), before any slot is held, so a
       signal that arrives while starting is not lost.
    3. Take the first free PID slot of ``max_peers``: write a complete PID
       file under a temporary name and ``flock`` it; if ``NAME.SLOT.pid`` does
       not exist, hard-link ours there (atomic create); if it does, ``flock``
       it without blocking, check the path still names the locked file, and
       rename ours over it. A reader never sees a half-written PID file. A
       slot whose holder died is free because the kernel dropped its lock:
       the lock, not the PID number, is the truth.
    4. If every slot is held by a live process: restore the signal handlers,
       return False.
    5. Write the first heartbeat, the state file (``idle``) and the ready
       file.
    6. When a port is set (``port``, else $DAEMONPOOL_PORT), answer over HTTP
       on a daemon thread: ``/livez``, ``/readyz``, ``/startupz`` (the probes'
       verdicts), ``/state`` and ``/metrics``. Return True.

    ``heartbeat()`` returns False once a stop signal arrived or once the PID
    file was removed or replaced; it writes the heartbeat file at most every
    ``min(1 s, timeout / 10)``, so calling it on every loop is cheap.

    A signal that arrives during ``start()`` is kept: ``start()`` then
    returns False (the slot is held until ``stop()``), as ``heartbeat()`` would.
    A ``fork()``ed child does not inherit the slot: its copy of the lock's
    descriptor is closed in the child, so only the parent holds the slot.

    On a shared ``/tmp`` (no ``XDG_RUNTIME_DIR``, e.g. cron) the per-user
    folder is created 0700 and refused when another user owns it or may write
    to it; every file is created with ``O_EXCL | O_NOFOLLOW``, never opened
    through a planted symlink.

    ``stop()`` removes the probe files and its PID file (a clean exit leaves
    nothing behind; a crash leaves the PID file, and the next start() takes
    the slot over), releases the lock and restores the signal handlers. It is
    safe to call twice.

    Time is injectable (``clock`` for wall time, ``monotonic`` for intervals)
    so tests run fast.
    """

    #: What each signal does. "stop" sets the kill flag (a second SIGINT or
    #: SIGTERM while stopping exits at once with 128+signal); "ignore";
    #: "default" (the OS default). Override in a subclass or per instance.
    signal_map = {
        signal.SIGHUP: "stop",
        signal.SIGINT: "stop",
        signal.SIGTERM: "stop",
    }

    def __init__(
        self,
        name: str,
        timeout: float = _files.DEFAULT_TIMEOUT,
        max_peers: int = _files.DEFAULT_MAX_PEERS,
        run_dir: "str | None" = None,
        *,
        signal_map: "dict | None" = None,
        clock=time.time,
        monotonic=time.monotonic,
        port: "int | None" = None,
    ) -> None:
        if not _files.valid_name(name):
            raise ValueError(f"name must be {_files.NAME_RULE}, got {name!r}")
        self.name = name
        self.timeout = _files.positive_seconds(timeout, "timeout")
        self.max_peers = _positive_int(max_peers, "max_peers")
        self.run_dir = run_dir if run_dir is not None else _files.default_run_dir()
        self.signal_map = dict(type(self).signal_map)
        if signal_map is not None:
            self.signal_map.update(signal_map)
        for signum, action in self.signal_map.items():
            if action not in ("stop", "ignore", "default") and not callable(action):
                raise ValueError(
                    f"signal_map[{signal.Signals(signum).name}] must be 'stop', 'ignore', 'default' "
                    f"or a callable, got {action!r}"
                )
        self._clock = clock
        self._monotonic = monotonic
        # Beat at least ten times per timeout, and at least once a second so
        # the file's age tells a human something.
        self.beat_interval = min(1.0, self.timeout / 10.0)

        self.slot: "int | None" = None
        self._fd: "int | None" = None
        self._ident: "tuple | None" = None
        self._who = ""
        self._next_beat = 0.0
        self._ready = True
        self._lost = False
        self.stop_signal: "int | None" = None
        self._old_handlers: dict = {}
        # The HTTP answers (/livez, /state, ...): on ``port``, else $DAEMONPOOL_PORT, else none.
        self.port = port
        self._http = None
        self._state, self._state_since, self._busy_total = "idle", monotonic(), 0.0

    # -- construction from the environment the operator sets ---------------
    @classmethod
    def from_env(cls, **overrides) -> "Daemon":
        """Build from DAEMONPOOL_NAME, DAEMONPOOL_TIMEOUT_SECONDS, DAEMONPOOL_MAX_PEERS, DAEMONPOOL_RUN_DIR."""
        env = os.environ
        name = overrides.pop("name", None) or env.get(_files.ENV_NAME)
        if not name:
            raise DaemonError(f"{_files.ENV_NAME} is not set: set it to the worker's name (e.g. mailer)")
        kwargs = {"name": name}
        for key, var, conv in (
            ("timeout", _files.ENV_TIMEOUT, float),
            ("max_peers", _files.ENV_MAX_PEERS, int),
        ):
            raw = env.get(var)
            if raw:
                try:
                    value = conv(raw)
                    if conv is float:
                        _files.positive_seconds(value, var)
                    else:
                        _positive_int(value, var)
                    kwargs[key] = value
                except ValueError:
                    raise ValueError(
                        f"{var}={raw!r} is not a valid {'finite number > 0' if conv is float else 'whole number > 0'}"
                    ) from None
        kwargs.update(overrides)
        return cls(**kwargs)

    # -- paths ---------------------------------------------------------------
    def _path(self, kind: str, slot: "int | None" = None) -> str:
        return _files.slot_path(self.run_dir, self.name, self.slot if slot is None else slot, kind)

    @property
    def pid_file(self) -> "str | None":
        return None if self.slot is None else self._path("pid")

    @property
    def heartbeat_file(self) -> "str | None":
        return None if self.slot is None else self._path("heartbeat")

    @property
    def running(self) -> bool:
        """True while a slot is held and no stop was asked for."""
        return self._fd is not None and self.stop_signal is None and not self._lost

    # -- start ---------------------------------------------------------------
    def start(self) -> bool:
        """Take a PID slot; see the class docstring for the steps. Safe to call twice."""
        if self._fd is not None:
            return self.running
        self._prepare_run_dir()
        self._install_signals()
        for slot in range(self.max_peers):
            if self._take_slot(slot):
                break
        else:
            self._restore_signals()
            return False
        self._lost = False
        self._beat(self._monotonic())
        self._write_state("idle")
        self._sync_ready()
        self._serve()
        # False when a stop signal arrived while starting: the loop must not begin.
        return self.running

    def _prepare_run_dir(self) -> None:
        fix = f"set {_files.ENV_RUN_DIR} to a writable folder (in a pod: an emptyDir volume)"
        try:
            if _files.is_fallback(self.run_dir):
                fix = (
                    f"remove {self.run_dir} if it is not yours, or set XDG_RUNTIME_DIR or "
                    f"{_files.ENV_RUN_DIR} to a folder only you can write"
                )
                _files.ensure_private_dir(self.run_dir)
            else:
                os.makedirs(self.run_dir, mode=0o755, exist_ok=True)
            probe = os.path.join(self.run_dir, f".write-test.{os.getpid()}")
            _files.atomic_write(probe, b"ok\n")
            os.unlink(probe)
        except OSError as exc:
            raise DaemonError(f"run directory {self.run_dir!r} is not usable: {_files.why(exc)}; {fix}") from exc

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
    def heartbeat(self) -> bool:
        """True to go on; False once signalled, or once the PID file was removed or taken over."""
        if self.stop_signal is not None or self._fd is None or self._lost:
            return False
        now = self._monotonic()
        if now < self._next_beat:
            return True
        return self._beat(now)

    def _beat(self, now: float) -> bool:
        if not self._still_ours():
            self._lost = True
            with contextlib.suppress(OSError):
                os.unlink(self._path("ready"))
            return False
        # "TIME PID START": PID and start time name this process, so the sh
        # probe can tell our beat from one a previous container left behind
        # (the emptyDir survives a restart, and the new worker is PID 1 again).
        self._write("heartbeat", f"{self._clock():.3f} {self._who}\n")
        self._next_beat = now + self.beat_interval
        return self.stop_signal is None

    def _write(self, kind: str, text: str) -> None:
        path = self._path(kind)
        try:
            _files.atomic_write(path, text.encode())
        except OSError as exc:
            raise DaemonError(
                f"cannot write {path!r}: {_files.why(exc)}; free space in (or remount) {self.run_dir}, "
                f"or set {_files.ENV_RUN_DIR} to a writable folder"
            ) from exc

    def _serve(self) -> None:
        """Step 6: answer over HTTP when a port is set (the operator sets DAEMONPOOL_PORT)."""
        if self._http is None:
            self._http = _http.serve(self, DaemonError)

    def state_view(self) -> dict:
        """What ``GET /state`` answers: who this worker is and what it is doing."""
        return _http.state_view(self)

    def _detach_after_fork(self) -> None:
        """In a forked child: let go of the parent's slot without touching its files."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
            self._lost = True
        if self._http is not None:  # the parent's listening socket is the parent's
            with contextlib.suppress(OSError):
                self._http.server.socket.close()
            self._http = None

    def _still_ours(self) -> bool:
        try:
            st = os.stat(self._path("pid"))
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._ident

    def set_ready(self, ready: bool = True) -> None:
        """Readiness for a dependency outage: False fails the readiness probe, not liveness."""
        self._ready = bool(ready)
        if self._fd is not None:
            self._sync_ready()

    def _sync_ready(self) -> None:
        path = self._path("ready")
        if self._ready and self.running:
            if not os.path.exists(path):
                self._write("ready", f"{os.getpid()}\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @contextlib.contextmanager
    def busy(self):
        """Mark this worker busy for the block (idle workers go first when a pool scales in)."""
        self._write_state("busy")
        try:
            yield self
        finally:
            self._write_state("idle")

    def _write_state(self, state: str) -> None:
        if self._fd is None or self._lost:
            return
        if self.stop_signal is not None:
            state = "stopping"
        if state != self._state:
            now = self._monotonic()
            if self._state == "busy":
                self._busy_total += now - self._state_since
            self._state, self._state_since = state, now
        self._write("state", f"{state}\n")

    # -- signals -------------------------------------------------------------
    def _install_signals(self) -> None:
        for signum, action in self.signal_map.items():
            if action == "ignore":
                handler = signal.SIG_IGN
            elif action == "default":
                handler = signal.SIG_DFL
            else:
                handler = self._handle_signal
            try:
                self._old_handlers.setdefault(signum, signal.getsignal(signum))
                signal.signal(signum, handler)
            except ValueError as exc:
                raise DaemonError(
                    "start() must run in the main thread to install signal handlers; "
                    "call it there or pass signal_map={} and handle signals yourself"
                ) from exc

    def _restore_signals(self) -> None:
        for signum, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old_handlers = {}

    def _handle_signal(self, signum, frame) -> None:
        action = self.signal_map.get(signum)
        if callable(action):
            action(signum)
            return
        self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        """Subclass hook: what a "stop" signal does. Default: set the kill flag."""
        if self.stop_signal is not None:
            if signum in (signal.SIGINT, signal.SIGTERM):
                # Asked twice: the operator (or a human at a terminal) means it.
                self._cleanup_files()
                os._exit(128 + signum)
            return
        self.stop_signal = signum
        if self._fd is None:
            return  # signalled before a slot was held: heartbeat() will see the flag
        with contextlib.suppress(OSError):
            self._sync_ready()  # no longer running: the ready file goes
        with contextlib.suppress(OSError):
            self._write_state("stopping")

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the loop to end, as if ``signum`` arrived."""
        if self.stop_signal is None:
            self.on_signal(signum)

    # -- stop ----------------------------------------------------------------
    def _cleanup_files(self) -> None:
        if self._fd is None:
            return
        if self._still_ours():
            for kind in ("ready", "state", "heartbeat", "pid"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._path(kind))

    def stop(self) -> None:
        """Remove the probe files and the PID file, release the slot, restore signals. Safe to call twice."""
        if self._http is not None:
            self._http.stop()
            self._http = None
        if self._fd is not None:
            try:
                self._cleanup_files()
            finally:
                os.close(self._fd)
                self._fd = None
                _slots.holders.discard(self)
        self._restore_signals()

    def __enter__(self) -> "Daemon":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Daemon(name={self.name!r}, slot={self.slot}, running={self.running}, run_dir={self.run_dir!r})"
