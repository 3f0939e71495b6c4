"""The controller: one object built from an explicit ``Config``, holding the cache, the work queue, the
per-pool memory and the autoscaler; ``handlers.py`` only registers kopf handlers that call it.

Watch events only record what they saw (``cache.World``) and add the pool's key to a coalescing work queue
with per-key backoff (``workqueue.WorkQueue``): a storm of pod events for one pool is one or two reconciles,
not one per event. A reconcile reads the pool, its Deployment and a summary of its pods from the cache (no
GET, no LIST), builds with ``desired.py``, writes through the API module (``kube.py``) only what differs,
and rebuilds status with ``status.py``, patched only when it changed. ``reconcile`` alone decides what an
outcome means (controller-runtime's ``reconcileHandler``): done; ``kube.Transient`` or ``Retry``: again after
a delay (backoff); ``kube.Rejected``: said in status and not sent again until the pool changes;
``kube.NamespaceTerminating``: left to go with its namespace. One slow loop re-enqueues every pool (a safety
net) and runs the watch census. Time is injected (``clock``, ``sleep``); so is the API (``api``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

import worker_runtime

from . import autoscaler, cache, desired, kube, metrics, model, rollout
from . import reasons as R
from . import status as st
from .budgets import Budgets
from .census import CHECK_SECONDS, Census
from .config import Config
from .idlefirst import IdleFirst
from .workqueue import Retry, WorkQueue

log = logging.getLogger("daemonpool")

# The status keys the operator owns (as published, camelCase); kopf and others may add their own.
STATUS_KEYS = frozenset(f.alias or n for n, f in model.DaemonPoolStatus.model_fields.items())


class Unhealthy(Exception):
    """The controller is stuck (its health check's words); the health endpoint fails with them."""


def _conditions(status: dict | None) -> dict:
    return {c["type"]: c for c in (status or {}).get("conditions") or []}


def transition_events(pool: dict, new: dict) -> list:
    """One Warning per new cause of Degraded, not one per pass.

    A new cause: Degraded turned True, or its reason changed, or (for causes in the spec) its message changed.
    Counts of pods in a message are not a new cause. Restarts have their own WorkerRestarted Events.
    """
    old, cur = _conditions(pool.get("status")), _conditions(new)
    deg, prev = cur.get("Degraded", {}), old.get("Degraded", {})
    if deg.get("status") != "True" or deg.get("reason") == R.WORKERS_RESTARTING:
        return []
    new_cause = (
        prev.get("status") != "True"
        or prev.get("reason") != deg.get("reason")
        or (deg.get("reason") in R.SPEC_CAUSED and prev.get("message") != deg.get("message"))
    )
    if not new_cause:
        return []
    meta = pool["metadata"]
    log.warning(
        "pool %s/%s is degraded: %s: %s",
        meta.get("namespace"),
        meta.get("name"),
        deg["reason"],
        deg["message"],
        extra=R.fields(meta.get("namespace"), meta.get("name"), deg["reason"]),
    )
    return [("Warning", deg["reason"], deg["message"])]


class Controller:
    """Reconciles DaemonPools; see the module's docstring. ``api`` is the API module (``kube``, or a fake in
    handler tests); ``clock`` is monotonic time; ``sleep`` waits (the resync loop)."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        api: Any = kube,
        world: cache.World | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        restart_watches: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config or Config()
        self.census = Census(restart_watches)  # kopfhooks.restart_watches in the operator
        self.api, self.clock, self.sleep = api, clock, sleep
        self.world = world or cache.World()
        # (namespace, name) -> (fingerprint of the refused body, status message): the same body is not sent
        # again until the pool (or operator) changes; the API server would refuse it again.
        self.rejected: dict = {}
        # (namespace, name) -> a Deployment of the pool's name that is not the pool's (not watched: it lacks our
        # labels). Looked at again once per resync, never written.
        self.foreign: dict = {}
        # What last asked for each queued pool (pool, deployment, pod, resync): for the reconciles metric.
        self.triggers: dict = {}
        self.resynced_at = clock()
        self.elector: Any = None
        self.idle_first = IdleFirst(
            lambda key: self.world.pods(key),
            lambda ns, pod, cost: self.api.patch_pod_deletion_cost(ns, pod, cost),
            clock=clock,
            blind_seconds=self.config.blind_seconds,
        )
        self.budgets = Budgets(api)  # spec.disruption's PodDisruptionBudgets (budgets.py)
        self.queue = WorkQueue(self.reconcile, threads=self.config.reconcile_threads, on_error=self._on_error)
        ns = list(self.config.namespaces)
        self.autoscaler = autoscaler.Autoscaler(  # sizes autoscaled pools while this replica leads (its queue runs)
            self.world,
            enqueue=lambda key: self.enqueue(key, "autoscale"),
            patch_cost=lambda ns_, pod, cost: self.api.patch_pod_deletion_cost(ns_, pod, cost),
            post_event=lambda *a: self.api.post_event(*a),
            now=lambda: self.api.now(),
            leading=lambda: self.queue.started,
            hpas=lambda: self.api.hpas_on_pools(ns),
            secret=lambda ns_, name, key: self.api.secret_value(ns_, name, key),
            hold=lambda ns_, name, on: self.api.patch_deployment(ns_, name, rollout.hold_patch(on)),
        )

    # -- the queue -------------------------------------------------------------------------
    def enqueue(self, key: tuple, trigger: str, delay: float = 0.0) -> None:
        if not self.queue.started:
            return  # a standby keeps no queue (it grew with every pool it saw); taking over reconciles them all
        self.triggers.setdefault(key, trigger)
        self.queue.add_after(key, delay)
        metrics.QUEUE_DEPTH.set(self.queue.depth)

    def _on_error(self, key: tuple, exc: BaseException) -> None:
        log.warning("reconciling pool %s/%s failed, retried with backoff: %s: %s", *key, type(exc).__name__, exc)

    # -- one pass over one pool --------------------------------------------------------------
    def reconcile(self, key: tuple) -> None:
        """One pass over one pool, from the cache; the one place that decides what its outcome means. Raises
        Retry to be tried again later (the queue's backoff)."""
        t0 = self.clock()
        trigger, result = self.triggers.pop(key, "resync"), "error"
        try:
            self._reconcile(key)
            result = "ok"
        except kube.NamespaceTerminating:
            result = "ok"
            log.info("namespace %s is being deleted; leaving pool %s to go with it", *key)
        except kube.Transient as exc:
            result = "retry"
            raise Retry(str(exc), exc.delay) from None
        except Retry:
            result = "retry"
            raise
        finally:
            took = self.clock() - t0
            metrics.RECONCILES.labels(trigger, result).inc()
            metrics.RECONCILE_SECONDS.observe(took)
            metrics.QUEUE_DEPTH.set(self.queue.depth)
            if took > self.config.slow_reconcile_seconds:
                why = "the API server or a lock is slow"
                limit = self.config.slow_reconcile_seconds
                log.warning("reconciling pool %s/%s took %.1fs (limit %gs): %s", *key, took, limit, why)

    def _reconcile(self, key: tuple) -> None:
        namespace, name = key
        api, world = self.api, self.world
        pool = world.pool(key)
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            self.forget(key)
            return
        api.remove_finalizer(pool)  # left by versions that used kopf's per-pool timer; a no-op without one
        try:
            _, spec = model.parse_pool(pool)
        except model.InvalidPool as exc:
            new = st.build_status(pool, None, [], now=api.now(), invalid=str(exc)).dump()
            self.publish(pool, new, transition_events(pool, new))
            return
        have = world.deployment(key) or self.foreign.get(key)
        replicas = token = None
        if spec.autoscale is not None:
            replicas = self.autoscaler.replicas(key, spec, have)
            token = desired.drain_token(have) or secrets.token_urlsafe(24)  # kept: a new one would roll the workers
        want = desired.build_deployment(pool, spec, replicas, token)
        dname = want["metadata"]["name"]
        count = want["spec"]["replicas"]
        action = desired.plan(pool, want, have)
        events: list = []
        rejected = conflict = None
        fp = desired.fingerprint(want)
        if isinstance(action, (desired.Create, desired.Update)) and self.rejected.get(key, ("",))[0] == fp:
            rejected = self.rejected[key][1]  # refused before, unchanged since: do not send it again
        else:
            self.rejected.pop(key, None)
            try:
                match action:
                    case desired.Create(body=new_body):
                        made = api.create_deployment(namespace, new_body)
                        if made is None:
                            # One of that name exists and we do not watch it: not ours (no pool label).
                            have = api.get_deployment(namespace, dname)
                            if have is None:
                                raise Retry(f"Deployment {dname} appeared and went while creating it", 1)
                            self.foreign[key] = have
                            action = desired.plan(pool, want, have)
                            if not isinstance(action, desired.Conflict):
                                raise Retry(f"Deployment {dname} exists already; looking again", 1)
                            conflict = action.why
                        else:
                            have = made
                            world.set_deployment(made)
                            events.append(("Normal", R.CREATED, f"created Deployment {dname} with {count} worker(s)"))
                            log.info("pool %s/%s: created Deployment %s", namespace, name, dname)
                    case desired.Update(patch=patch, paths=paths):
                        assert have is not None  # an Update is planned against a Deployment
                        before = have["spec"].get("replicas")
                        if count < (before or 0) and spec.autoscale is None:  # the autoscaler drained its own
                            events += self.idle_first.before_scale_in(key, spec, before, count)
                        have = api.patch_deployment(namespace, dname, patch)
                        world.set_deployment(have)
                        self.foreign.pop(key, None)
                        if paths == ["spec.replicas"]:
                            events.append(("Normal", R.SCALED, f"scaled workers from {before} to {count}"))
                        else:
                            shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
                            msg = f"updated Deployment {dname} to the pool's spec ({shown})"
                            events.append(("Normal", R.UPDATED, msg))
                        log.info("pool %s/%s: updated Deployment %s: %s", namespace, name, dname, ", ".join(paths))
                    case desired.Conflict(why=why):
                        conflict = why
                    case desired.Noop():
                        pass
            except kube.Rejected as exc:
                verb = "create" if isinstance(action, desired.Create) else "update"
                rejected = R.rejected_message(dname, verb, exc.status, exc.message)
                self.rejected[key] = (fp, rejected)
        if conflict is None:
            events += self.budgets.sync(key, pool, spec)
        pods = world.pods(key) if conflict is None else []
        new = st.build_status(
            pool,
            have,
            pods,
            now=api.now(),
            spec=spec,
            rejected=rejected,
            conflict=conflict,
            replicas=count,
            autoscale=self.autoscaler.status(key) if spec.autoscale is not None else None,
        ).dump()
        events += transition_events(pool, new)
        events += [("Warning", reason, msg) for reason, msg in st.restart_events(pool, pods, spec)]
        self.publish(pool, new, events)

    def publish(self, pool: dict, new: dict, events: list) -> None:
        """Patch status only when it changed; post the events this pass found."""
        meta = pool["metadata"]
        old = {k: v for k, v in (pool.get("status") or {}).items() if k in STATUS_KEYS}
        if new != old:
            patch = dict(new)
            patch.update({k: None for k in old if k not in new})
            fresh = self.api.patch_pool_status(meta["namespace"], meta["name"], patch)
            if fresh:
                self.world.set_pool(fresh)
        for type_, reason, message in events:
            self.api.post_event(pool, type_, reason, message)

    def forget(self, key: tuple) -> None:
        """What the operator remembers of a pool that is gone, so memory does not grow with pools deleted."""
        for memory in (self.rejected, self.foreign, self.triggers):
            memory.pop(key, None)
        self.idle_first.forget(key)
        self.budgets.forget(key)
        self.queue.discard(key)
        self.autoscaler.forget(key)

    # -- what the watches tell ---------------------------------------------------------------
    def pool_event(self, event_type: str | None, body: Any) -> None:
        metrics.watch_event("daemonpools")
        if event_type == "DELETED":
            key = self.world.drop_pool(body)
            if self.world.pool(key) is None:  # not already replaced by a pool of the same name
                self.queue.forget(key)
                self.forget(key)
            return
        self.enqueue(self.world.set_pool(body), "pool")

    def child_event(self, kind: str, event_type: str | None, body: Any) -> None:
        """A Deployment or pod of a pool changed: remember it, and reconcile its pool soon (batched)."""
        metrics.watch_event(kind + "s")
        w = self.world
        drop, keep = {"deployment": (w.drop_deployment, w.set_deployment), "pod": (w.drop_pod, w.set_pod)}[kind]
        key = drop(body) if event_type == "DELETED" else keep(body)
        if key is not None:
            self.enqueue(key, kind, self.config.status_batch_seconds)

    def listed(self, plural: str, namespace: str | None, uids: set, version: Any) -> None:
        """A watch listed again: what the listing no longer has is gone (kopf sends no DELETED for it)."""
        for key in self.world.listed(plural, namespace, uids, version):
            log.info("pool %s/%s: a %s listing no longer has what the cache kept; dropped", *key, plural)
            if plural == "daemonpools":
                self.queue.forget(key)
                self.forget(key)
            else:
                self.enqueue(key, "resync")

    # -- the slow loop -----------------------------------------------------------------------
    def resync_once(self) -> None:
        """Every pool once more, from the cache; a foreign Deployment is looked at again (one GET each)."""
        for key in list(self.foreign):
            have = self.api.get_deployment(key[0], desired.deployment_name(key[1]))
            if have is None:
                self.foreign.pop(key, None)
            else:
                self.foreign[key] = have
        self.budgets.recheck()
        for key in self.world.pool_keys():
            self.enqueue(key, "resync")
        self.resynced_at = self.clock()

    def check_watches(self) -> None:
        """The census (census.py): the API server's pools against what the watch delivered."""
        self.census.check(self.api.pool_census(list(self.config.namespaces)), self.world.pool_versions())

    def resync_loop(self) -> None:
        """Resyncs every resync_seconds and watch censuses every census.CHECK_SECONDS, on one thread."""
        period = self.config.resync_seconds
        next_resync, next_check = self.clock() + period, self.clock() + CHECK_SECONDS
        while True:
            self.sleep(max(0.0, min(next_resync, next_check) - self.clock()))
            now = self.clock()
            for due, job, every in (
                (next_check, self.check_watches, CHECK_SECONDS),
                (next_resync, self.resync_once, period),
            ):
                if now < due:
                    continue
                try:
                    job()
                except (kube.Transient, kube.Rejected) as exc:
                    log.warning("%s incomplete, tried again in %gs: %s", job.__name__, every, exc)
                except Exception:  # noqa: BLE001 - the loop must outlive any one pass (a 404 once ended it)
                    metrics.LOOP_ERRORS.labels(job.__name__).inc()
                    log.exception("%s failed unexpectedly; tried again in %gs", job.__name__, every)
            if now >= next_check:
                next_check = now + CHECK_SECONDS
            if now >= next_resync:
                next_resync = now + period

    # -- start, lead, stop, health -----------------------------------------------------------
    def prefill(self) -> None:
        """Deployments, pods and budgets of every pool, once at start (three LISTs), for the first reconciles."""
        ns = list(self.config.namespaces)
        for d in self.api.list_labelled("deployments", model.POOL_LABEL, ns):
            self.world.set_deployment(d)
        for p in self.api.list_labelled("pods", model.POOL_LABEL, ns):
            self.world.set_pod(p)
        try:
            self.budgets.seed(self.api.list_labelled("poddisruptionbudgets", model.POOL_LABEL, ns))
        except kube.Rejected as exc:  # a role from an older chart: pools without spec.disruption need none
            log.warning("cannot list PodDisruptionBudgets (%s): upgrade the chart; spec.disruption waits", exc)

    def lead(self) -> None:
        """Now the leader (or alone): reconcile everything once, then keep up."""
        self.queue.start()
        self.resync_once()

    def start(self) -> None:
        """At the operator's start: metrics, the cache filled, the slow loop and the autoscaler, then lead
        (or stand by for the Lease)."""
        if self.config.metrics_port:
            metrics.build_info(
                worker_runtime.__version__, importlib.metadata.version("kopf"), platform.python_version()
            )
            metrics.serve(
                self.config.metrics_port,
                lambda: [self.world.pool(k) or {} for k in self.world.pool_keys()],
                leading=lambda: self.queue.started,
            )
        self.prefill()
        threading.Thread(target=self.resync_loop, name="daemonpool-resync", daemon=True).start()
        threading.Thread(target=self.autoscaler.run, name="daemonpool-autoscale", daemon=True).start()
        if self.config.leader_election:
            from .leader import Elector  # noqa: PLC0415 - only with leader election

            le = self.config.leader_election
            self.elector = Elector(le["namespace"], le["name"], le["identity"], on_started=self.lead)
            self.elector.start()
        else:
            self.lead()

    def release(self) -> None:
        """On a clean shutdown (SIGTERM: a rollout, a drain) hand the Lease over at once, not after 15 s."""
        if self.elector is not None:
            self.elector.release()

    def health(self) -> str:
        """One line when healthy; raises Unhealthy when queued work makes no progress (stuck), a watch went
        stale, or the resync loop stopped."""
        q = self.queue
        idle = self.clock() - q.last_progress
        if q.started and q.depth > 0 and idle > self.config.stuck_seconds:  # a standby's queue only waits
            raise Unhealthy(f"{q.depth} pool(s) queued and none reconciled for {idle:.0f}s: stuck")
        stale = self.census.health()
        if stale:
            raise Unhealthy(stale)
        since = self.clock() - self.resynced_at
        period = self.config.resync_seconds
        if since > 3 * period + kube.REQUEST_TIMEOUT[1]:
            raise Unhealthy(f"no resync for {since:.0f}s (period {period:g}s): stuck")
        return f"{q.depth} queued, {q.processed} reconciled"
