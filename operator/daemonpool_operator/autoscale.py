"""How many workers a pool wants, and which ones may go: the autoscaler's decisions. Pure: no clock, no I/O.

The signal is what the workers say of themselves (``GET /state``: items in flight and capacity) and, where
the pool counts it, the backlog. One decision:

    busy    = sum over answering workers of inflight / capacity        (workers' worth of items in flight)
    wanted  = clamp(max(ceil(busy / targetBusy), ceil(backlog / itemsPerWorker)), minPeers, maxPeers)
    up      at once, to at most answering + max(scaleUpStep, answering) workers: new workers must answer
            before more are added (a pool woken from zero starts scaleUpStep, then doubles)
    down    only to the largest ``wanted`` of the last stableSeconds (demand stayed lower that long), and only
            by removing workers idle at least idleSeconds (``victims``); never a busy one

Workers that do not answer count neither busy nor idle: a starting worker does not make the pool grow
again, and nobody removes a worker it cannot see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model_autoscale import Autoscale

State = dict[str, Any] | None  # a worker's checked /state (workers.valid_state), None: no answer

# Floating point says 3.2 / 0.8 = 4.000000000000001; a hair off an integer is that integer.
EPSILON = 1e-9


@dataclass(frozen=True)
class Signal:
    """What the workers and the backlog source said on one pass."""

    busy: float  # workers' worth of items in flight (inflight / capacity, summed)
    answered: int  # workers whose /state answered
    backlog: int | None  # queued items, None when not counted (or the source failed)


@dataclass(frozen=True)
class Decision:
    target: int  # workers wanted now
    wanted: int  # this pass's clamp(max(...)), before the step and the window
    reason: str  # why, in words (status.autoscale.reason, the Autoscaled Event)
    kind: str  # up, down, bounds, window (down later), keep: the status is written when target or kind change


def busy_of(states: list[State]) -> Signal:
    """A Signal from checked ``/state`` answers (None: did not answer); the backlog is the caller's."""
    busy, answered = 0.0, 0
    for s in states:
        if not s:
            continue
        answered += 1
        if s.get("state") in ("busy", "idle"):
            busy += s.get("inflight", 1 if s["state"] == "busy" else 0) / max(1, s.get("capacity", 1))
    return Signal(busy=busy, answered=answered, backlog=None)


def workers_backlog(states: list[State]) -> int | None:
    """The backlog the workers report (``report_backlog``): the largest, as each sees the same queue."""
    seen = [s["backlog"] for s in states if s and isinstance(s.get("backlog"), int)]
    return max(seen) if seen else None


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - EPSILON))


def wanted(a: Autoscale, signal: Signal) -> tuple[int, str]:
    """clamp(max(ceil(busy / targetBusy), ceil(backlog / itemsPerWorker)), minPeers, maxPeers), and why."""
    by_busy = _ceil(signal.busy / a.target_busy)
    parts = [f"busy {signal.busy:.1f} (target {a.target_busy:g}) asks {by_busy}"]
    need = by_busy
    if a.backlog is not None and signal.backlog is not None:
        by_backlog = _ceil(signal.backlog / a.backlog.items_per_worker)
        parts.append(f"backlog {signal.backlog} ({a.backlog.items_per_worker}/worker) asks {by_backlog}")
        need = max(need, by_backlog)
    elif a.backlog is not None:
        parts.append("backlog unknown")
    clamped = min(a.max_peers, max(a.min_peers, need))
    if clamped != need:
        parts.append(f"bounds {a.min_peers}-{a.max_peers}")
    return clamped, "; ".join(parts)


def decide(a: Autoscale, current: int, signal: Signal, history: list[tuple[float, int]], now: float) -> Decision:
    """The target for a pool of ``current`` workers. ``history``: (time, wanted) of earlier passes, oldest first
    (the caller keeps at least ``stableSeconds`` of it); ``now`` on the same clock."""
    want, why = wanted(a, signal)
    if current < a.min_peers or current > a.max_peers:
        target = min(a.max_peers, max(a.min_peers, current))
        return Decision(target, want, f"{why}; back within bounds {a.min_peers}-{a.max_peers}", "bounds")
    if want > current:
        ceiling = signal.answered + max(a.scale_up_step, signal.answered)
        target = min(want, max(current, ceiling))
        if target == current:
            return Decision(current, want, f"{why}: {current} until the new workers answer", "up-wait")
        limited = f" ({ceiling} at most while {signal.answered} answer)" if target < want else ""
        return Decision(target, want, f"{why}: up to {target}{limited}", "up")
    window = [w for t, w in history if now - t <= a.stable_seconds] + [want]
    floor = max(window)
    if floor < current:
        return Decision(floor, want, f"{why}: down to {floor} (lower for {a.stable_seconds}s)", "down")
    if want < current:
        return Decision(
            current, want, f"{why}: {current} kept until demand stays lower for {a.stable_seconds}s", "window"
        )
    return Decision(current, want, f"{why}: {current} kept", "keep")


def victims(states: dict[str, State], count: int, idle_seconds: float) -> list[str]:
    """Up to ``count`` pod names whose workers may go: idle (nothing in flight, not draining) at least
    ``idle_seconds``, the longest idle first (ties by name)."""
    idle = [
        (-s["seconds_in_state"], name)
        for name, s in states.items()
        if s
        and s.get("state") == "idle"
        and not s.get("inflight")
        and not s.get("draining")
        and s["seconds_in_state"] >= idle_seconds
    ]
    return [name for _, name in sorted(idle)[: max(0, count)]]
