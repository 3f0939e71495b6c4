"""Every word a user reads in a pool's conditions and Events, in one place. Pure: no I/O.

Each reason is a constant; ``CATALOG`` says what it means and what to do, and
the README's troubleshooting table is checked against it by a unit test, so the
two cannot drift.
"""

from __future__ import annotations

# -- Ready / Progressing -------------------------------------------------------------------
ALL_PEERS_READY = "AllPeersReady"
STABLE = "Stable"
ROLLING_OUT = "RollingOut"
SCALING_UP = "ScalingUp"
SCALING_DOWN = "ScalingDown"
WORKERS_NOT_READY = "WorkersNotReady"
DEPLOYMENT_MISSING = "DeploymentMissing"
CREATING = "Creating"
AS_EXPECTED = "AsExpected"

# -- Degraded (also the reason of its Warning Event, posted once per new cause) ---------------
INVALID_SPEC = "InvalidSpec"
DEPLOYMENT_CONFLICT = "DeploymentConflict"
DEPLOYMENT_REJECTED = "DeploymentRejected"
PODS_REFUSED = "PodsRefused"
ROLLOUT_STUCK = "RolloutStuck"
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_FAILED = "ImagePullFailed"
CONTAINER_CONFIG_ERROR = "ContainerConfigError"
OOM_KILLED = "OOMKilled"
WORKERS_RESTARTING = "WorkersRestarting"

# -- Normal Events ---------------------------------------------------------------------------
CREATED = "Created"
SCALED = "Scaled"
UPDATED = "Updated"
WORKER_RESTARTED = "WorkerRestarted"  # a Warning Event, not a condition
IDLE_FIRST = "IdleFirst"  # a Normal Event: which workers a scale-in removes first
IDLE_FIRST_UNAVAILABLE = "IdleFirstUnavailable"  # a Warning Event, once per pool
AUTOSCALED = "Autoscaled"  # a Normal Event: the autoscaler changed the worker count, and why
AUTOSCALE_CONFLICT = "AutoscaleConflict"  # a Warning Event: an HPA (or KEDA's) also targets an autoscaled pool
BUDGET_CONFLICT = "BudgetConflict"  # a Warning Event: a PodDisruptionBudget of the pool's name is not the pool's
BUDGET_REJECTED = "BudgetRejected"  # a Warning Event: the API server refused the pool's PodDisruptionBudget

# reason -> (where it shows, what it means and what to do)
CATALOG: dict[str, tuple[str, str]] = {
    ALL_PEERS_READY: ("Ready=True", "every worker is ready"),
    STABLE: ("Progressing=False", "every worker runs the current template"),
    ROLLING_OUT: ("Ready=False, Progressing=True", "workers are being replaced by the current template; wait"),
    SCALING_UP: ("Ready=False, Progressing=True", "new workers are starting; wait (Degraded says why if they cannot)"),
    SCALING_DOWN: ("Ready=False, Progressing=True", "extra workers are finishing their item and stopping"),
    WORKERS_NOT_READY: ("Ready=False, Progressing=True", "workers exist but fail readiness: `kubectl describe pod`"),
    DEPLOYMENT_MISSING: ("Ready=False", "the Deployment is being created"),
    CREATING: ("Progressing=True", "the Deployment is being created"),
    AS_EXPECTED: ("Degraded=False", "nothing is wrong"),
    INVALID_SPEC: ("Degraded=True", "the spec breaks a rule; the message names the field and the fix"),
    DEPLOYMENT_CONFLICT: (
        "Degraded=True",
        "a Deployment of the pool's name is not the pool's; delete or rename it, or rename the pool",
    ),
    DEPLOYMENT_REJECTED: (
        "Degraded=True, Progressing=False",
        "the API server refused the Deployment built from the template; the "
        "message is the server's; fix the template (not retried until it changes)",
    ),
    PODS_REFUSED: (
        "Degraded=True, Progressing=False",
        "the ReplicaSet cannot create pods (ResourceQuota, LimitRange, PodSecurity); the message is the controller's",
    ),
    ROLLOUT_STUCK: (
        "Degraded=True, Progressing=False",
        "the Deployment exceeded its progress deadline; see the other reasons and `kubectl describe deploy`",
    ),
    UNSCHEDULABLE: (
        "Degraded=True, Progressing=False",
        "no node fits the workers (resources, nodeSelector, taints); the message is the scheduler's",
    ),
    IMAGE_PULL_FAILED: (
        "Degraded=True, Progressing=False",
        "a worker image cannot be pulled (name, tag, registry credentials, "
        "imagePullPolicy: Never without the image on the node)",
    ),
    CONTAINER_CONFIG_ERROR: (
        "Degraded=True, Progressing=False",
        "a container cannot be created (a missing Secret or ConfigMap, a bad command); the message is the kubelet's",
    ),
    OOM_KILLED: ("Degraded=True", "workers are killed for memory; raise the memory limit or use less"),
    WORKERS_RESTARTING: (
        "Degraded=True",
        "workers restart (hung or crashing): `kubectl describe pod` and `kubectl logs --previous`",
    ),
    CREATED: ("Event, Normal", "the Deployment was created"),
    SCALED: ("Event, Normal", "replicas follow peers"),
    UPDATED: ("Event, Normal", "the Deployment was put back to the pool's spec (an edit, or drift)"),
    WORKER_RESTARTED: ("Event, Warning", "a worker's container restarted; the message names pods and last reasons"),
    IDLE_FIRST: ("Event, Normal", "a scale-in asked the workers who is busy and marked idle ones to go first"),
    IDLE_FIRST_UNAVAILABLE: (
        "Event, Warning",
        "a scale-in could not ask the workers (probes: exec, or a "
        "NetworkPolicy): any worker may go, busy ones included",
    ),
    AUTOSCALE_CONFLICT: (
        "Event, Warning; status.autoscale.conflict",
        "a HorizontalPodAutoscaler (KEDA makes keda-hpa-NAME) also targets this autoscaled pool; what it writes "
        "(spec.peers) is not used: delete it, or remove spec.autoscale to let it size the pool",
    ),
    BUDGET_CONFLICT: (
        "Event, Warning",
        "spec.disruption asks for a PodDisruptionBudget, and one of the pool's name exists that the pool does not "
        "control; it is left alone: delete it to let the pool make its own",
    ),
    BUDGET_REJECTED: (
        "Event, Warning",
        "the API server refused the pool's PodDisruptionBudget (403: the operator's role lacks "
        "poddisruptionbudgets; upgrade the chart); not sent again until spec.disruption changes",
    ),
    AUTOSCALED: (
        "Event, Normal",
        "spec.autoscale changed the worker count; the message says from what to what and why "
        "(also in status.autoscale)",
    ),
}

# Degraded reasons caused by the spec: a new message is a new cause (another field, another error).
SPEC_CAUSED = frozenset({INVALID_SPEC, DEPLOYMENT_CONFLICT, DEPLOYMENT_REJECTED})


def conflict_message(deployment: str, why: str) -> str:
    return (
        f"Deployment {deployment} exists and is not controlled by this pool ({why}); the operator leaves it alone. "
        f"Delete or rename that Deployment, or give the pool another name"
    )


def rejected_message(deployment: str, verb: str, status: int, server: str) -> str:
    return (
        f"the API server refused to {verb} Deployment {deployment} ({status}): {server}. "
        f"Fix spec.template; nothing is retried until the pool changes"
    )


def blind_scale_in_message(before: int, peers: int, why: str) -> str:
    return (
        f"scaling in from {before} to {peers} without knowing which workers are busy ({why}): any "
        f"worker may go. Use spec.probes: http, and let the operator reach the pods on spec.port"
    )


def idle_first_message(before: int, peers: int, idle: int, busy: int) -> str:
    return f"scaling in from {before} to {peers}: {idle} idle worker(s) go first; {busy} busy kept as long as possible"


def cost_refused_message(refused: list) -> str:
    return (
        f"the API server refused the deletion cost of {len(refused)} pod(s): {', '.join(refused[:5])}; those "
        "may go whatever they are doing (tried again at the next scale-in). Allow the operator to patch "
        "the annotation controller.kubernetes.io/pod-deletion-cost on the pool's pods"
    )


def counted(n: int, what: str, first_pod: str, detail: str, fix: str) -> str:
    return f"{n} worker pod(s) {what}; first {first_pod}: {detail}. {fix}"


def autoscale_conflict_message(namespace: str, hpas: list) -> str:
    names = ", ".join(f"{namespace}/{h}" for h in hpas)
    return (
        f"HorizontalPodAutoscaler {names} also targets this pool, which spec.autoscale sizes; the spec.peers it "
        "writes is not used. Delete it (a KEDA ScaledObject: delete the ScaledObject), or remove spec.autoscale"
    )


def fields(namespace: str | None, name: str | None, reason: str = "") -> dict:
    """The structured fields of a log line about one pool (JSON logs carry them as top-level keys)."""
    out = {"namespace": namespace or "", "pool": name or ""}
    if reason:
        out["reason"] = reason
    return out


class PoolFields:
    """A logging filter: a line that starts "pool NAMESPACE/NAME" (how every line about one pool starts)
    gets the fields ``namespace`` and ``pool`` unless it set them itself; JSON logs show them as keys."""

    def filter(self, record) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("pool %s/%s") and len(record.args or ()) >= 2:
            for k, v in fields(*record.args[:2]).items():
                if not hasattr(record, k):
                    setattr(record, k, v)
        return True
