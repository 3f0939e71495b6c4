"""kopf handlers: thin. Parse the pool -> build with desired.py -> apply through kube.py -> status from status.py.

Every trigger runs the same idempotent `reconcile` of one pool: a change of the
pool, an event of its Deployment or of one of its pods, an operator restart
(resume), and one slow resync loop over all pools as a safety net (no
finalizer: cleanup is the ownerReferences' job). A pass that finds the world
as it should be writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time

import kopf

from . import desired, kube, model
from . import reasons as R
from . import status as st

# Seconds between resyncs of every pool: a safety net for missed watch events; reads only.
# One loop for all pools, not kopf's per-object timer: that timer forces a finalizer
# on every pool (kopf issue 1074), and deletes would hang while the operator is away.
RESYNC_SECONDS = float(os.environ.get("DAEMONPOOL_RESYNC_SECONDS", "60"))
# Resyncs that may be missed before the health endpoint fails: the operator is stuck.
STUCK_AFTER_RESYNCS = 3
# A reconcile slower than this is logged: something (the API server, a lock) is slow.
SLOW_RECONCILE_SECONDS = 10.0
# Tries of a reconcile started by a Deployment or pod event (kopf does not retry event handlers).
EVENT_TRIES = 5
# Namespaces watched (empty: all), set by the CLI for the resync's LIST.
NAMESPACES: list = []

log = logging.getLogger("daemonpool")
_locks: dict = {}
_locks_guard = threading.Lock()
# (namespace, name) -> (fingerprint of the refused body, status message): the same body
# is not sent again until the pool (or operator) changes; the API server would refuse it again.
_rejected: dict = {}
_progress = {"sweep": time.monotonic()}
RES = (model.GROUP, model.VERSION, model.PLURAL)
# The status keys the operator owns (as published, camelCase); kopf and others may add their own.
STATUS_KEYS = frozenset(f.alias or n for n, f in model.DaemonPoolStatus.model_fields.items())


def _lock(key) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _conditions(status: dict | None) -> dict:
    return {c["type"]: c for c in (status or {}).get("conditions") or []}


def _publish(pool: dict, new: dict, events: list) -> None:
    """Patch status only when it changed; post the events this pass found."""
    meta = pool["metadata"]
    old = {k: v for k, v in (pool.get("status") or {}).items() if k in STATUS_KEYS}
    if new != old:
        patch = dict(new)
        patch.update({k: None for k in old if k not in new})
        kube.patch_pool_status(meta["namespace"], meta["name"], patch)
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


def reconcile(namespace: str, name: str, *, body: dict | None = None, from_change: bool = False) -> None:
    t0 = time.monotonic()
    try:
        _reconcile(namespace, name, body=body, from_change=from_change)
    except kube.NamespaceTerminating:
        log.info("namespace %s is being deleted; leaving pool %s to go with it", namespace, name)
    finally:
        took = time.monotonic() - t0
        if took > SLOW_RECONCILE_SECONDS:
            log.warning(
                "reconciling pool %s/%s took %.1fs (limit %gs): the API server or a lock is slow",
                namespace,
                name,
                took,
                SLOW_RECONCILE_SECONDS,
            )


def _reconcile(namespace: str, name: str, *, body: dict | None, from_change: bool) -> None:
    with _lock((namespace, name)):
        pool = kube.get_pool(namespace, name) if body is None else body
        if pool is None or pool["metadata"].get("deletionTimestamp"):
            _rejected.pop((namespace, name), None)
            return
        try:
            _, spec = model.parse_pool(pool)
        except model.InvalidPool as exc:
            new = st.build_status(pool, None, [], now=kube.now(), invalid=str(exc)).dump()
            _publish(pool, new, _transition_events(pool, new))
            if from_change:
                raise kopf.PermanentError(f"invalid spec: {exc}") from None
            return
        want = desired.build_deployment(pool, spec)
        dname = want["metadata"]["name"]
        have = kube.get_deployment(namespace, dname)
        action = desired.plan(pool, want, have)
        events: list = []
        rejected = conflict = None
        key, fp = (namespace, name), _fingerprint(want)
        if isinstance(action, (desired.Create, desired.Update)) and _rejected.get(key, ("",))[0] == fp:
            rejected = _rejected[key][1]  # refused before, unchanged since: do not send it again
        else:
            _rejected.pop(key, None)
            try:
                match action:
                    case desired.Create(body=new_body):
                        have = kube.create_deployment(namespace, new_body)
                        if have is None:
                            raise kopf.TemporaryError(
                                f"Deployment {dname} appeared while creating it; looking again", delay=1
                            )
                        events.append(("Normal", R.CREATED, f"created Deployment {dname} with {spec.peers} worker(s)"))
                        log.info("pool %s/%s: created Deployment %s", namespace, name, dname)
                    case desired.Update(patch=patch, paths=paths):
                        before = have["spec"].get("replicas")
                        have = kube.patch_deployment(namespace, dname, patch)
                        if paths == ["spec.replicas"]:
                            events.append(("Normal", R.SCALED, f"scaled workers from {before} to {spec.peers}"))
                        else:
                            shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
                            events.append(
                                ("Normal", R.UPDATED, f"updated Deployment {dname} to the pool's spec ({shown})")
                            )
                        log.info("pool %s/%s: updated Deployment %s: %s", namespace, name, dname, ", ".join(paths))
                    case desired.Conflict(why=why):
                        conflict = why
                    case desired.Noop():
                        pass
            except kube.Rejected as exc:
                verb = "create" if isinstance(action, desired.Create) else "update"
                rejected = R.rejected_message(dname, verb, exc.status, exc.message)
                _rejected[key] = (fp, rejected)
        pods = kube.list_pods(namespace, desired.selector_string(name)) if conflict is None else []
        new = st.build_status(pool, have, pods, now=kube.now(), spec=spec, rejected=rejected, conflict=conflict).dump()
        events += _transition_events(pool, new)
        events += [("Warning", reason, msg) for reason, msg in st.restart_events(pool, pods, spec)]
        _publish(pool, new, events)


def _from_event(namespace: str, name: str) -> None:
    for attempt in range(EVENT_TRIES):
        try:
            reconcile(namespace, name)
            return
        except kopf.TemporaryError as exc:
            if attempt + 1 == EVENT_TRIES:
                raise
            time.sleep(exc.delay or 1)


def resync_once() -> None:
    """Reconcile every pool once from one LIST (reads only when nothing changed)."""
    for pool in kube.list_pools(NAMESPACES):
        meta = pool["metadata"]
        try:
            reconcile(meta["namespace"], meta["name"], body=pool)
        except (kopf.TemporaryError, kube.Rejected) as exc:
            # The next trigger or sweep tries again; one pool must not stop the sweep of the others.
            log.warning("resync of pool %s/%s failed, retried later: %s", meta["namespace"], meta["name"], exc)
    _progress["sweep"] = time.monotonic()


def _resync_loop() -> None:
    while True:
        time.sleep(RESYNC_SECONDS)
        try:
            resync_once()
        except (kopf.TemporaryError, kube.Rejected) as exc:
            log.warning("resync could not list pools, retried in %gs: %s", RESYNC_SECONDS, exc)


# -- triggers ----------------------------------------------------------------------------


@kopf.on.startup()
def start_resync(**_) -> None:
    threading.Thread(target=_resync_loop, name="daemonpool-resync", daemon=True).start()


@kopf.on.probe(id="resync")
def resync_health(**_) -> str:
    """Fails the health endpoint (and so the pod's liveness) when no resync finished for several periods."""
    age = time.monotonic() - _progress["sweep"]
    if age > STUCK_AFTER_RESYNCS * RESYNC_SECONDS + kube.REQUEST_TIMEOUT[1]:
        raise kopf.PermanentError(f"no resync finished for {age:.0f}s (period {RESYNC_SECONDS:g}s): stuck")
    return f"last resync {age:.0f}s ago"


@kopf.index(*RES)
def pools(namespace: str, name: str, **_) -> dict:
    """Which pools exist, so Deployment and pod events find theirs without an API call."""
    return {(namespace, name): True}


@kopf.on.resume(*RES)
@kopf.on.create(*RES)
@kopf.on.update(*RES, field="spec")
def pool_changed(namespace: str, name: str, body: kopf.Body, **_) -> None:
    pool = dict(body)
    kube.remove_finalizer(pool)  # left by versions that used kopf's per-pool timer
    reconcile(namespace, name, body=pool, from_change=True)


@kopf.on.event("apps", "v1", "deployments")
def deployment_event(namespace: str, name: str, pools: kopf.Index, **_) -> None:
    # Same name as a pool: ours (drift, deletion) or a conflicting one (report it).
    if (namespace, name) in pools:
        _from_event(namespace, name)


@kopf.on.event("", "v1", "pods", labels={model.POOL_LABEL: kopf.PRESENT})
def pod_event(namespace: str, labels: kopf.Labels, pools: kopf.Index, **_) -> None:
    pool = labels[model.POOL_LABEL]
    if (namespace, pool) in pools:
        _from_event(namespace, pool)
