"""kopf handlers: thin. Watch events feed the cache and enqueue the pool; workers reconcile it.

Events only record what they saw (cache.World) and add the pool's key to a coalescing,
rate-limited work queue (workqueue.WorkQueue): a storm of pod events for one pool is one or
two reconciles, not one per event. A reconcile reads the pool, its Deployment and a summary of
its pods from the cache (no GET, no LIST), builds with desired.py, writes through kube.py only
what differs, and rebuilds status with status.py, patched only when it changed. One slow
resync loop re-enqueues every pool as a safety net. No kopf change handlers: kopf writes no
progress or diff-base annotations and no finalizer on pools (cleanup is ownerReferences' job).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time

import kopf

from . import autoscaler, cache, desired, kube, metrics, model, rollout, watchdog
from . import reasons as R
from . import status as st
from .idlefirst import IdleFirst
from .workqueue import Retry, WorkQueue

# Seconds between resyncs of every pool from the cache: a safety net for a missed event. No API reads.
RESYNC_SECONDS = float(os.environ.get("DAEMONPOOL_RESYNC_SECONDS", "60"))
# Pools reconciled at once: enough to keep up with bursts, few enough not to flood the API server.
WORKERS = int(os.environ.get("DAEMONPOOL_WORKERS", "4"))
# Seconds the queue may hold work without finishing any before the health endpoint fails: stuck.
STUCK_SECONDS = float(os.environ.get("DAEMONPOOL_STUCK_SECONDS", "180"))
# Pod and Deployment events wait this long before their pool is reconciled, so the events of a rollout
# (each pod turning Ready) make one status write, not one each. Pool changes go at once.
STATUS_BATCH_SECONDS = float(os.environ.get("DAEMONPOOL_STATUS_BATCH_SECONDS", "0.5"))
# A reconcile slower than this is logged: something (the API server, a lock) is slow.
SLOW_RECONCILE_SECONDS = 10.0
NAMESPACES: list = []  # namespaces watched (empty: all), set by the CLI

log = logging.getLogger("daemonpool")
WORLD = cache.World()
# (namespace, name) -> (fingerprint of the refused body, status message): the same body
# is not sent again until the pool (or operator) changes; the API server would refuse it again.
_rejected: dict = {}
# (namespace, name) -> a Deployment of the pool's name that is not the pool's (not watched: it lacks
# our labels). Looked at again once per resync, never written.
_foreign: dict = {}
_resync = {"last": time.monotonic()}


def _idle_first_pass(clock=time.monotonic) -> IdleFirst:
    """The idle-first pass of manual scale-ins, and its memory of pools whose workers could not be asked."""
    return IdleFirst(
        lambda key: WORLD.pods(key),
        lambda ns, pod, cost: kube.patch_pod_deletion_cost(ns, pod, cost),
        clock=clock,
        blind_seconds=float(os.environ.get("DAEMONPOOL_BLIND_SECONDS", "300")),
    )


IDLE_FIRST = _idle_first_pass()
# What last asked for each queued pool (pool, deployment, pod, resync): for the reconciles metric.
_triggers: dict = {}
# Set by the CLI: leader election (a Lease in this namespace) and the metrics port; None: off.
LEADER_ELECTION: dict | None = None
METRICS_PORT: int | None = None


def _enqueue(key: tuple, trigger: str, delay: float = 0.0) -> None:
    if not QUEUE.started:
        return  # a standby keeps no queue (it grew with every pool it saw); taking over reconciles them all
    _triggers.setdefault(key, trigger)
    QUEUE.add_after(key, delay)
    metrics.QUEUE_DEPTH.set(QUEUE.depth)


# The status keys the operator owns (as published, camelCase); kopf and others may add their own.
STATUS_KEYS = frozenset(f.alias or n for n, f in model.DaemonPoolStatus.model_fields.items())
RES = (model.GROUP, model.VERSION, model.PLURAL)


def _conditions(status: dict | None) -> dict:
    return {c["type"]: c for c in (status or {}).get("conditions") or []}


def _publish(pool: dict, new: dict, events: list) -> None:
    """Patch status only when it changed; post the events this pass found."""
    meta = pool["metadata"]
    old = {k: v for k, v in (pool.get("status") or {}).items() if k in STATUS_KEYS}
    if new != old:
        patch = dict(new)
        patch.update({k: None for k in old if k not in new})
        fresh = kube.patch_pool_status(meta["namespace"], meta["name"], patch)
        if fresh:
            WORLD.set_pool(fresh)
    for type_, reason, message in events:
        kube.post_event(pool, type_, reason, message)


def _transition_events(pool: dict, new: dict) -> list:
    """One Warning per new cause of Degraded, not one per pass.

    A new cause: Degraded turned True, or its reason changed, or (for causes in the
    spec) its message changed. Counts of pods in a message are not a new cause.
    Restarts have their own WorkerRestarted Events.
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
        "pool %s/%s is degraded: %s: %s", meta.get("namespace"), meta.get("name"), deg["reason"], deg["message"]
    )
    return [("Warning", deg["reason"], deg["message"])]


def _fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def reconcile(key: tuple) -> None:
    """One pass over one pool, from the cache. Raises Retry (or TemporaryError) to be tried again later."""
    t0 = time.monotonic()
    trigger, result = _triggers.pop(key, "resync"), "error"
    try:
        _reconcile(key)
        result = "ok"
    except kube.NamespaceTerminating:
        result = "ok"
        log.info("namespace %s is being deleted; leaving pool %s to go with it", *key)
    except kopf.TemporaryError as exc:
        result = "retry"
        raise Retry(str(exc), exc.delay) from None
    except Retry:
        result = "retry"
        raise
    finally:
        took = time.monotonic() - t0
        metrics.RECONCILES.labels(trigger, result).inc()
        metrics.RECONCILE_SECONDS.observe(took)
        metrics.QUEUE_DEPTH.set(QUEUE.depth)
        if took > SLOW_RECONCILE_SECONDS:
            why = "the API server or a lock is slow"
            log.warning("reconciling pool %s/%s took %.1fs (limit %gs): %s", *key, took, SLOW_RECONCILE_SECONDS, why)


def _reconcile(key: tuple) -> None:
    namespace, name = key
    pool = WORLD.pool(key)
    if pool is None or pool["metadata"].get("deletionTimestamp"):
        _forget(key)
        return
    kube.remove_finalizer(pool)  # left by versions that used kopf's per-pool timer; a no-op without one
    try:
        _, spec = model.parse_pool(pool)
    except model.InvalidPool as exc:
        new = st.build_status(pool, None, [], now=kube.now(), invalid=str(exc)).dump()
        _publish(pool, new, _transition_events(pool, new))
        return
    have = WORLD.deployment(key) or _foreign.get(key)
    replicas = token = None
    if spec.autoscale is not None:
        replicas = AUTOSCALER.replicas(key, spec, have)
        token = desired.drain_token(have) or secrets.token_urlsafe(24)  # kept: a new one would roll the workers
    want = desired.build_deployment(pool, spec, replicas, token)
    dname = want["metadata"]["name"]
    count = want["spec"]["replicas"]
    action = desired.plan(pool, want, have)
    events: list = []
    rejected = conflict = None
    fp = _fingerprint(want)
    if isinstance(action, (desired.Create, desired.Update)) and _rejected.get(key, ("",))[0] == fp:
        rejected = _rejected[key][1]  # refused before, unchanged since: do not send it again
    else:
        _rejected.pop(key, None)
        try:
            match action:
                case desired.Create(body=new_body):
                    made = kube.create_deployment(namespace, new_body)
                    if made is None:
                        # One of that name exists and we do not watch it: not ours (no pool label).
                        have = kube.get_deployment(namespace, dname)
                        if have is None:
                            raise Retry(f"Deployment {dname} appeared and went while creating it", 1)
                        _foreign[key] = have
                        action = desired.plan(pool, want, have)
                        if not isinstance(action, desired.Conflict):
                            raise Retry(f"Deployment {dname} exists already; looking again", 1)
                        conflict = action.why
                    else:
                        have = made
                        WORLD.set_deployment(made)
                        events.append(("Normal", R.CREATED, f"created Deployment {dname} with {count} worker(s)"))
                        log.info("pool %s/%s: created Deployment %s", namespace, name, dname)
                case desired.Update(patch=patch, paths=paths):
                    before = have["spec"].get("replicas")
                    if count < (before or 0) and spec.autoscale is None:  # the autoscaler drained its own
                        events += IDLE_FIRST.before_scale_in(key, spec, before, count)
                    have = kube.patch_deployment(namespace, dname, patch)
                    WORLD.set_deployment(have)
                    _foreign.pop(key, None)
                    if paths == ["spec.replicas"]:
                        events.append(("Normal", R.SCALED, f"scaled workers from {before} to {count}"))
                    else:
                        shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
                        events.append(("Normal", R.UPDATED, f"updated Deployment {dname} to the pool's spec ({shown})"))
                    log.info("pool %s/%s: updated Deployment %s: %s", namespace, name, dname, ", ".join(paths))
                case desired.Conflict(why=why):
                    conflict = why
                case desired.Noop():
                    pass
        except kube.Rejected as exc:
            verb = "create" if isinstance(action, desired.Create) else "update"
            rejected = R.rejected_message(dname, verb, exc.status, exc.message)
            _rejected[key] = (fp, rejected)
    pods = WORLD.pods(key) if conflict is None else []
    new = st.build_status(
        pool,
        have,
        pods,
        now=kube.now(),
        spec=spec,
        rejected=rejected,
        conflict=conflict,
        replicas=count,
        autoscale=AUTOSCALER.status(key) if spec.autoscale is not None else None,
    ).dump()
    events += _transition_events(pool, new)
    events += [("Warning", reason, msg) for reason, msg in st.restart_events(pool, pods, spec)]
    _publish(pool, new, events)


def _forget(key: tuple) -> None:
    """What the operator remembers of a pool that is gone, so memory does not grow with pools deleted."""
    for memory in (_rejected, _foreign, _triggers):
        memory.pop(key, None)
    IDLE_FIRST.forget(key)
    QUEUE.discard(key)
    AUTOSCALER.forget(key)


def _on_error(key, exc: BaseException) -> None:
    log.warning("reconciling pool %s/%s failed, retried with backoff: %s: %s", *key, type(exc).__name__, exc)


QUEUE = WorkQueue(reconcile, workers=WORKERS, on_error=_on_error)
AUTOSCALER = autoscaler.Autoscaler(  # sizes autoscaled pools while this replica leads (its queue runs)
    WORLD,
    enqueue=lambda key: _enqueue(key, "autoscale"),
    patch_cost=kube.patch_pod_deletion_cost,
    post_event=kube.post_event,
    now=kube.now,
    leading=lambda: QUEUE.started,
    hpas=lambda: kube.hpas_on_pools(NAMESPACES),
    secret=lambda ns, name, key: kube.secret_value(ns, name, key),
    hold=lambda ns, name, on: kube.patch_deployment(ns, name, rollout.hold_patch(on)),
)


def resync_once() -> None:
    """Every pool once more, from the cache; a foreign Deployment is looked at again (one GET each)."""
    for key in list(_foreign):
        have = kube.get_deployment(key[0], desired.deployment_name(key[1]))
        if have is None:
            _foreign.pop(key, None)
        else:
            _foreign[key] = have
    for key in WORLD.pool_keys():
        _enqueue(key, "resync")
    _resync["last"] = time.monotonic()


def check_watches() -> None:
    """The census (watchdog.py): the API server's pools against what the watch delivered."""
    watchdog.census(kube.pool_census(NAMESPACES), WORLD.pool_versions())


def _resync_loop() -> None:
    """Resyncs every RESYNC_SECONDS and watch censuses every watchdog.CHECK_SECONDS, on one thread."""
    next_resync, next_check = time.monotonic() + RESYNC_SECONDS, time.monotonic() + watchdog.CHECK_SECONDS
    while True:
        time.sleep(max(0.0, min(next_resync, next_check) - time.monotonic()))
        now = time.monotonic()
        for due, job, period in (
            (next_check, check_watches, watchdog.CHECK_SECONDS),
            (next_resync, resync_once, RESYNC_SECONDS),
        ):
            if now < due:
                continue
            try:
                job()
            except (kopf.TemporaryError, kube.Rejected) as exc:
                log.warning("%s incomplete, tried again in %gs: %s", job.__name__, period, exc)
            except Exception:  # noqa: BLE001 - the loop must outlive any one pass (a 404 once ended it)
                metrics.LOOP_ERRORS.labels(job.__name__).inc()
                log.exception("%s failed unexpectedly; tried again in %gs", job.__name__, period)
        if now >= next_check:
            next_check = now + watchdog.CHECK_SECONDS
        if now >= next_resync:
            next_resync = now + RESYNC_SECONDS


def prefill() -> None:
    """Deployments and pods of every pool, once at start (two LISTs), so the first reconciles see them."""
    for d in kube.list_labelled("deployments", model.POOL_LABEL, NAMESPACES):
        WORLD.set_deployment(d)
    for p in kube.list_labelled("pods", model.POOL_LABEL, NAMESPACES):
        WORLD.set_pod(p)


# -- triggers ----------------------------------------------------------------------------


def _lead() -> None:
    """Now the leader (or alone): reconcile everything once, then keep up."""
    QUEUE.start()
    resync_once()


@kopf.on.startup()
async def watch_guard(**_) -> None:
    """Before the first watch: keepalive on kopf's connections, and watches the census can restart."""
    watchdog.install(on_listed=_listed)


def _listed(plural: str, namespace: str | None, uids: set, version) -> None:
    """A watch listed again: what the listing no longer has is gone (kopf sends no DELETED for it)."""
    for key in WORLD.listed(plural, namespace, uids, version):
        log.info("pool %s/%s: a %s listing no longer has what the cache kept; dropped", *key, plural)
        if plural == "daemonpools":
            QUEUE.forget(key)
            _forget(key)
        else:
            _enqueue(key, "resync")


@kopf.on.startup()
def start_workers(**_) -> None:
    if METRICS_PORT:
        metrics.serve(METRICS_PORT, lambda: [WORLD.pool(k) or {} for k in WORLD.pool_keys()])
    prefill()
    threading.Thread(target=_resync_loop, name="daemonpool-resync", daemon=True).start()
    threading.Thread(target=AUTOSCALER.run, name="daemonpool-autoscale", daemon=True).start()
    if LEADER_ELECTION:
        from .leader import Elector  # noqa: PLC0415 - only with leader election

        _elector["e"] = Elector(on_started=_lead, **LEADER_ELECTION)
        _elector["e"].start()
    else:
        _lead()


_elector: dict = {}


@kopf.on.cleanup()
def release_lease(**_) -> None:
    """On a clean shutdown (SIGTERM: a rollout, a drain) hand the Lease over at once, not after 15 s."""
    e = _elector.get("e")
    if e is not None:
        e.release()


@kopf.on.probe(id="queue")
def queue_health(**_) -> str:
    """Fails the health endpoint (and so the pod's liveness) when queued work makes no progress: stuck."""
    idle = time.monotonic() - QUEUE.last_progress
    if QUEUE.started and QUEUE.depth > 0 and idle > STUCK_SECONDS:  # a standby's queue only waits
        raise kopf.PermanentError(f"{QUEUE.depth} pool(s) queued and none reconciled for {idle:.0f}s: stuck")
    stale = watchdog.health()
    if stale:
        raise kopf.PermanentError(stale)
    since = time.monotonic() - _resync["last"]
    if since > 3 * RESYNC_SECONDS + kube.REQUEST_TIMEOUT[1]:
        raise kopf.PermanentError(f"no resync for {since:.0f}s (period {RESYNC_SECONDS:g}s): stuck")
    return f"{QUEUE.depth} queued, {QUEUE.processed} reconciled"


@kopf.on.event(*RES)
async def pool_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002 - kopf's argument name
    metrics.watch_event("daemonpools")
    if type == "DELETED":
        key = WORLD.drop_pool(body)
        if WORLD.pool(key) is None:  # not already replaced by a pool of the same name
            QUEUE.forget(key)
            _forget(key)
        return
    _enqueue(WORLD.set_pool(body), "pool")


def _child_event(kind: str, event_type: str | None, body) -> None:
    """A Deployment or pod of a pool changed: remember it, and reconcile its pool soon (batched)."""
    metrics.watch_event(kind + "s")
    drop, keep = {"deployment": (WORLD.drop_deployment, WORLD.set_deployment), "pod": (WORLD.drop_pod, WORLD.set_pod)}[
        kind
    ]
    key = drop(body) if event_type == "DELETED" else keep(body)
    if key is not None:
        _enqueue(key, kind, STATUS_BATCH_SECONDS)


@kopf.on.event("apps", "v1", "deployments")
async def deployment_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002
    _child_event("deployment", type, body)


@kopf.on.event("", "v1", "pods")
async def pod_event(type: str | None, body: kopf.Body, **_) -> None:  # noqa: A002
    _child_event("pod", type, body)
