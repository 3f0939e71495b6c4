"""The autoscaled pools' sizes: asks every worker of such pools for its ``/state`` about once a second while
the operator leads, decides with ``autoscale.py``, and scales in only by removing drained idle workers.

A scale-in that never stops a busy worker uses the ReplicaSet's own order (``ActivePodsWithRanks``: pending,
then not-ready pods go first, then the lowest ``pod-deletion-cost``):

1. count the pods that are not ready and not busy: the ReplicaSet removes those first anyway ("free");
2. pick the rest among workers idle at least ``idleSeconds`` and ask each to drain (``POST /drain`` with the
   pool's token): a worker accepts only while nothing is in flight, then takes no item and fails readiness;
3. once the cache shows the drained workers not ready (or ``NOT_READY_WAIT`` passed), ask again: a worker
   that took an item meanwhile is no longer draining and stays; the others get the lowest cost;
4. lower the Deployment's replicas by the free and drained count (the reconcile writes it).

A drained worker the ReplicaSet did not remove ends its drain by itself after ``DRAIN_SECONDS``. The state
here (targets, windows, drains in progress) is the autoscaler's memory; it is rebuilt from the Deployment's
replicas on a new leader, and drains in progress are simply abandoned (the workers undrain themselves).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from . import autoscale, desired, metrics, model, rollout, scalein, sources, statewatch, workers
from . import reasons as R

log = logging.getLogger("daemonpool.autoscaler")

# Seconds between passes: the workers' state is asked this often (the signal is 1 s old at most).
PERIOD_SECONDS = 1.0
# Seconds a drain lasts unless the worker is removed or undrained first: the handshake takes a few.
DRAIN_SECONDS = 60.0
# Seconds to wait for drained workers to show not ready before going on with those that do.
NOT_READY_WAIT = 15.0
# The lowest pod-deletion-cost (int32): a drained worker goes before every other not-ready pod.
DRAINED_COST = -(2**31)
# Seconds between looks for HPAs (and KEDA's, keda-hpa-*) that target an autoscaled pool: a conflict to report.
HPA_CHECK_SECONDS = 30.0


@dataclasses.dataclass
class _Drain:
    victims: dict  # pod name -> IP, drained
    free: int  # not-ready, not-busy pods the ReplicaSet removes first anyway
    since: float
    target: int  # the target this scale-in was for
    reason: str = ""  # the decision's why, said again when the workers go


@dataclasses.dataclass
class _Memory:
    target: int | None = None
    history: collections.deque = dataclasses.field(default_factory=collections.deque)
    backlog: int | None = None
    backlog_at: float = float("-inf")
    backlog_why: str = ""  # why the backlog is unknown, for the status
    drain: _Drain | None = None
    shown: tuple = ()  # (target, kind) last published
    costs: dict = dataclasses.field(default_factory=dict)  # pod -> cost last patched (before the watch says so)
    hold_since: float | None = None  # when this rollout was first held for busy old workers
    hold_sent: bool | None = None  # the pause last asked for (before the watch says so), and when
    hold_sent_at: float = float("-inf")
    status: dict | None = None


class Autoscaler:
    """Decides the size of every autoscaled pool; see the module's docstring.

    ``enqueue(key)`` asks for a reconcile (which writes replicas and status); ``patch_cost(ns, pod, cost)``,
    ``hold(ns, deployment, on)`` and ``post_event(pool, type, reason, message)`` are the API writes it makes itself; ``now()`` is wall
    time as RFC 3339 for status; ``clock`` is monotonic; ``leading()`` says whether to act at all.
    """

    def __init__(
        self,
        world,
        *,
        enqueue: Callable[[tuple], None],
        patch_cost: Callable[[str, str, int], None],
        post_event: Callable[[dict, str, str, str], None],
        now: Callable[[], str],
        clock: Callable[[], float] = time.monotonic,
        leading: Callable[[], bool] = lambda: True,
        period: float = PERIOD_SECONDS,
        ask: workers.Asker | None = None,
        watch: statewatch.StateWatch | None = None,
        hpas: Callable[[], dict] = dict,
        secret: Callable[[str, str, str], str] | None = None,
        pg_count: Callable[[str, str], int | None] = sources.postgres_count,
        hold: Callable[[str, str, bool], None] = lambda ns, name, on: None,
    ) -> None:
        self.world, self.enqueue, self.patch_cost, self.post_event = world, enqueue, patch_cost, post_event
        self.now, self.clock, self.leading, self.period = now, clock, leading, period
        self.ask = ask if ask is not None else workers.Asker()  # drains, undrains, http backlogs
        self.watch = watch if watch is not None else statewatch.StateWatch()  # every worker's /state
        self.hpas = hpas  # () -> {(namespace, pool): [HPA names]}: kube.hpas_on_pools
        self.secret, self.pg_count = secret, pg_count  # kube.secret_value; sources.postgres_count
        self.hold = hold  # (namespace, deployment, on): pause or resume a rollout (rollout.hold_patch)
        self._hpas: dict = {}
        self._hpas_at = float("-inf")
        self._lock = threading.Lock()
        self._pools: dict = {}
        self._views: dict = {}  # key -> (the cache's stamp, what _view made of it)
        self.passes = 0

    # -- what the reconcile asks -------------------------------------------------------------
    def replicas(self, key: tuple, spec, have: dict | None) -> int:
        """The Deployment's replicas for an autoscaled pool: the autoscaler's target, else what the Deployment
        has (a new leader), else minPeers; at least minPeers. Above maxPeers (lowered in the spec) it stays until
        the autoscaler brings it down, by draining idle workers like any scale-in."""
        a = spec.autoscale
        with self._lock:
            mem = self._pools.get(key)
            target = mem.target if mem else None
        if target is None:
            target = (have or {}).get("spec", {}).get("replicas")
        if target is None:
            target = a.min_peers
        return max(a.min_peers, int(target))

    def status(self, key: tuple) -> dict | None:
        with self._lock:
            mem = self._pools.get(key)
            return dict(mem.status) if mem and mem.status else None

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._pools.pop(key, None)
        metrics.forget_autoscaled(key)

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Passes every ``period`` seconds for good; a failing pass is logged and the next one goes on."""
        while True:
            t0 = self.clock()
            try:
                if self.leading():
                    self.tick()
            except Exception:  # noqa: BLE001 - the loop must outlive any one pass
                metrics.LOOP_ERRORS.labels("autoscale").inc()
                log.exception("an autoscaler pass failed; the next one goes on")
            time.sleep(max(0.05, self.period - (self.clock() - t0)))

    def tick(self) -> None:
        """One pass over every autoscaled pool: ask their workers at once, then decide for each."""
        t0 = self.clock()
        if t0 - self._hpas_at >= HPA_CHECK_SECONDS:
            self._hpas_at = t0
            try:
                self._hpas = self.hpas()
            except Exception as exc:  # noqa: BLE001 - advice only: a failed look keeps the last answer
                log.warning("autoscaler: could not list HorizontalPodAutoscalers: %s", exc)
        pools = []
        keys = self.world.pool_keys()
        for key in set(self._views) - set(keys):
            del self._views[key]
        for key in keys:
            view = self._view(key)
            if view is None:
                if key in self._pools:
                    self.forget(key)
                continue
            if view[2] is not None:
                pools.append((key, *view))
        targets: dict = {}
        for key, _, spec, _, pods in pools:
            for name, ip in workers.targets(pods).items():
                targets[(key, name)] = (ip, spec.port)
        read = self.watch.answers
        answers = self.watch.current(targets)  # long polls: what changed since the last pass, and the rest aged
        metrics.AUTOSCALE_ASKS.inc(self.watch.answers - read)
        for key, pool, spec, have, pods in pools:
            states = {p["metadata"]["name"]: answers.get((key, p["metadata"]["name"])) for p in pods}
            try:
                self._decide(key, pool, spec, have, pods, states)
            except Exception:  # noqa: BLE001 - one pool's trouble is not another's
                metrics.LOOP_ERRORS.labels("autoscale").inc()
                log.exception("autoscaling pool %s/%s failed this pass", *key)
        self.passes += 1
        metrics.AUTOSCALE_PASS_SECONDS.observe(self.clock() - t0)

    def _view(self, key: tuple) -> tuple | None:
        """(pool, spec, Deployment or None, live pods) of an autoscaled pool, else None; loaded from the cache
        and parsed again only when the cache's stamp for the pool moved (a pass looks at every pool)."""
        stamp = self.world.stamp(key)
        memo = self._views.get(key)
        if memo is not None and memo[0] == stamp:
            return memo[1]
        pool = self.world.pool(key)
        spec = model.live_spec(pool)
        view = None
        if spec is not None and spec.autoscale is not None:
            pods = [p for p in self.world.pods(key) if not p["metadata"].get("deletionTimestamp")]
            view = (pool, spec, self.world.deployment(key), pods)
        self._views[key] = (stamp, view)
        return view

    # -- one pool ----------------------------------------------------------------------------
    def _rollout(self, key, spec, have, pods, states, mem) -> str | None:
        """During a rollout no busy old worker is stopped (see rollout.py): idle old workers get the lowest
        costs, every old worker a finishing drain, and the Deployment is paused while a busy one could go next.
        The reason while held, else None."""
        old = rollout.old_pods(pods)
        if not old:
            mem.costs.clear()
            mem.hold_since = None
            if rollout.held(have):
                self._hold(key, mem, False, "the rollout is done")
            return None
        for name, cost in scalein.plan_costs(old, states).items():
            if mem.costs.get(name) == cost:
                continue  # patched already; the pod's watch event has not come back yet
            mem.costs[name] = cost
            try:
                self.patch_cost(key[0], name, cost)
            except Exception as exc:  # noqa: BLE001 - a preference: the rollout goes on without it
                log.warning("pool %s/%s: could not set the deletion cost of %s: %s", *key, name, exc)
        token = desired.drain_token(have)
        retire = {n: ip for n, ip in workers.targets(old).items() if not (states.get(n) or {}).get("retiring")}
        if token and retire:
            self.ask.drain(retire, spec.port, token, DRAIN_SECONDS, finish=True)
        dspec = have.get("spec") or {}
        budget = rollout.removable_at_once(dspec.get("strategy"), int(dspec.get("replicas") or 0))
        busy, expendable = rollout.count_old(old, states)
        want = rollout.hold(busy, expendable, budget) and (dspec.get("strategy") or {}).get("type") != "Recreate"
        now = self.clock()
        if want and mem.hold_since is None:
            mem.hold_since = now
        if want and now - mem.hold_since > rollout.HOLD_SECONDS:
            want = False
            why = f"held {rollout.HOLD_SECONDS:g}s for busy old workers; going on (they finish within the grace period)"
        else:
            why = "the busy old workers finished" if not want else "busy old workers"
        if want != rollout.held(have) and (mem.hold_sent != want or now - mem.hold_sent_at > NOT_READY_WAIT):
            self._hold(key, mem, want, why)
        if not want:
            return None
        return (
            f"the rollout waits for {busy} busy old worker(s) to finish their items "
            f"({expendable} old worker(s) would go first, the Deployment may remove {budget} at once)"
        )

    def _hold(self, key, mem, on: bool, why: str) -> None:
        mem.hold_sent, mem.hold_sent_at = on, self.clock()
        log.info("pool %s/%s: rollout %s (%s)", *key, "paused" if on else "resumed", why)
        try:
            self.hold(key[0], desired.deployment_name(key[1]), on)
        except Exception as exc:  # noqa: BLE001 - asked again on a later pass
            log.warning("pool %s/%s: could not %s the rollout: %s", *key, "pause" if on else "resume", exc)

    def _decide(self, key, pool, spec, have, pods, states) -> None:
        a, now = spec.autoscale, self.clock()
        with self._lock:
            mem = self._pools.setdefault(key, _Memory())
        hold_why = self._rollout(key, spec, have, pods, states, mem)
        current = int((have.get("spec") or {}).get("replicas") or 0)
        if mem.target is None:
            mem.target = current
        signal = autoscale.busy_of(list(states.values()))
        backlog = self._backlog(key, a, mem, states, now)
        signal = dataclasses.replace(signal, backlog=backlog)
        while mem.history and now - mem.history[0][0] > a.stable_seconds:
            mem.history.popleft()
        decision = autoscale.decide(a, mem.target, signal, list(mem.history), now)
        if backlog is None and mem.backlog_why:
            decision = dataclasses.replace(decision, reason=f"{decision.reason} ({mem.backlog_why})")
        mem.history.append((now, decision.wanted))
        metrics.autoscaled(key, decision.target, signal.busy, backlog)
        if mem.drain is not None:
            if decision.target < mem.target:
                self._go_on_draining(key, pool, spec, have, pods, states, mem, signal)
                return
            self._abandon(key, spec, have, mem, "demand rose again")
        if decision.target > mem.target:
            self._set(key, pool, mem, decision.target, decision.reason, "up", signal)
        elif decision.target < mem.target:
            self._scale_in(key, pool, spec, have, pods, states, mem, decision, signal)
        elif hold_why:
            self._show(key, mem, decision.target, hold_why, "rollout-hold", signal)
        else:
            self._show(key, mem, decision.target, decision.reason, decision.kind, signal)

    def _backlog(self, key, a, mem, states, now) -> int | None:
        if a.backlog is None:
            return None
        if a.backlog.source == "workers":
            return autoscale.workers_backlog(list(states.values()))
        if now - mem.backlog_at < a.backlog.period_seconds:
            return mem.backlog
        mem.backlog_at, mem.backlog_why = now, ""
        if a.backlog.source == "http":
            mem.backlog = self.ask.count(a.backlog.url)
            if mem.backlog is None:
                mem.backlog_why = f"{a.backlog.url} did not answer one number"
        else:
            ref = a.backlog.secret_ref
            try:
                dsn = self.secret(key[0], ref.name, ref.key) if self.secret else None
            except Exception as exc:  # noqa: BLE001 - kube.Rejected or an outage: said in status, asked again
                dsn, mem.backlog_why = None, str(getattr(exc, "message", exc))[:300]
            mem.backlog = None if dsn is None else self.pg_count(dsn, a.backlog.query)
            if dsn is not None and mem.backlog is None:
                mem.backlog_why = "the query failed or returned no whole number (the operator's log says why)"
        if mem.backlog_why:
            log.warning("pool %s/%s: backlog unknown: %s", *key, mem.backlog_why)
        return mem.backlog

    def _scale_in(self, key, pool, spec, have, pods, states, mem, decision, signal) -> None:
        a = spec.autoscale
        ds = have.get("status") or {}
        if (ds.get("updatedReplicas") or 0) < mem.target or (ds.get("replicas") or 0) != mem.target:
            why = f"{decision.reason}; waits for the Deployment to settle"
            self._show(key, mem, mem.target, why, "settle", signal)
            return
        k = mem.target - decision.target
        free = [
            p["metadata"]["name"]
            for p in pods
            if not p["status"].get("ready") and (states.get(p["metadata"]["name"]) or {}).get("state") != "busy"
        ][:k]
        need = k - len(free)
        chosen = autoscale.victims({n: s for n, s in states.items() if n not in free}, need, a.idle_seconds)
        drained: dict = {}
        token = desired.drain_token(have)
        if chosen and token:
            ips = {n: ip for n, ip in workers.targets(pods).items() if n in chosen}
            answers = self.ask.drain(ips, spec.port, token, DRAIN_SECONDS)
            drained = {n: ips[n] for n, s in answers.items() if s and s.get("draining")}
        if not drained and not free:
            why = f"{decision.reason}; no worker idle for {a.idle_seconds}s yet (busy workers are never removed)"
            if pods and not any(states.values()):
                why = (
                    f"{decision.reason}; no worker answered /state on port {spec.port} (a NetworkPolicy?): none removed"
                )
            self._show(key, mem, mem.target, why, "idle-wait", signal)
            return
        if drained:
            log.info("pool %s/%s: drained %s for a scale-in to %d", *key, ", ".join(sorted(drained)), decision.target)
            mem.drain = _Drain(drained, len(free), self.clock(), decision.target, decision.reason)
            self._show(
                key, mem, mem.target, f"{decision.reason}; draining {len(drained)} idle worker(s)", "drain", signal
            )
            return
        self._set(
            key,
            pool,
            mem,
            mem.target - len(free),
            f"{decision.reason}; {len(free)} not-ready worker(s) go",
            "down",
            signal,
        )

    def _go_on_draining(self, key, pool, spec, have, pods, states, mem, signal) -> None:
        d = mem.drain
        alive = {p["metadata"]["name"]: p for p in pods}
        victims = {n: ip for n, ip in d.victims.items() if n in alive}
        shown_not_ready = all(not alive[n]["status"].get("ready") for n in victims)
        if not shown_not_ready and self.clock() - d.since < NOT_READY_WAIT:
            return
        kept = {
            n: ip for n, ip in victims.items() if (s := states.get(n)) and s.get("draining") and not s.get("inflight")
        }
        kept = {n: ip for n, ip in kept.items() if not alive[n]["status"].get("ready")}
        left = {n: ip for n, ip in victims.items() if n not in kept}
        if left and desired.drain_token(have):
            self.ask.undrain(left, spec.port, desired.drain_token(have))
        mem.drain = None
        for name in sorted(kept):
            self.patch_cost(key[0], name, DRAINED_COST)
        n = len(kept) + d.free
        if n == 0:
            self._show(key, mem, mem.target, "the drained workers took items again; kept", "drain-undone", signal)
            return
        why = f"removing {len(kept)} drained idle worker(s)" + (f" and {d.free} not ready" if d.free else "")
        why = f"{d.reason}; {why}" if d.reason else why
        self._set(key, pool, mem, mem.target - n, why, "down", signal)

    def _abandon(self, key, spec, have, mem, why: str) -> None:
        d = mem.drain
        mem.drain = None
        token = desired.drain_token(have)
        if d and d.victims and token:
            self.ask.undrain(d.victims, spec.port, token)
        log.info("pool %s/%s: scale-in abandoned (%s); workers undrained", *key, why)

    def _set(self, key, pool, mem, target: int, reason: str, kind: str, signal) -> None:
        before = mem.target
        mem.target = target
        mem.shown = ()
        self._show(key, mem, target, reason, kind, signal, scaled=True)
        metrics.AUTOSCALE_DECISIONS.labels(kind).inc()
        log.info("pool %s/%s: autoscaled %s -> %s: %s", *key, before, target, reason)
        self.post_event(pool, "Normal", R.AUTOSCALED, f"{before} -> {target} workers: {reason}")

    def _show(self, key, mem, target, reason, kind, signal, scaled=False) -> None:
        """Status changes (and the reconcile that writes it) only when the target or the kind of decision does:
        a steady load makes no writes."""
        rivals = sorted(self._hpas.get(key, []))
        if mem.shown == (target, kind, rivals):
            return
        if rivals and (mem.shown[2:] or [[]])[0] != rivals:
            pool = self.world.pool(key)
            if pool:
                self.post_event(pool, "Warning", R.AUTOSCALE_CONFLICT, R.autoscale_conflict_message(key[0], rivals))
        mem.shown = (target, kind, rivals)
        last = (mem.status or {}).get("lastScaleTime")
        mem.status = {
            **({"conflict": R.autoscale_conflict_message(key[0], rivals)} if rivals else {}),
            "desired": target,
            "busy": round(signal.busy, 1),
            **({"backlog": signal.backlog} if signal.backlog is not None else {}),
            "reason": reason[:1000],
            **({"lastScaleTime": self.now()} if scaled else ({"lastScaleTime": last} if last else {})),
        }
        self.enqueue(key)
