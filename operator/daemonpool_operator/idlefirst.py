"""The idle-first pass of a manual scale-in (``kubectl scale``, a new ``spec.peers``): before the replicas go
down, ask every worker whether it is busy and mark idle ones to go first (KEP-2255's pod-deletion-cost).

A preference, not a promise: the ReplicaSet takes whoever is left when too few are idle. Autoscaled pools
do better (``autoscaler.py`` drains idle workers first and removes only those).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import kube, scalein, workers
from . import reasons as R

# Seconds a pool whose workers did not answer scales in without asking them again: a NetworkPolicy or
# a port that does not answer rarely changes within minutes, and each failed asking delays the scale-in.
BLIND_SECONDS = 300.0


class IdleFirst:
    """``pods(key)``: the pool's pods (the cache); ``patch_cost(namespace, pod, cost)``: the API write.

    Remembers, per pool, when its workers could not be asked (``blind``): warned once, not asked again for
    ``blind_seconds`` (asking workers that cannot answer costs up to a timeout per scale-in)."""

    def __init__(
        self,
        pods: Callable[[tuple], list],
        patch_cost: Callable[[str, str, int], None],
        ask=workers,
        clock: Callable[[], float] = time.monotonic,
        blind_seconds: float = BLIND_SECONDS,
    ) -> None:
        self.pods, self.patch_cost, self.ask, self.clock = pods, patch_cost, ask, clock
        self.blind_seconds = blind_seconds
        self.blind: dict = {}

    def forget(self, key: tuple) -> None:
        self.blind.pop(key, None)

    def before_scale_in(self, key: tuple, spec, before: int, after: int) -> list:
        """Patch the costs that change (only here: KEP-2255 warns against frequent updates); the Events to post."""
        last = self.blind.get(key)
        now = self.clock()
        if last is not None and now - last < self.blind_seconds:
            return []
        pods = self.pods(key)
        states = self.ask.states(pods, spec.port) if spec.probes == "http" else {}
        if not any(states.values()):
            self.blind[key] = now
            if last is not None:
                return []
            why = "probes are exec" if spec.probes != "http" else f"no worker answered on port {spec.port}"
            return [("Warning", R.IDLE_FIRST_UNAVAILABLE, R.blind_scale_in_message(before, after, why))]
        self.blind.pop(key, None)
        refused = []
        for pod, cost in scalein.plan_costs(pods, states).items():
            try:
                self.patch_cost(key[0], pod, cost)
            except kube.Rejected as exc:  # an admission policy or webhook: about that pod, not the Deployment
                refused.append(f"{pod} ({exc.status}: {exc.message[:200]})")
        busy = sum(1 for s in states.values() if s and s.get("state") == "busy")
        idle = sum(1 for s in states.values() if s and s.get("state") == "idle")
        events = [("Normal", R.IDLE_FIRST, R.idle_first_message(before, after, idle, busy))]
        if refused:
            events.append(("Warning", R.IDLE_FIRST_UNAVAILABLE, R.cost_refused_message(refused)))
        return events
