"""Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Only the leader reconciles; a standby is hot (its watches fill the cache) and takes over once the
Lease has not been renewed for ``LEASE_SECONDS`` as it observed it (its own clock, never the holder's
timestamps: clocks may differ). A leader that cannot renew within ``RENEW_DEADLINE_SECONDS`` stops
writing at once (kube.FENCE) and exits, and the kubelet restarts it as a standby.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from typing import Callable

from . import kube, metrics

# How long a lease is good for without renewal: a standby waits this long after the last renewal it saw.
# 10 s (client-go's default is 15): a killed leader is replaced within about 12 s.
LEASE_SECONDS = 10
# A leader that could not renew for this long stops writing and exits: before any standby may take over.
RENEW_DEADLINE_SECONDS = 7
# How often the leader renews and a standby tries.
RETRY_SECONDS = 2

log = logging.getLogger("daemonpool")


def _now_micro() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Elector:
    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        *,
        on_started: Callable[[], None],
        on_lost: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.namespace, self.name, self.identity = namespace, name, identity
        self.on_started = on_started
        self.on_lost = on_lost or (lambda: os._exit(1))
        self.clock = clock
        self.leader = False
        self.released = False  # a clean shutdown gave the Lease up: never take it again
        self._state = threading.Lock()  # step() and release() change leader/released under it
        self.last_renew = -1e9
        self._observed: tuple | None = None  # (holder, renewTime) as last seen
        self._observed_at = clock()

    def fresh(self) -> bool:
        """Leader, and surely still: renewed within the deadline (writes are fenced on this)."""
        return self.leader and self.clock() - self.last_renew < RENEW_DEADLINE_SECONDS

    def _body(self, old: dict | None) -> dict:
        now = _now_micro()
        spec_old = (old or {}).get("spec") or {}
        taking_over = spec_old.get("holderIdentity") != self.identity
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
            "acquireTime": now if taking_over else spec_old.get("acquireTime", now),
            "leaseTransitions": (spec_old.get("leaseTransitions") or 0) + (1 if taking_over and old else 0),
        }
        meta = {"name": self.name, "namespace": self.namespace}
        if old:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def try_acquire_or_renew(self) -> bool:
        lease = kube.get_lease(self.namespace, self.name)
        if lease is None:
            return kube.create_lease(self.namespace, self._body(None)) is not None
        spec = lease.get("spec") or {}
        seen = (spec.get("holderIdentity"), spec.get("renewTime"))
        if seen != self._observed:
            self._observed, self._observed_at = seen, self.clock()
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds") or LEASE_SECONDS
        if holder and holder != self.identity and self.clock() - self._observed_at < duration:
            return False  # held by another, renewed recently as far as we saw
        return kube.replace_lease(self.namespace, self.name, self._body(lease)) is not None

    def step(self) -> None:
        if self.released:
            return
        try:
            ok = self.try_acquire_or_renew()
        except Exception as exc:  # noqa: BLE001 - an API hiccup is a failed renewal, judged by the deadline
            log.warning("leader election: %s", exc)
            ok = False
        with self._state:
            then = self._after(ok)
        if then is not None:
            then()  # outside the lock: starting to lead reads the API, and release() must not wait on it

    def _after(self, ok: bool) -> Callable[[], None] | None:
        if self.released:  # released while this renewal was out: it does not make us leader again
            return None
        if ok:
            self.last_renew = self.clock()
            if not self.leader:
                self.leader = True
                metrics.LEADER.set(1)
                metrics.LEADER_TRANSITIONS.inc()
                log.info("leader election: %s is the leader (Lease %s/%s)", self.identity, self.namespace, self.name)
                return self.on_started
        elif self.leader and self.clock() - self.last_renew >= RENEW_DEADLINE_SECONDS:
            self.leader = False
            metrics.LEADER.set(0)
            metrics.LEADER_TRANSITIONS.inc()
            log.error(
                "leader election: could not renew the Lease for %ss; stopped writing, exiting to restart as a standby",
                RENEW_DEADLINE_SECONDS,
            )
            return self.on_lost
        return None

    def release(self) -> None:
        """Give the Lease up (a clean shutdown): stop writing first, then let a standby take it at once."""
        with self._state:
            was, self.leader, self.released = self.leader, False, True
        if not was:
            return
        metrics.LEADER.set(0)
        if not kube.drain_writes(sum(kube.REQUEST_TIMEOUT)):
            log.warning("leader election: writes still unanswered; keeping the Lease to expire on its own")
            return
        try:
            for _ in range(2):  # a renewal that was out when release began may win the first write (409)
                lease = kube.get_lease(self.namespace, self.name)
                if not lease or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                    return
                body = self._body(lease)
                body["spec"].update(holderIdentity=None, leaseDurationSeconds=1)
                if kube.replace_lease(self.namespace, self.name, body) is not None:
                    log.info("leader election: released the Lease")
                    return
        except Exception as exc:  # noqa: BLE001 - shutting down: the Lease expires on its own
            log.warning("leader election: could not release the Lease (it expires in %ss): %s", LEASE_SECONDS, exc)

    def run(self) -> None:
        while True:
            self.tick()
            time.sleep(RETRY_SECONDS)

    def tick(self) -> None:
        """One step that no error ends the loop on: starting to lead reads the API (a failed first resync
        raised out of step() and ended the election thread, so renewals stopped)."""
        try:
            self.step()
        except Exception:  # noqa: BLE001 - logged with its traceback and counted; the next step goes on
            metrics.LOOP_ERRORS.labels("leader_election").inc()
            log.exception("leader election: a step failed unexpectedly; going on")

    def start(self) -> None:
        metrics.LEADER.set(0)
        kube.FENCE.guard(self.fresh)
        threading.Thread(target=self.run, name="daemonpool-leader-election", daemon=True).start()
