"""Draining and the backlog a worker sees: what the autoscaler asks of a worker and hears from it. A part of ``Daemon``.

A drain is the operator's way to remove an idle worker without ever stopping a busy one. The operator asks
``POST /drain`` (with the pool's drain token) only of a worker it saw idle; the worker accepts only while no
item is in flight (atomically, under the items' lock), then takes no new item (``heartbeat()`` parks the
classic loop; ``draining`` tells threads and tasks), and fails its readiness probe so the ReplicaSet, told to
scale in, deletes it before any ready worker. It stays alive until SIGTERM, so the kubelet does not restart it.

A drain ends by itself after the seconds it was asked for (a crashed operator never strands a worker), with
``undrain()`` (``DELETE /drain``), or when an item starts anyway (the worker is busy: the operator sees it and
keeps the worker).

A drain with ``finish=True`` (``POST /drain?seconds=S&finish=1``) is how a rollout retires an old worker: it
is accepted while items are in flight, the worker takes no new item, stays ready while it finishes the ones it
has (a not-ready busy pod is the first the ReplicaSet would remove), and fails readiness once none is left.
An item that starts anyway does not end it: that worker is going in any case.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._core import DaemonCore as _Base
else:
    _Base = object

log = logging.getLogger("worker_runtime")

# A drain longer than this is refused: the operator's handshake takes seconds, and a forgotten drain must end.
MAX_DRAIN_SECONDS = 600.0


class DrainMixin(_Base):
    """``drain()``, ``undrain()``, ``draining``, ``retiring``, ``report_backlog()``; mixed into ``Daemon``."""

    _retiring = False  # a drain with finish=True: kept by an item that starts anyway (set per instance)

    def drain(self, seconds: float, finish: bool = False) -> bool:
        """Take no new item for ``seconds`` and fail readiness, if no item is in flight now: True when drained
        (again: the time is extended), False when busy (nothing changes). With ``finish``, accepted while busy
        too: the items in flight end first, then readiness fails (a rollout's old worker). Safe from any thread."""
        if not 0 < seconds <= MAX_DRAIN_SECONDS:  # nan fails both comparisons
            raise ValueError(f"drain seconds must be in (0, {MAX_DRAIN_SECONDS:g}], got {seconds!r}")
        with self._lock:
            if (self._inflight > 0 and not finish) or not self.running:
                return False
            was, retired = self._drain_until is not None, self._retiring
            self._drain_until = self._monotonic() + seconds
            self._retiring = retired or finish
        if not was or self._retiring != retired:
            how = "finishing its items in flight, then not ready" if self._retiring else "not ready"
            log.info(
                "%s slot %s: draining for %gs (asked by the operator): no new items, %s",
                self.name,
                self.slot,
                seconds,
                how,
            )
            self._sync_ready()
        return True

    @property
    def retiring(self) -> bool:
        """True while drained with ``finish``: going in any case, once its items in flight have ended."""
        return self._retiring and self.draining

    def drain_left(self) -> float | None:
        """Seconds until the drain runs out by itself, or None when not drained."""
        until = self._drain_until
        return None if until is None else max(0.0, until - self._monotonic())

    def _drained_now(self) -> bool:
        """Whether readiness fails for a drain: a drain, but not one finishing items still in flight."""
        return self._drain_until is not None and not (self._retiring and self._inflight > 0)

    def undrain(self, why: str = "asked") -> None:
        """Take items again and pass readiness (if ready otherwise). Safe to call when not draining."""
        with self._lock:
            if self._drain_until is None:
                return
            self._drain_until, self._retiring = None, False
        log.info("%s slot %s: drain ended (%s); taking items again", self.name, self.slot, why)
        if self._fd is not None:
            self._sync_ready()

    @property
    def draining(self) -> bool:
        """True while drained: take no new item (``heartbeat()`` waits while this is True)."""
        until = self._drain_until
        if until is None:
            return False
        if self._monotonic() >= until:
            self.undrain("its time ran out")
            return False
        return True

    def _park(self) -> None:
        """While drained, the classic loop waits here (beating), so it takes no item; a stop ends the wait at once
        (the stop pipe), an undrain within a tenth of a second."""
        while self.running and self.draining:
            now = self._monotonic()
            if now >= self._next_beat:
                self._beat(now)
            self._wait_wake(0.1)

    def report_backlog(self, n: int | None) -> None:
        """The items waiting for this pool as the worker sees them (its queue's length), for the autoscaler's
        ``backlog.source: workers``; None: unknown. Shown in ``/state`` as ``backlog``."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"report_backlog() takes a whole number >= 0 or None, got {n!r}")
        if n != self._backlog:
            self._backlog = n
            self._changed()
