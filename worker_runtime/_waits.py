"""Waiting without going deaf: interruptible sleeps, the loop as an iterator, and the asyncio face.

A stop (a signal, ``request_stop()``, recycling) writes a byte to a pipe and completes every awaiting
future through ``call_soon_threadsafe``: a sleeper or an ``await d.stopped()`` wakes at once, not at its
next timeout. Waits beat while they wait, so a long idle wait is not a hang. A part of ``Daemon``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._core import DaemonCore as _Base
else:
    _Base = object

_W = TypeVar("_W", bound="WaitsMixin")


class WaitsMixin(_Base):
    """``sleep()``, ``loop()``, ``stopped()``, ``asleep()``, ``keep_beating()``; mixed into ``Daemon``."""

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, beating meanwhile; False at once when a stop is asked for (a signal)."""
        deadline = self._monotonic() + max(0.0, seconds)
        while self.heartbeat():
            left = deadline - self._monotonic()
            if left <= 0:
                return True
            self._wait_wake(min(left, self.beat_interval))
        return False

    def _wait_wake(self, seconds: float) -> None:
        if self._wake is None:
            time.sleep(seconds)
            return
        with contextlib.suppress(InterruptedError):
            select.select([self._wake[0]], [], [], seconds)

    def loop(self: _W) -> Iterator[_W]:
        """``for _ in d.loop(): do_one_item()``: start() if needed, beat between turns, stop() at the end."""
        try:
            running = self.start()
            while running:
                yield self
                running = self.heartbeat()
        finally:
            self.stop()

    async def stopped(self) -> None:
        """Completes when a stop is asked for: ``asyncio.wait([stop, get], return_when=FIRST_COMPLETED)``."""
        if not self.running:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        self._waiters.append(entry)
        try:
            if not self.running:  # asked while we registered
                return
            await fut
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    async def asleep(self, seconds: float) -> bool:
        """``await d.asleep(s)``: sleep up to ``s`` without blocking the loop, beating; False once a stop is asked for."""
        deadline = self._monotonic() + max(0.0, seconds)
        stop = asyncio.ensure_future(self.stopped())
        try:
            while self._heartbeat(park=False):  # never block the event loop; tasks look at d.draining
                left = deadline - self._monotonic()
                if left <= 0:
                    return True
                await asyncio.wait([stop], timeout=min(left, self.beat_interval))
            return False
        finally:
            stop.cancel()

    async def keep_beating(self) -> None:
        """Beat from the event loop until ``stop()``, through a stop request too (items in flight finish, and
        a worker finishing them is not hung): ``task = asyncio.create_task(d.keep_beating())``, cancel it at the
        end. A loop blocked for longer than ``timeout`` stops the beats, and the worker counts as hung, as it is."""
        while self._fd is not None and not self._lost:
            self._heartbeat(park=False)
            await asyncio.sleep(self.beat_interval)

    def _poke(self) -> None:
        """Wake every sleeper and awaiter (signal-safe: a write to a pipe, call_soon_threadsafe)."""
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"!")
        for loop, fut in list(self._waiters):
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(_set_done, fut)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
