"""spec -> Deployment: the pure builder. Imports neither kopf nor kubernetes.

Probe timing (T = timeoutSeconds, P = the probe period):

- The worker beats at least every min(1 s, T/10), so a healthy worker's
  heartbeat is at most about a second old.
- The liveness probe fails when the heartbeat is older than T - P, and the
  kubelet acts after 2 failures in a row. A hung worker's first failing probe
  comes within P after its beat turns T - P old, the second P later: the kill
  happens between T and T + P after the last beat, never before T. One slow
  or timed-out probe on a busy node is forgiven by the second.
- A liveness kill gives the worker 2 s (probe-level terminationGracePeriodSeconds) instead of the pool's
  grace period: a hung worker will not finish anything, so it is restarted within T + P + 2 s.
- Readiness uses the same limit, runs every min(P, 2) s and fails at once
  (threshold 1), so an unready worker shows promptly; startup probes every
  second for startupTimeoutSeconds, so a new worker is Ready within a few
  seconds of calling start().
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass

from worker_runtime import contract

from . import model, rollout
from .model import DaemonPoolSpec
from .model_policies import RollingUpdate
from .quantities import canonical_quantities, quantity

RUN_DIR = contract.DEFAULT_RUN_DIR
RUN_VOLUME = "daemonpool-run"
# The cheap sh probe installed with worker_runtime (see worker_runtime/worker-runtime-probe).
PROBE_COMMAND = contract.PROBE_COMMAND
LIVENESS_FAILURES, HUNG_KILL_GRACE_SECONDS = 2, 2
MANAGED_BY = "daemonpool-operator"

RESTRICTED_POD_SECURITY = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def deployment_name(pool_name: str) -> str:
    """The Deployment has the pool's name: deterministic, and what `kubectl get deploy` users expect."""
    return pool_name


def selector_labels(pool_name: str) -> dict:
    """Never changes for a pool across operator versions: a Deployment's selector is immutable."""
    return {model.POOL_LABEL: pool_name}


def selector_string(pool_name: str) -> str:  # the scale subresource's labelSelector
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool_name).items())


def labels(pool_name: str) -> dict:
    return {
        "app.kubernetes.io/name": "daemonpool-worker",
        "app.kubernetes.io/instance": pool_name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(pool_name),
    }


def owner_reference(pool: dict) -> dict:
    meta = pool["metadata"]
    return {
        "apiVersion": model.API_VERSION,
        "kind": model.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _defaults(user: dict | None, defaults: dict) -> dict:
    """Restricted-profile defaults where the user is silent; the user wins where they speak."""
    out = copy.deepcopy(defaults)
    for k, v in (user or {}).items():
        out[k] = copy.deepcopy(v)
    return out


def _container_defaults(user: dict | None) -> dict:
    """The container defaults minus those that contradict what the template asks for.

    The API server refuses allowPrivilegeEscalation: false next to privileged: true
    or an added CAP_SYS_ADMIN; such a pod is the user's explicit choice.
    """
    user = user or {}
    added = {str(c).upper().removeprefix("CAP_") for c in ((user.get("capabilities") or {}).get("add") or [])}
    defaults = dict(RESTRICTED_CONTAINER_SECURITY)
    if user.get("privileged") or "SYS_ADMIN" in added:
        defaults.pop("allowPrivilegeEscalation")
    return _defaults(user, defaults)


def _pod_defaults(pod_spec: dict) -> dict:
    """The pod defaults minus runAsNonRoot where the template runs something as root (runAsUser: 0)."""
    user = pod_spec.get("securityContext") or {}
    defaults = dict(RESTRICTED_POD_SECURITY)
    as_root = user.get("runAsUser") == 0 or any(
        (c.get("securityContext") or {}).get("runAsUser") == 0
        and "runAsNonRoot" not in (c.get("securityContext") or {})
        for key in ("containers", "initContainers")
        for c in pod_spec.get(key) or []
    )
    if as_root:
        defaults.pop("runAsNonRoot")
    return _defaults(user, defaults)


HTTP_PATHS = {"liveness": "/livez", "readiness": "/readyz", "startup": "/startupz"}


def _probe(kind: str, limit: int, period: int, failures: int, timeout: int, how: str = "exec") -> dict:
    if how == "http":
        # The same verdict and limit as the exec probe, from the runtime's own HTTP answer.
        action: dict = {"httpGet": {"path": f"{HTTP_PATHS[kind]}?timeout={limit}", "port": contract.PORT_NAME}}
    else:
        action = {"exec": {"command": [PROBE_COMMAND, kind, "--timeout", str(limit)]}}
    return {
        **action,
        "periodSeconds": period,
        "failureThreshold": failures,
        "successThreshold": 1,
        "timeoutSeconds": timeout,
    }


def runtime_env(pool_name: str, spec: DaemonPoolSpec, drain_token: str | None = None) -> list:
    return [
        {"name": contract.ENV_NAME, "value": pool_name},
        {"name": contract.ENV_TIMEOUT, "value": str(spec.timeout_seconds)},
        {"name": contract.ENV_MAX_PEERS, "value": "1"},  # one worker per pod; peers are pods
        {"name": contract.ENV_RUN_DIR, "value": RUN_DIR},
        *([{"name": contract.ENV_PORT, "value": str(spec.port)}] if spec.probes == "http" else []),
        *(
            [{"name": contract.ENV_MAX_ITEMS, "value": str(spec.recycle.max_items)}]
            if spec.recycle and spec.recycle.max_items
            else []
        ),
        *(
            [{"name": contract.ENV_MAX_RSS_MIB, "value": str(spec.recycle.max_rss_mib)}]
            if spec.recycle and spec.recycle.max_rss_mib
            else []
        ),
        *([{"name": contract.ENV_DRAIN_TOKEN, "value": drain_token}] if drain_token else []),
    ]


def _worker(container: dict, pool_name: str, spec: DaemonPoolSpec, drain_token: str | None = None) -> dict:
    c = copy.deepcopy(container)
    ours = runtime_env(pool_name, spec, drain_token)
    names = {e["name"] for e in ours} | {contract.ENV_DRAIN_TOKEN}
    # The operator owns DAEMONPOOL_*: a template's own values would break the probes.
    c["env"] = [e for e in c.get("env", []) if e.get("name") not in names] + ours
    c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m.get("name") != RUN_VOLUME] + [
        {"name": RUN_VOLUME, "mountPath": RUN_DIR}
    ]
    period = spec.effective_probe_period
    limit = spec.timeout_seconds - period
    # A probe slower than its period is a probe that cannot keep up; cap it there.
    probe_timeout = max(1, min(period, 5))
    how = spec.probes
    live = _probe("liveness", limit, period, LIVENESS_FAILURES, probe_timeout, how)
    live["terminationGracePeriodSeconds"] = HUNG_KILL_GRACE_SECONDS
    c["livenessProbe"] = live
    # Readiness every <= 2 s: a new worker joins promptly after its startup probe passes.
    c["readinessProbe"] = _probe("readiness", limit, min(period, 2), 1, min(probe_timeout, 2), how)
    c["startupProbe"] = _probe("startup", limit, 1, spec.startup_timeout_seconds, 1, how)
    ports = [p for p in c.get("ports", []) if p.get("name") != contract.PORT_NAME]
    if how == "http":
        ports.append({"name": contract.PORT_NAME, "containerPort": spec.port, "protocol": "TCP"})
    if ports:
        c["ports"] = ports
    return c


def build_pod_template(pool_name: str, spec: DaemonPoolSpec, drain_token: str | None = None) -> dict:
    tmpl = spec.template.dump()
    pod_spec = tmpl["spec"]
    worker_name = spec.worker_container_name()
    pod_spec["containers"] = [
        _worker(c, pool_name, spec, drain_token) if c["name"] == worker_name else c for c in pod_spec["containers"]
    ]
    canonical_quantities(pod_spec)
    pod_spec["securityContext"] = _pod_defaults(pod_spec)
    for key in ("containers", "initContainers"):
        if key in pod_spec:
            pod_spec[key] = [
                {**c, "securityContext": _container_defaults(c.get("securityContext"))} for c in pod_spec[key]
            ]
    pod_spec["volumes"] = [v for v in pod_spec.get("volumes", []) if v.get("name") != RUN_VOLUME] + [
        {"name": RUN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
    ]
    pod_spec["terminationGracePeriodSeconds"] = spec.grace_period_seconds
    if "topologySpreadConstraints" not in pod_spec:
        pod_spec["topologySpreadConstraints"] = [spread_over_nodes(pool_name)]
    if "automountServiceAccountToken" not in pod_spec and "serviceAccountName" not in pod_spec:
        # A worker that names no ServiceAccount does not talk to the API: no token to steal.
        pod_spec["automountServiceAccountToken"] = False
    meta = tmpl.get("metadata", {})
    return {
        "metadata": {
            "labels": {**meta.get("labels", {}), **labels(pool_name)},
            **({"annotations": meta["annotations"]} if meta.get("annotations") else {}),
        },
        "spec": pod_spec,
    }


def spread_over_nodes(pool_name: str) -> dict:
    """The default spread (unless the template has its own): a pool's workers on as many nodes as the scheduler
    can, so one node lost takes few of them. Soft (ScheduleAnyway): a one-node cluster still runs them all;
    per ReplicaSet (pod-template-hash), so a rollout's new workers spread among themselves too."""
    return {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": selector_labels(pool_name)},
        "matchLabelKeys": ["pod-template-hash"],
    }


def fingerprint(body: dict) -> str:
    """What a child written from ``body`` is known by: a child is written again only when this changes."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def child_metadata(pool: dict) -> dict:
    """Metadata of a pool's child (its Deployment, its budget): the pool's name, its labels, owned by the pool."""
    meta, name = pool["metadata"], pool["metadata"]["name"]
    out = {"name": deployment_name(name), "labels": labels(name)}
    if meta.get("namespace"):
        out["namespace"] = meta["namespace"]
    if meta.get("uid"):
        out["ownerReferences"] = [owner_reference(pool)]
    return out


def build_strategy(spec: DaemonPoolSpec) -> dict:
    if spec.strategy.type == "Recreate":
        return {"type": "Recreate"}
    ru = spec.strategy.rolling_update or RollingUpdate()
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": ru.max_surge, "maxUnavailable": ru.max_unavailable}}


def build_deployment(
    pool: dict, spec: DaemonPoolSpec | None = None, replicas: int | None = None, drain_token: str | None = None
) -> dict:
    """The Deployment a pool (the DaemonPool object) should have; ``replicas``: the autoscaler's (default spec.peers);
    ``drain_token``: the secret only the operator and the workers know (autoscaled pools: see autoscaler.py)."""
    name = pool["metadata"]["name"]
    spec = spec if spec is not None else model.parse_spec(pool.get("spec"))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": child_metadata(pool),
        "spec": {
            "replicas": spec.peers if replicas is None else replicas,
            "selector": {"matchLabels": selector_labels(name)},
            "strategy": build_strategy(spec),
            "template": build_pod_template(name, spec, drain_token),
        },
    }


def build_budget(pool: dict, spec: DaemonPoolSpec) -> dict | None:
    """The PodDisruptionBudget a pool should have (spec.disruption), or None: same name and selector as its
    Deployment, owned by the pool. unhealthyPodEvictionPolicy AlwaysAllow: a worker that is not Ready (hung,
    crash-looping) can be evicted even when the budget is spent, so a broken worker never blocks a drain."""
    if spec.disruption is None:
        return None
    name = pool["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(pool),
        "spec": {
            "maxUnavailable": spec.disruption.max_unavailable,
            "selector": {"matchLabels": selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def budget_patch(want: dict, have: dict) -> dict | None:
    """A merge patch taking ``have`` (ours: controller_uid matches) to ``want``, or None when nothing differs."""
    patch: dict = {}
    if differences(want["spec"], have.get("spec") or {}):
        patch["spec"] = want["spec"]
    if any((have["metadata"].get("labels") or {}).get(k) != v for k, v in want["metadata"]["labels"].items()):
        patch.setdefault("metadata", {})["labels"] = want["metadata"]["labels"]
    return patch or None


def drain_token(deployment: dict | None) -> str | None:
    """The drain token a Deployment's workers were given (kept across reconciles: a new one would roll them)."""
    for c in ((deployment or {}).get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == contract.ENV_DRAIN_TOKEN and e.get("value"):
                return str(e["value"])
    return None


# -- comparing with what exists ----------------------------------------------------------


def differences(want, have, path: str = "") -> list:
    """Paths where ``have`` (as the API server returns it) differs from ``want`` (as we build it).

    Keys ``have`` carries beyond ``want`` are server defaults and ignored; lists must match
    item by item (an added env var is drift); empty and false values match an omitted field
    (the server drops them); quantities compare by value.
    """
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [] if not want and have is None else [path or "."]
        out = []
        for k, v in want.items():
            out += differences(v, have.get(k), f"{path}.{k}" if path else k)
        return out
    if isinstance(want, list):
        if have is None and not want:
            return []
        if not isinstance(have, list) or len(have) != len(want):
            return [path]
        out = []
        for i, (w, h) in enumerate(zip(want, have)):
            out += differences(w, h, f"{path}[{i}]")
        return out
    if have is None and want in (False, 0, "", None):
        return []
    if want == have:
        return []
    qw, qh = quantity(want), quantity(have)
    if qw is not None and qw == qh and isinstance(want, str):
        return []
    return [path]


def controller_uid(obj: dict) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


@dataclass(frozen=True)
class Create:
    body: dict


@dataclass(frozen=True)
class Update:
    patch: dict
    paths: list


@dataclass(frozen=True)
class Conflict:
    why: str


@dataclass(frozen=True)
class Noop:
    pass


Plan = Create | Update | Conflict | Noop


def plan(pool: dict, want: dict, have: dict | None) -> Plan:
    """What to do about the pool's Deployment.

    A Deployment controlled by another owner, or with no owner and not labelled as this
    pool's, is never touched. An orphan labelled as this pool's (left by
    `kubectl delete --cascade=orphan`) is adopted.
    """
    if have is None:
        return Create(want)
    name = pool["metadata"]["name"]
    uid = controller_uid(have)
    if uid is not None and uid != pool["metadata"]["uid"]:
        return Conflict(f"controlled by another owner (uid {uid})")
    if uid is None:
        labels_ = have["metadata"].get("labels") or {}
        if labels_.get(model.POOL_LABEL) != name or labels_.get("app.kubernetes.io/managed-by") != MANAGED_BY:
            return Conflict("not created by this pool (no owner reference)")
    release = rollout.held(have) and drain_token(want) is None  # held for a pool that no longer autoscales
    paths = differences({"metadata": {"labels": want["metadata"]["labels"]}, "spec": want["spec"]}, have)
    paths += ["spec.paused"] if release else []
    (ours,) = want["metadata"]["ownerReferences"]
    if not any(not differences(ours, ref) for ref in have["metadata"].get("ownerReferences") or []):
        paths.append("metadata.ownerReferences")
    if not paths:
        return Noop()
    patch = update_patch(want, [r for r in have["metadata"].get("ownerReferences") or [] if not r.get("controller")])
    return Update(rollout.release_patch(patch) if release else patch, paths)


def update_patch(want: dict, other_owners: list) -> dict:
    """A JSON merge patch that puts the Deployment back: lists (containers, volumes) are replaced whole,
    maps are merged. No resourceVersion: the Deployment controller's status writes cannot conflict with it."""
    spec = copy.deepcopy(want["spec"])
    if spec["strategy"]["type"] == "Recreate":
        spec["strategy"]["rollingUpdate"] = None  # merge would keep an old one, which Recreate forbids
    return {
        "metadata": {
            "labels": want["metadata"]["labels"],
            "ownerReferences": other_owners + want["metadata"]["ownerReferences"],
        },
        "spec": spec,
    }
