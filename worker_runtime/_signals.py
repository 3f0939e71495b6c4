"""Signals as data, stop requests and their reasons, and the runtime's log lines: a part of ``Daemon``.

A handler runs in the main thread between two bytecodes of whatever it interrupted, so it does only
signal-safe things: set the flag, write a byte to the wake pipe, complete futures with
``call_soon_threadsafe``, write the state file; its log lines wait in a list and are written at the next
heartbeat, sleep or stop (writing to the stream the interrupted code was writing raises "reentrant call").
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from types import FrameType
from typing import TYPE_CHECKING, Any

from ._config import DaemonError

if TYPE_CHECKING:
    from ._core import DaemonCore as _Base
else:
    _Base = object

log = logging.getLogger("worker_runtime")


class SignalsMixin(_Base):
    """``on_signal()``, ``request_stop()`` and the handlers' install and restore; mixed into ``Daemon``."""

    # -- signals -------------------------------------------------------------
    def _install_signals(self) -> None:
        for signum, action in self.signal_map.items():
            handler: Any
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

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        action = self.signal_map.get(signum)
        if callable(action):
            action(signum)
            return
        self.on_signal(signum)

    def on_signal(self, signum: int) -> None:
        """Subclass hook: what a "stop" signal does. Default: set the kill flag (asked twice: exit now)."""
        name = signal.Signals(signum).name
        if self.stop_signal is not None:
            if signum in (signal.SIGINT, signal.SIGTERM):
                # Asked twice: the operator (or a human at a terminal) means it.
                self._exit_code = 128 + signum
                self._pending_logs.append((logging.WARNING, f"{self._me()}: {name} again while stopping; exiting now"))
                with contextlib.suppress(OSError):
                    self._cleanup_files()
                raise SystemExit(self._exit_code)
            return
        if self._stop_reason is not None:  # already stopping for another reason (recycling, a lost slot)
            self.stop_signal = signum
            return
        self._ask_stop(name, signum)

    def request_stop(self, signum: int | None = signal.SIGTERM, *, reason: str | None = None) -> None:
        """Ask the loop to end, as if ``signum`` arrived (or for ``reason``, with ``signum=None``); once only."""
        if self.stop_signal is None and self._stop_reason is None:
            if reason is not None:
                signum = None
            self._ask_stop(reason or (signal.Signals(signum).name if signum else "request_stop()"), signum)
            self._flush_logs()  # not in a signal handler: safe to write now

    def _ask_stop(self, reason: str, signum: int | None) -> None:
        self.stop_signal = signum
        self._stop_reason = reason
        self._pending_logs.append((logging.INFO, f"{self._me()}: stop requested ({reason}); finishing"))
        self._poke()
        self._notify.send(STOPPING=1, STATUS=f"stopping: {reason}")
        if self._fd is None:
            return  # asked before a slot was held: start() and heartbeat() will see it
        with contextlib.suppress(OSError, DaemonError):
            self._sync_ready()  # no longer running: the ready file goes
        with contextlib.suppress(OSError, DaemonError):
            self._write_state("stopping")

    def _me(self) -> str:
        return f"{self.name} slot {self.slot} (pid {os.getpid()})"

    def _flush_logs(self) -> None:
        while self._pending_logs:
            level, line = self._pending_logs.pop(0)
            log.log(level, "%s", line)


def _default_logging() -> None:
    """A worker that configured no logging still says why it stops: our lines go to stderr at INFO.
    Configure logging (any handler on the root logger or on "worker_runtime") and this steps aside."""
    if log.handlers or logging.getLogger().handlers or getattr(_default_logging, "done", False):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("worker_runtime: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    _default_logging.done = True  # type: ignore[attr-defined]
