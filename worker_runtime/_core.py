"""What the parts of ``Daemon`` (``_items``, ``_waits``, ``_signals``) may use of each other: its state and the
methods they share, declared once for the type checker. Imported only while type checking."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import _notify


class DaemonCore:
    name: str
    timeout: float
    capacity: int
    slot: int | None
    beat_interval: float
    max_items: int | None
    max_rss_mib: float | None
    signal_map: Mapping[int, Any]
    stop_signal: int | None
    _stop_reason: str | None
    _exit_code: int | None
    _fd: int | None
    _lost: bool
    _ready: bool
    _started: bool
    _lock: threading.RLock
    _inflight: int
    _items_done: int
    _state: str
    _state_since: float
    _busy_total: float
    _status: str
    _drain_until: float | None
    _retiring: bool
    _version: int
    _http: Any
    _backlog: int | None
    _next_beat: float
    _notify: _notify.Notifier
    _old_handlers: dict[int, Any]
    _pending_logs: list[tuple[int, str]]
    _wake: tuple[int, int] | None
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
    _clock: Callable[[], float]
    _monotonic: Callable[[], float]
    _rss: Callable[[], int]

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def heartbeat(self) -> bool:
        raise NotImplementedError

    def _heartbeat(self, park: bool) -> bool:
        raise NotImplementedError

    def _beat(self, now: float) -> bool:
        raise NotImplementedError

    def undrain(self, why: str = "asked") -> None:
        raise NotImplementedError

    def _drained_now(self) -> bool:
        raise NotImplementedError

    def _changed(self) -> None:
        raise NotImplementedError

    @property
    def draining(self) -> bool:
        raise NotImplementedError

    def request_stop(self, signum: int | None = 15, *, reason: str | None = None) -> None:
        raise NotImplementedError

    def on_signal(self, signum: int) -> None:
        raise NotImplementedError

    def _path(self, kind: str, slot: int | None = None) -> str:
        raise NotImplementedError

    def _write(self, kind: str, text: str) -> None:
        raise NotImplementedError

    def _cleanup_files(self) -> None:
        raise NotImplementedError

    def _not_started(self, what: str) -> Exception:
        raise NotImplementedError

    def _me(self) -> str:
        raise NotImplementedError

    def _poke(self) -> None:
        raise NotImplementedError

    def _flush_logs(self) -> None:
        raise NotImplementedError

    def _ask_stop(self, reason: str, signum: int | None) -> None:
        raise NotImplementedError

    def _write_state(self, state: str) -> None:
        raise NotImplementedError

    def _sync_ready(self) -> None:
        raise NotImplementedError

    def _status_line(self) -> str:
        raise NotImplementedError

    def _check_recycle(self) -> None:
        raise NotImplementedError

    def _wait_wake(self, seconds: float) -> None:
        raise NotImplementedError

    def _handle_signal(self, signum: int, frame: Any) -> None:
        raise NotImplementedError

    async def stopped(self) -> None:
        raise NotImplementedError

    async def asleep(self, seconds: float) -> bool:
        raise NotImplementedError
