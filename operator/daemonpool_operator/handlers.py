"""kopf handlers: thin. Parse the pool -> build with desired.py -> apply through kube.py -> status from status.py.

Every trigger runs the same idempotent `reconcile` of one pool: a change of the
pool, an event of its Deployment or of one of its pods, an operator restart
(resume), and a slow resync timer as a safety net. A pass that finds the world
as it should be writes nothing.
"""

from __future__ import annotations

import os
import threading
import time

import kopf

from . import desired, kube, model
from . import status as st

# Seconds between resyncs of every pool: a safety net for missed watch events; reads only.
RESYNC_SECONDS = float(os.environ.get("DAEMONPOOL_RESYNC_SECONDS", "60"))
# Tries of a reconcile started by a Deployment or pod event (kopf does not retry event handlers).
EVENT_TRIES = 5

_locks: dict = {}
_locks_guard = threading.Lock()
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
    """Warnings for conditions that just turned bad (not on every pass)."""
    old, cur = _conditions(pool.get("status")), _conditions(new)
    out = []
    deg = cur.get("Degraded", {})
    prev = old.get("Degraded", {})
    if deg.get("status") == "True" and deg.get("reason") in ("InvalidSpec", "DeploymentConflict") and (
            prev.get("reason") != deg.get("reason") or prev.get("message") != deg.get("message")):
        out.append(("Warning", deg["reason"], deg["message"]))
    return out


def reconcile(namespace: str, name: str, logger, *, body: dict | None = None, from_change: bool = False) -> None:
    try:
        _reconcile(namespace, name, logger, body=body, from_change=from_change)
    except kube.NamespaceTerminating:
        logger.info(f"namespace {namespace} is being deleted; leaving pool {name} to go with it")


def _reconcile(namespace: str, name: str, logger, *, body: dict | None, from_change: bool) -> None:
    with _lock((namespace, name)):
        pool = kube.get_pool(namespace, name) if body is None else body
        if pool is None or pool["metadata"].get("deletionTimestamp"):
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
        events = []
        if action[0] == "create":
            have = kube.create_deployment(namespace, want)
            if have is None:
                raise kopf.TemporaryError(f"Deployment {dname} appeared while creating it; looking again", delay=1)
            events.append(("Normal", "Created", f"created Deployment {dname} with {spec.peers} worker(s)"))
            logger.info(f"created Deployment {dname}")
        elif action[0] == "update":
            _, patch, paths = action
            before = have["spec"].get("replicas")
            have = kube.patch_deployment(namespace, dname, patch)
            if paths == ["spec.replicas"]:
                events.append(("Normal", "Scaled", f"scaled workers from {before} to {spec.peers}"))
            else:
                shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
                events.append(("Normal", "Updated", f"updated Deployment {dname} to the pool's spec ({shown})"))
            logger.info(f"updated Deployment {dname}: {paths}")
        pods = kube.list_pods(namespace, desired.selector_string(name)) if action[0] != "conflict" else []
        new = st.build_status(pool, have, pods, now=kube.now(), spec=spec).dump()
        events += _transition_events(pool, new)
        events += [("Warning", reason, msg) for reason, msg in st.restart_events(pool, pods, spec)]
        _publish(pool, new, events)


def _from_event(namespace: str, name: str, logger) -> None:
    for attempt in range(EVENT_TRIES):
        try:
            reconcile(namespace, name, logger)
            return
        except kopf.TemporaryError as exc:
            if attempt + 1 == EVENT_TRIES:
                raise
            time.sleep(exc.delay or 1)


# -- triggers ----------------------------------------------------------------------------

@kopf.index(*RES)
def pools(namespace: str, name: str, **_) -> dict:
    """Which pools exist, so Deployment and pod events find theirs without an API call."""
    return {(namespace, name): True}


@kopf.on.resume(*RES)
@kopf.on.create(*RES)
@kopf.on.update(*RES, field="spec")
def pool_changed(namespace: str, name: str, body: kopf.Body, logger: kopf.Logger, **_) -> None:
    reconcile(namespace, name, logger, body=dict(body), from_change=True)


@kopf.timer(*RES, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(namespace: str, name: str, logger: kopf.Logger, **_) -> None:
    reconcile(namespace, name, logger)


@kopf.on.event("apps", "v1", "deployments")
def deployment_event(namespace: str, name: str, pools: kopf.Index, logger: kopf.Logger, **_) -> None:
    # Same name as a pool: ours (drift, deletion) or a conflicting one (report it).
    if (namespace, name) in pools:
        _from_event(namespace, name, logger)


@kopf.on.event("", "v1", "pods", labels={model.POOL_LABEL: kopf.PRESENT})
def pod_event(namespace: str, labels: kopf.Labels, pools: kopf.Index, logger: kopf.Logger, **_) -> None:
    pool = labels[model.POOL_LABEL]
    if (namespace, pool) in pools:
        _from_event(namespace, pool, logger)
