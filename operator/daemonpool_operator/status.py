"""world -> status: the pure status builder. Imports neither kopf nor kubernetes.

Status is rebuilt from what exists (the pool, its Deployment, its pods) on
every pass; only lastTransitionTime carries over, so an unchanged world gives
an identical status and the operator writes nothing.
"""

from __future__ import annotations

from . import desired
from .model import Condition, DaemonPoolSpec, DaemonPoolStatus

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"


def controlled_by(obj: dict | None, pool: dict) -> bool:
    """True when ``obj``'s controller ownerReference is this pool (by uid)."""
    return obj is not None and desired.controller_uid(obj) == pool["metadata"].get("uid")


def _worker_statuses(pods: list, worker: str) -> list:
    out = []
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            if cs.get("name") == worker:
                out.append((pod["metadata"]["name"], cs))
    return out


def _last_reason(cs: dict) -> str:
    term = (cs.get("lastState") or {}).get("terminated") or {}
    if not term:
        return ""
    bits = [term.get("reason") or "Terminated"]
    if term.get("exitCode") is not None:
        bits.append(f"exit code {term['exitCode']}")
    return ", ".join(bits)


def _restarting(statuses: list) -> list:
    """Pods whose worker restarted and is not back to ready, or is crash-looping."""
    bad = []
    for pod, cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") == "CrashLoopBackOff" or (cs.get("restartCount", 0) > 0 and not cs.get("ready")):
            bad.append(f"{pod}: {cs.get('restartCount', 0)} restart(s)"
                       + (f", last {_last_reason(cs)}" if _last_reason(cs) else "")
                       + (f", now {waiting['reason']}" if waiting.get("reason") else ""))
    return bad


def _cond(type_: str, ok: bool, reason: str, message: str, generation, now: str, previous: dict) -> Condition:
    status = "True" if ok else "False"
    old = previous.get(type_)
    ltt = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    return Condition(type=type_, status=status, reason=reason, message=message,
                     last_transition_time=ltt, observed_generation=generation)


def build_status(
    pool: dict,
    deployment: dict | None,
    pods: list,
    *,
    now: str,
    spec: DaemonPoolSpec | None = None,
    invalid: str | None = None,
) -> DaemonPoolStatus:
    """The pool's status from the world. ``now`` is an RFC 3339 time (injected: this module reads no clock)."""
    meta = pool["metadata"]
    name = meta["name"]
    gen = meta.get("generation")
    previous = {c.get("type"): c for c in (pool.get("status") or {}).get("conditions") or []}
    base = dict(selector=desired.selector_string(name), observed_generation=gen)

    def conds(ready, progressing, degraded):
        return [_cond(t, *v, gen, now, previous) for t, v in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded))]

    if invalid is not None or spec is None:
        msg = invalid or "spec is invalid"
        return DaemonPoolStatus(**base, conditions=conds(
            (False, "InvalidSpec", msg), (False, "InvalidSpec", "fix the spec; nothing is rolled out meanwhile"),
            (True, "InvalidSpec", msg)))
    dname = desired.deployment_name(name)
    if deployment is None:
        return DaemonPoolStatus(**base, deployment=dname, conditions=conds(
            (False, "DeploymentMissing", f"Deployment {dname} does not exist yet"),
            (True, "Creating", f"creating Deployment {dname}"),
            (False, "AsExpected", "")))
    if not controlled_by(deployment, pool):
        msg = (f"Deployment {dname} exists and is not controlled by this pool; the operator leaves it alone. "
               f"Delete or rename that Deployment, or give the pool another name")
        return DaemonPoolStatus(**base, deployment=dname, conditions=conds(
            (False, "DeploymentConflict", msg), (False, "DeploymentConflict", msg), (True, "DeploymentConflict", msg)))

    ds = deployment.get("status") or {}
    peers, ready, updated = ds.get("replicas", 0), ds.get("readyReplicas", 0), ds.get("updatedReplicas", 0)
    seen = ds.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
    want = spec.peers
    statuses = _worker_statuses(pods, spec.worker_container_name())
    restarts = sum(cs.get("restartCount", 0) for _, cs in statuses)

    converged = seen and peers == want and updated == want and ready >= want
    if converged:
        ready_c = (True, "AllPeersReady", f"{ready}/{want} workers ready")
        prog_c = (False, "Stable", f"{want} workers running the current template")
    else:
        if not seen:
            reason, msg = "RollingOut", "the Deployment controller has not seen the latest change yet"
        elif updated < min(want, peers) or (peers > want and updated < want):
            reason, msg = "RollingOut", f"{updated}/{want} workers updated to the current template"
        elif peers < want:
            reason, msg = "ScalingUp", f"{peers}/{want} workers exist"
        elif peers > want:
            reason, msg = "ScalingDown", f"{peers} workers exist, {want} wanted"
        else:
            reason, msg = "WorkersNotReady", f"{ready}/{want} workers ready"
        ready_c = (False, reason, f"{ready}/{want} workers ready; {msg}")
        prog_c = (True, reason, msg)
    bad = _restarting(statuses)
    degr_c = (True, "WorkersRestarting", "; ".join(bad) + ". Hung or crashing workers: see `kubectl describe pod` "
              "and the worker's logs (--previous)") if bad else (False, "AsExpected", f"{restarts} restart(s) in total")
    return DaemonPoolStatus(**base, deployment=dname, peers=peers, ready_peers=ready, updated_peers=updated,
                            restarts=restarts, conditions=conds(ready_c, prog_c, degr_c))


def restart_events(pool: dict, pods: list, spec: DaemonPoolSpec | None) -> list:
    """[(reason, message)] when the workers' restarts exceed ``status.restarts`` as last published.

    Compared with the published count, so a repeated pass reports nothing new.
    """
    if spec is None:
        return []
    prev = ((pool.get("status") or {}).get("restarts")) or 0
    statuses = _worker_statuses(pods, spec.worker_container_name())
    now = sum(cs.get("restartCount", 0) for _, cs in statuses)
    if now <= prev:
        return []
    detail = [f"{pod} ({cs.get('restartCount', 0)} restart(s)" + (f", last {_last_reason(cs)})" if _last_reason(cs) else ")")
              for pod, cs in statuses if cs.get("restartCount", 0)]
    return [("WorkerRestarted", f"{now - prev} worker restart(s): " + ", ".join(detail))]
