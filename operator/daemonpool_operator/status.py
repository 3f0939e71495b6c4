"""world -> status: the pure status builder. Imports neither kopf nor kubernetes.

Status is rebuilt from what exists (the pool, its Deployment, its pods) on
every pass; only lastTransitionTime carries over, so an unchanged world gives
an identical status and the operator writes nothing.
"""

from __future__ import annotations

from . import desired, rollout
from . import reasons as R
from .model import Condition, DaemonPoolSpec, DaemonPoolStatus

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"

# Waiting reasons of a container that cannot start, by the Degraded reason they give.
_PULL = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
_CONFIG = {
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreCreateHookError",
    "PostStartHookError",
}
_FIXES = {
    R.IMAGE_PULL_FAILED: "Check the image name and tag, the registry credentials (imagePullSecrets) and imagePullPolicy",
    R.CONTAINER_CONFIG_ERROR: "Create the missing Secret or ConfigMap, or fix the container's command and settings",
    R.UNSCHEDULABLE: "Lower the requests, or fix nodeSelector, affinity and tolerations so a node fits",
    R.OOM_KILLED: "Raise the memory limit, or make the worker use less",
}
# Causes that stop a rollout or scale-up from ever finishing on its own (Progressing=False while they hold).
# OOMKilled and restarts are not among them: those workers start, and may yet become ready.
_BLOCKING = {R.PODS_REFUSED, R.UNSCHEDULABLE, R.IMAGE_PULL_FAILED, R.CONTAINER_CONFIG_ERROR, R.ROLLOUT_STUCK}
# The order in which causes are reported when several hold: the one to fix first.
_PRIORITY = [R.PODS_REFUSED, R.UNSCHEDULABLE, R.IMAGE_PULL_FAILED, R.CONTAINER_CONFIG_ERROR, R.OOM_KILLED]


def _all_statuses(pod: dict) -> list:
    st = pod.get("status") or {}
    return (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or [])


def pod_problems(pods: list) -> list:
    """[(reason, message)] for pods that cannot start or keep being killed: counted, with the first pod's words."""
    found: dict = {}
    for pod in sorted(pods, key=lambda p: p.get("metadata", {}).get("name", "")):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = meta.get("name", "?")
        hits = []
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                hits.append((R.UNSCHEDULABLE, c.get("message") or "no node fits"))
        for cs in _all_statuses(pod):
            waiting = (cs.get("state") or {}).get("waiting") or {}
            why = waiting.get("reason")
            last = (cs.get("lastState") or {}).get("terminated") or {}
            if why in _PULL:
                # Not the kubelet's words: ErrImagePull and ImagePullBackOff alternate, and a
                # message that flips would be a status write on every back-off.
                hint = {
                    "ErrImageNeverPull": " (imagePullPolicy is Never and the image is not on the node)",
                    "InvalidImageName": " (not a valid image name)",
                }.get(why, "")
                hits.append(
                    (
                        R.IMAGE_PULL_FAILED,
                        f"container {cs.get('name')}: image {cs.get('image')!r} cannot be pulled{hint}",
                    )
                )
            elif why in _CONFIG:
                hits.append(
                    (
                        R.CONTAINER_CONFIG_ERROR,
                        f"container {cs.get('name')}: {why}: {waiting.get('message') or ''}".rstrip(": "),
                    )
                )
            elif last.get("reason") == "OOMKilled" and (why == "CrashLoopBackOff" or cs.get("restartCount", 0) > 1):
                hits.append(
                    (R.OOM_KILLED, f"container {cs.get('name')} was OOMKilled ({cs.get('restartCount', 0)} restart(s))")
                )
        for reason, msg in hits:
            if reason in found:
                found[reason][0] += 1
            else:
                found[reason] = [1, name, msg]
            break  # one cause per pod: the first that stops it
    return [(r, R.counted(found[r][0], _WHAT[r], found[r][1], found[r][2], _FIXES[r])) for r in _PRIORITY if r in found]


_WHAT = {
    R.UNSCHEDULABLE: "cannot be scheduled",
    R.IMAGE_PULL_FAILED: "cannot pull their image",
    R.CONTAINER_CONFIG_ERROR: "cannot create a container",
    R.OOM_KILLED: "keep being killed for memory",
}


def deployment_problems(deployment: dict) -> list:
    """[(reason, message)] from the Deployment's own conditions (FailedCreate, progress deadline)."""
    out = []
    for c in (deployment.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            out.append(
                (
                    R.PODS_REFUSED,
                    f"the ReplicaSet cannot create worker pods ({c.get('reason')}): {c.get('message')}. "
                    "Raise the ResourceQuota or LimitRange, or make the template pass the "
                    "namespace's PodSecurity level",
                )
            )
        if (
            c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == "ProgressDeadlineExceeded"
        ):
            out.append(
                (
                    R.ROLLOUT_STUCK,
                    f"{c.get('message')}. The other Degraded causes, `kubectl describe deploy "
                    f"{deployment.get('metadata', {}).get('name')}` and its pods say why",
                )
            )
    return out


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
    text = ", ".join(bits)
    message = " ".join(str(term.get("message") or "").split())[:200]
    return f"{text} ({message})" if message else text


def _recycled(cs: dict) -> bool:
    """The worker ended on purpose (spec.recycle): exit 0 and the runtime's "recycled ..." message."""
    term = (cs.get("lastState") or {}).get("terminated") or {}
    return term.get("exitCode") == 0 and str(term.get("message") or "").startswith("recycled")


def _restarting(statuses: list) -> list:
    """Pods whose worker restarted and is not back to ready, or is crash-looping."""
    bad = []
    for pod, cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if _recycled(cs):
            if waiting.get("reason") == "CrashLoopBackOff":
                bad.append(
                    f"{pod}: recycles faster than the kubelet's restart back-off allows (last {_last_reason(cs)}); "
                    "raise spec.recycle.maxItems or maxRssMiB"
                )
            continue
        if waiting.get("reason") == "CrashLoopBackOff" or (cs.get("restartCount", 0) > 0 and not cs.get("ready")):
            bad.append(
                f"{pod}: {cs.get('restartCount', 0)} restart(s)"
                + (f", last {_last_reason(cs)}" if _last_reason(cs) else "")
                + (f", now {waiting['reason']}" if waiting.get("reason") else "")
            )
    return bad


def _cond(type_: str, ok: bool, reason: str, message: str, generation, now: str, previous: dict) -> Condition:
    status = "True" if ok else "False"
    old = previous.get(type_)
    ltt = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    return Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=ltt,
        observed_generation=generation,
    )


def build_status(
    pool: dict,
    deployment: dict | None,
    pods: list,
    *,
    now: str,
    spec: DaemonPoolSpec | None = None,
    invalid: str | None = None,
    rejected: str | None = None,
    conflict: str | None = None,
    replicas: int | None = None,
    autoscale: dict | None = None,
) -> DaemonPoolStatus:
    """The pool's status from the world. ``now`` is an RFC 3339 time (injected: this module reads no clock)."""
    meta = pool["metadata"]
    name = meta["name"]
    gen = meta.get("generation")
    previous = {c.get("type"): c for c in (pool.get("status") or {}).get("conditions") or []}
    base = dict(selector=desired.selector_string(name), observed_generation=gen)

    def conds(ready, progressing, degraded):
        return [
            _cond(t, v[0], v[1], v[2], gen, now, previous)
            for t, v in ((READY, ready), (PROGRESSING, progressing), (DEGRADED, degraded))
        ]

    if invalid is not None or spec is None:
        msg = invalid or "spec is invalid"
        return DaemonPoolStatus(
            **base,
            conditions=conds(
                (False, R.INVALID_SPEC, msg),
                (False, R.INVALID_SPEC, "fix the spec; nothing is rolled out meanwhile"),
                (True, R.INVALID_SPEC, msg),
            ),
            problem=R.INVALID_SPEC,
        )
    dname = desired.deployment_name(name)
    if rejected is not None and deployment is None:
        return DaemonPoolStatus(
            **base,
            deployment=dname,
            conditions=conds(
                (False, R.DEPLOYMENT_REJECTED, rejected),
                (False, R.DEPLOYMENT_REJECTED, "fix the template; nothing is rolled out meanwhile"),
                (True, R.DEPLOYMENT_REJECTED, rejected),
            ),
            problem=R.DEPLOYMENT_REJECTED,
        )
    if deployment is None:
        return DaemonPoolStatus(
            **base,
            deployment=dname,
            conditions=conds(
                (False, R.DEPLOYMENT_MISSING, f"Deployment {dname} does not exist yet"),
                (True, R.CREATING, f"creating Deployment {dname}"),
                (False, R.AS_EXPECTED, ""),
            ),
        )
    if not controlled_by(deployment, pool):
        msg = R.conflict_message(dname, conflict or "no owner reference to this pool")
        return DaemonPoolStatus(
            **base,
            deployment=dname,
            conditions=conds(
                (False, R.DEPLOYMENT_CONFLICT, msg),
                (False, R.DEPLOYMENT_CONFLICT, msg),
                (True, R.DEPLOYMENT_CONFLICT, msg),
            ),
            problem=R.DEPLOYMENT_CONFLICT,
        )

    ds = deployment.get("status") or {}
    peers, ready, updated = ds.get("replicas", 0), ds.get("readyReplicas", 0), ds.get("updatedReplicas", 0)
    seen = ds.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
    want = spec.peers if replicas is None else replicas  # the autoscaler's count for autoscaled pools
    statuses = _worker_statuses(pods, spec.worker_container_name())
    restarts = sum(cs.get("restartCount", 0) for _, cs in statuses)
    recycled = sum(1 for _, cs in statuses if _recycled(cs))

    converged = seen and peers == want and updated == want and ready >= want
    if converged:
        ready_c = (True, R.ALL_PEERS_READY, f"{ready}/{want} workers ready")
        prog_c = (False, R.STABLE, f"{want} workers running the current template")
    else:
        if not seen:
            reason, msg = R.ROLLING_OUT, "the Deployment controller has not seen the latest change yet"
        elif updated < min(want, peers) or (peers > want and updated < want):
            reason, msg = R.ROLLING_OUT, f"{updated}/{want} workers updated to the current template"
            if rollout.held(deployment):
                msg += "; paused until the busy old workers finish their items (status.autoscale says more)"
        elif peers < want:
            reason, msg = R.SCALING_UP, f"{peers}/{want} workers exist"
        elif peers > want:
            reason, msg = R.SCALING_DOWN, f"{peers} workers exist, {want} wanted"
        else:
            reason, msg = R.WORKERS_NOT_READY, ""
        counted = f"{ready}/{want} workers ready"
        ready_c = (False, reason, f"{counted}; {msg}" if msg else counted)
        prog_c = (True, reason, msg or counted)
    bad = _restarting(statuses)
    problems = deployment_problems(deployment) + pod_problems(pods)
    problems.sort(key=lambda p: (_PRIORITY + [R.ROLLOUT_STUCK]).index(p[0]))
    blocked = [p for p in problems if p[0] in _BLOCKING]
    if not converged and (blocked or rejected is not None):
        # Nothing can progress until the cause is fixed: saying Progressing=True would tell tools
        # (kstatus, Argo CD, `kubectl wait`) to keep waiting for a rollout that cannot finish.
        cause = R.DEPLOYMENT_REJECTED if rejected is not None else blocked[0][0]
        prog_c = (False, cause, f"{prog_c[2]}; blocked until the {cause} cause is fixed (Degraded says how)")
    if rejected is not None:
        degr_c = (True, R.DEPLOYMENT_REJECTED, rejected)
    elif problems:
        degr_c = (True, *problems[0])
    elif bad:
        degr_c = (
            True,
            R.WORKERS_RESTARTING,
            "; ".join(bad) + ". Hung or crashing workers: see `kubectl describe pod` "
            "and the worker's logs (--previous)",
        )
    else:
        by_recycling = f" ({recycled} worker(s) last recycled)" if recycled else ""
        degr_c = (False, R.AS_EXPECTED, f"{restarts} restart(s) in total{by_recycling}")
    return DaemonPoolStatus(
        **base,
        deployment=dname,
        problem=degr_c[1] if degr_c[0] else "",
        peers=peers,
        ready_peers=ready,
        updated_peers=updated,
        restarts=restarts,
        recycled=recycled,
        autoscale=autoscale,
        conditions=conds(ready_c, prog_c, degr_c),
    )


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
    detail = [
        f"{pod} ({cs.get('restartCount', 0)} restart(s)" + (f", last {_last_reason(cs)})" if _last_reason(cs) else ")")
        for pod, cs in statuses
        if cs.get("restartCount", 0)
    ]
    return [(R.WORKER_RESTARTED, f"{now - prev} worker restart(s): " + ", ".join(detail))]
