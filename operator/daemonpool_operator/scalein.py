"""Which workers a scale-in removes first: idle before busy (KEP-2255's pod-deletion-cost). Pure.

The ReplicaSet controller deletes the pods with the lowest ``controller.kubernetes.io/pod-deletion-cost``
first. Costs: idle workers below zero (the longest idle lowest), workers that cannot be asked at zero,
busy workers above (the longest busy highest), time counted on a doubling scale (``bucket``). What KEP-2255 does not promise: pending and not-ready
pods still go before any ready one, and the cost is a preference of one ReplicaSet at a time (during a
rollout the old ReplicaSet's pods go first whatever their cost).
"""

from __future__ import annotations

from typing import Any

# int32, as the annotation's value must be; busy costs start here so any busy > any unknown > any idle.
BUSY_BASE = 1_000_000
CAP = 2**31 - 1


def bucket(seconds: float) -> int:
    """How long, on a doubling scale: 0 for under a second, 1 for 1-2 s, 2 for 3-6 s, ... A cost changes only
    when a worker's time doubles (or its state flips), so a scale-in patches few pods: with costs in
    seconds, every step re-patched nearly every pod (1,000 PATCHes per step for 1,000 pods)."""
    return int(max(0.0, min(float(seconds), 1e12)) + 1).bit_length() - 1


def cost(state: dict[str, Any] | None) -> int:
    """The deletion cost of one worker from its ``GET /state`` answer (None: could not ask)."""
    if not state:
        return 0
    b = bucket(float(state.get("seconds_in_state") or 0.0))
    if state.get("state") == "busy":
        return min(CAP, BUSY_BASE + b)
    if state.get("state") == "idle":
        return -(1 + b)
    return 0  # stopping, unknown (`run` with a silent child), or a state this operator does not know


def plan_costs(pods: list[dict[str, Any]], states: dict[str, Any]) -> dict[str, int]:
    """{pod name: new cost} for the live pods whose annotation differs from what ``states`` says now."""
    out: dict[str, int] = {}
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name"))
        want = cost(states.get(name))
        have = (meta.get("annotations") or {}).get("controller.kubernetes.io/pod-deletion-cost")
        if have != str(want):
            out[name] = want
    return out
