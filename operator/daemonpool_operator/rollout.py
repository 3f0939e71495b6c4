"""Rollouts of autoscaled pools that never stop a busy old worker. Pure: no kopf, no kubernetes, no I/O.

During a rolling update the Deployment controller removes old pods as new ones become available, in the
ReplicaSet's order (not-ready pods first, then the lowest pod-deletion-cost), and at most
``maxSurge + maxUnavailable`` at once (``reconcileOldReplicaSets``: all pods minus the minimum available).
So a busy old worker is safe while at least that many old pods would go before it. The autoscaler:

1. asks every old worker for a finishing drain (``POST /drain?finish=1``): it takes no new item, stays ready
   while it finishes the ones in flight, then fails readiness (so it is the next to go);
2. gives idle old workers the lowest costs (``scalein.plan_costs``);
3. pauses the Deployment (``spec.paused``, marked with ``HELD``) while a busy ready old worker could be
   removed next, that is while fewer than ``removable_at_once`` old pods are not ready or idle, and resumes it
   as soon as enough are (a worker that finished its item is one more). A hold lasts at most
   ``HOLD_SECONDS``; a pool that stops autoscaling is resumed by the reconcile (``release_patch``).

Only ``RollingUpdate`` is covered: with ``Recreate``, or the first ``maxUnavailable`` old pods of a rollout
(removed before a new pod shows the rollout), the workers get SIGTERM and finish within the grace period.
"""

from __future__ import annotations

import math
from typing import Any

Obj = dict[str, Any]  # an API object (or a part of one) as JSON

# The annotation that says the operator paused the Deployment (and will resume it); a user's pause has none.
HELD = "daemonpool.dev/rollout-held"
# Seconds a rollout may be held for one pool's busy old workers before it goes on regardless: an item that
# never ends must not stop a template change for good.
HOLD_SECONDS = 600.0


def template_hash(pod: Obj) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get("pod-template-hash")


def old_pods(pods: list[Obj]) -> list[Obj]:
    """The pods of the old ReplicaSets while a rollout is under way (else []). The new ReplicaSet is the one
    whose first pod is the newest: the old ones had pods before the rollout began, and a scale-up in the middle
    of a rollout adds pods to old ReplicaSets too (proportional scaling), so the newest pod alone is no guide."""
    first: dict[str, str] = {}
    for p in pods:
        h = template_hash(p)
        if h is not None:
            made = p["metadata"].get("creationTimestamp") or ""
            first[h] = min(first.get(h, made), made)
    if len(first) < 2:
        return []
    new = max(first, key=lambda h: (first[h], h))
    return [p for p in pods if template_hash(p) not in (None, new)]


def _scaled(value: int | str, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: "25%" of total, rounded up or down; an int as it is."""
    if isinstance(value, str) and value.endswith("%"):
        x = int(value[:-1]) * total / 100
        return math.ceil(x) if round_up else math.floor(x)
    return int(value)


def removable_at_once(strategy: Obj | None, replicas: int) -> int:
    """How many old pods the Deployment controller may remove in one go: maxSurge (rounded up) plus
    maxUnavailable (rounded down; 1 if both are 0), as ``ResolveFenceposts`` reckons them."""
    ru = (strategy or {}).get("rollingUpdate") or {}
    surge = _scaled(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = _scaled(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge + unavailable


def count_old(old: list[Obj], states: dict[str, Obj | None]) -> tuple[int, int]:
    """(busy ready old workers, expendable old pods): expendable ones are not ready, or idle (the lowest costs),
    so the controller removes them before a busy ready one."""
    busy = expendable = 0
    for p in old:
        ready = (p.get("status") or {}).get("ready")
        st = (states.get(p["metadata"]["name"]) or {}).get("state")
        if ready and st == "busy":
            busy += 1
        elif not ready or st == "idle":
            expendable += 1
    return busy, expendable


def hold(busy: int, expendable: int, budget: int) -> bool:
    """Pause: a busy ready old worker could be among the next ``budget`` the controller removes."""
    return busy > 0 and expendable < budget


def held(deployment: Obj | None) -> bool:
    """The operator paused this Deployment for a rollout (a pause of anyone else's is not ours to undo)."""
    d = deployment or {}
    return bool((d.get("spec") or {}).get("paused")) and HELD in ((d.get("metadata") or {}).get("annotations") or {})


def hold_patch(on: bool) -> Obj:
    """The merge patch that pauses (marked) or resumes (unmarked) the Deployment."""
    return {"metadata": {"annotations": {HELD: "busy old workers" if on else None}}, "spec": {"paused": on}}


def release_patch(patch: Obj) -> Obj:
    """``patch`` (the reconcile's update) that also resumes a Deployment held for a pool that no longer
    autoscales (nobody else would)."""
    out = hold_patch(False)
    return {**patch, "metadata": {**patch["metadata"], **out["metadata"]}, "spec": {**patch["spec"], **out["spec"]}}
