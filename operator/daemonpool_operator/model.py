"""The DaemonPool API: one pydantic model, the source of the CRD schema.

Every field has a description (it is what `kubectl explain` prints) and every
setting a default with its reason. Rules the OpenAPI schema cannot say are
CEL rules (``CEL_RULES``) that the API server enforces, mirrored by model
validators so the operator reports the same message for a pool that reached
it some other way. Imports neither kopf nor kubernetes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic.alias_generators import to_camel

from .model_autoscale import AUTOSCALE_RULES, Autoscale, AutoscaleStatus
from .model_policies import Disruption, Recycle, Strategy

GROUP = "daemonpool.dev"
VERSION = "v1alpha1"
KIND = "DaemonPool"
PLURAL = "daemonpools"
SINGULAR = "daemonpool"
SHORT_NAMES = ["dp"]
API_VERSION = f"{GROUP}/{VERSION}"

# Pod names are "<deployment>-<10-char hash>-<5 chars>" and must stay within
# 63 characters for the pod's hostname: 63 - 16 = 47.
MAX_NAME_LENGTH = 47
# Labels the operator sets on every worker; a template may not redefine them.
POOL_LABEL = f"{GROUP}/pool"
RESERVED_LABELS = (POOL_LABEL,)

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict:
        """The Kubernetes form: camelCase, no nulls."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# Kubernetes 1.34+ (RelaxedEnvironmentVariableValidation, GA) takes any printable ASCII except '='.
ENV_NAME = r"^[ -<>-~]+$"


class EnvVar(_Model):
    """An environment variable of a container (valueFrom and the rest as in Kubernetes)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    name: Annotated[str, StringConstraints(pattern=ENV_NAME, max_length=1024)] = Field(
        description="Variable name: printable ASCII without '='."
    )
    value: Optional[str] = Field(None, description='The value, a string: quote numbers ("8080").')


class Container(_Model):
    """A container of the worker pod; every Kubernetes container field is allowed."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    name: Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)] = Field(
        description="Container name, a DNS label (lower case letters, digits and '-'), unique in the pod."
    )
    image: Annotated[str, StringConstraints(min_length=1, pattern=r"^\S+$")] = Field(
        description="Container image, e.g. registry.example.com/mailer:1.2 (required: a pod without one cannot start). "
        "Pods use it with the template's imagePullPolicy."
    )
    env: Optional[list[EnvVar]] = Field(None, description="Environment variables, as in Kubernetes.")


class PodSpec(_Model):
    """The worker pod's spec: any field of a Kubernetes PodSpec (volumes, nodeSelector, tolerations, serviceAccountName, ...)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")
    containers: list[Container] = Field(
        min_length=1,
        max_length=32,
        description="Containers of the worker pod; the worker is the one named by spec.workerContainer, else the first.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class TemplateMetadata(_Model):
    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every worker pod.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations added to every worker pod.")


class PodTemplate(_Model):
    metadata: TemplateMetadata = Field(
        default_factory=TemplateMetadata, description="Labels and annotations of the worker pods."
    )
    spec: PodSpec = Field(description="The worker pod's spec, as in a Deployment's template.")


class DaemonPoolSpec(_Model):
    """Desired state of a pool of workers."""

    peers: int = Field(
        1,
        ge=0,
        le=10000,
        description=(
            "How many workers run. `kubectl scale daemonpool NAME --replicas=N` sets it. Default 1: the classic single daemon."
        ),
    )
    timeout_seconds: int = Field(
        30,
        ge=1,
        le=86400,
        description=(
            "A worker whose heartbeat is older than this many seconds is hung, and the kubelet restarts it. "
            "Default 30: long enough for one unit of work between heartbeats."
        ),
    )
    grace_period_seconds: int = Field(
        30,
        ge=1,
        le=86400,
        description=("Seconds a worker gets after SIGTERM to finish its current item before SIGKILL. Default 30."),
    )
    probe_period_seconds: Optional[int] = Field(
        None,
        ge=1,
        le=300,
        description=(
            "How often the kubelet checks the heartbeat. Default: timeoutSeconds/4 between 1 and 10 s. "
            "A hung worker is restarted within timeoutSeconds + probePeriodSeconds + 2 s. "
            "Must be at most timeoutSeconds - 2."
        ),
    )
    startup_timeout_seconds: int = Field(
        60,
        ge=1,
        le=3600,
        description=(
            "Seconds a new worker may take to call start() (imports, migrations) before it counts as failed. Default 60."
        ),
    )
    worker_container: Optional[Annotated[str, StringConstraints(pattern=DNS_LABEL, max_length=63)]] = Field(
        None, description=("Name of the container that runs the worker runtime; default: the first container.")
    )
    probes: Literal["http", "exec"] = Field(
        "http",
        description=(
            "How the kubelet asks the worker: http (default; the runtime answers /livez, /readyz, /startupz on "
            "spec.port, about a tenth of the kubelet's CPU of exec probes) or exec (worker-runtime-probe, for "
            "images that cannot open a port). http also lets the operator remove idle workers first on scale-in."
        ),
    )
    port: int = Field(
        9309,
        ge=1024,
        le=65535,
        description=(
            "The worker's port for probes, /state and /metrics: the named container port 'daemonpool'. "
            "Default 9309: rarely taken. At least 1024: workers run as non-root."
        ),
    )
    strategy: Strategy = Field(
        default_factory=Strategy, description="How workers are replaced when the template changes."
    )
    recycle: Optional[Recycle] = Field(
        None,
        description=(
            "Recycle long-running workers (Celery's --max-tasks-per-child and --max-memory-per-child): the runtime "
            "reads DAEMONPOOL_MAX_ITEMS and DAEMONPOOL_MAX_RSS_MIB. A recycled worker's restart is not a problem in "
            "status. Default: workers run until stopped."
        ),
    )
    autoscale: Optional[Autoscale] = Field(
        None,
        description=(
            "Size the pool from its workers' busy state and its backlog, and remove only idle workers, drained first "
            "(needs probes http). spec.peers is then not used: `kubectl scale` changes nothing. Default: off."
        ),
    )
    disruption: Optional[Disruption] = Field(
        None,
        description=(
            "A PodDisruptionBudget for the workers (named as the Deployment, owned by the pool): at least peers - "
            "maxUnavailable stay Ready through a drain. Default: none (a drain may take every worker on a node)."
        ),
    )
    template: PodTemplate = Field(description="Pod template of a worker, as in a Deployment.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "DaemonPoolSpec":
        for rule in CEL_RULES:
            check = rule.get("_py")
            if check is not None and not check(self):
                raise ValueError(rule["message"])
        names = [c.name for c in self.template.spec.containers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(
                f"spec.template.spec.containers: duplicate container name {dup[0]!r}; give each container its own name"
            )
        reserved = sorted(set(self.template.metadata.labels) & set(RESERVED_LABELS))
        if reserved:
            raise ValueError(
                f"spec.template.metadata.labels: {reserved[0]!r} is set by the operator; remove it from the template"
            )
        ru = self.strategy.rolling_update
        if self.strategy.type == "Recreate" and ru is not None:
            raise ValueError(
                "spec.strategy.rollingUpdate may only be set when spec.strategy.type is RollingUpdate; remove it"
            )
        if ru is not None and _is_zero(ru.max_surge) and _is_zero(ru.max_unavailable):
            raise ValueError(
                "spec.strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0 (no rollout could progress); "
                "set maxSurge to 1"
            )
        return self

    @property
    def effective_probe_period(self) -> int:
        if self.probe_period_seconds is not None:
            return self.probe_period_seconds
        return max(1, min(10, self.timeout_seconds // 4))

    def worker_container_name(self) -> str:
        return self.worker_container or self.template.spec.containers[0].name


def _is_zero(v: Any) -> bool:
    return v == 0 or v == "0" or v == "0%"


# Rules the schema alone cannot say. Each is enforced by the API server (CEL,
# on .spec) and by the model (the _py twin), with the same message.
CEL_RULES: list[dict] = [
    {
        "rule": "!has(self.workerContainer) || self.template.spec.containers.exists(c, c.name == self.workerContainer)",
        "message": "spec.workerContainer must name one of spec.template.spec.containers; fix the name, or remove it to use the first container",
        "fieldPath": ".workerContainer",
        "reason": "FieldValueInvalid",
        "_py": lambda s: (
            s.worker_container is None or any(c.name == s.worker_container for c in s.template.spec.containers)
        ),
    },
    {
        "rule": "self.timeoutSeconds >= (has(self.probePeriodSeconds) ? self.probePeriodSeconds : "
        "(self.timeoutSeconds / 4 < 1 ? 1 : (self.timeoutSeconds / 4 > 10 ? 10 : self.timeoutSeconds / 4))) + 2",
        "message": "spec.timeoutSeconds must be at least probePeriodSeconds + 2 (probePeriodSeconds defaults to timeoutSeconds/4, "
        "at least 1), or the liveness probe could restart a healthy worker; raise timeoutSeconds or lower probePeriodSeconds",
        "fieldPath": ".timeoutSeconds",
        "reason": "FieldValueInvalid",
        "_py": lambda s: s.timeout_seconds >= s.effective_probe_period + 2,
    },
    *AUTOSCALE_RULES,
    {
        "rule": "!has(self.template.metadata) || !has(self.template.metadata.labels) || "
        "!('daemonpool.dev/pool' in self.template.metadata.labels)",
        "message": "spec.template.metadata.labels: 'daemonpool.dev/pool' is set by the operator; remove it from the template",
        "fieldPath": ".template.metadata.labels",
        "reason": "FieldValueForbidden",
    },
    {
        "rule": "!has(self.strategy) || !has(self.strategy.rollingUpdate) || self.strategy.type == 'RollingUpdate'",
        "message": "spec.strategy.rollingUpdate may only be set when spec.strategy.type is RollingUpdate; remove it",
        "fieldPath": ".strategy.rollingUpdate",
        "reason": "FieldValueForbidden",
    },
]

NAME_RULE = {
    "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
    "message": f"metadata.name must be at most {MAX_NAME_LENGTH} characters (worker pod names derive from it); choose a shorter name",
    "reason": "FieldValueInvalid",
}


class Condition(_Model):
    type: str = Field(description="Ready, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word a program can match, e.g. WorkersRestarting.")
    message: str = Field("", description="What happened and what to do, for humans.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: Optional[int] = Field(
        None, description="The pool's metadata.generation this condition was computed for."
    )


class DaemonPoolStatus(_Model):
    """Observed state, rebuilt from the world on every pass."""

    peers: int = Field(0, description="Workers that exist (pods of the pool's Deployment).")
    ready_peers: int = Field(0, description="Workers whose readiness probe passes.")
    updated_peers: int = Field(0, description="Workers running the current template.")
    restarts: int = Field(
        0, description="Container restarts of the current workers, summed (liveness restarts included)."
    )
    recycled: int = Field(
        0,
        description="Workers whose last exit was a recycling (spec.recycle): restarts on purpose, not problems.",
    )
    problem: str = Field(
        "",
        description="Degraded's reason while Degraded is True, else empty: the `kubectl get dp` Problem column.",
    )
    selector: str = Field("", description="Label selector of the workers, for the scale subresource and HPA.")
    observed_generation: Optional[int] = Field(None, description="The pool's metadata.generation last acted on.")
    deployment: Optional[str] = Field(None, description="Name of the Deployment that runs the workers.")
    autoscale: Optional[AutoscaleStatus] = Field(None, description="The autoscaler's last decision (spec.autoscale).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class InvalidPool(ValueError):
    """A pool the model refuses; the message names the field and the fix."""


_NAME_RE = re.compile(DNS_LABEL)


def format_errors(exc: ValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if loc and loc[-1].startswith("constrained-"):
            # A union branch (int-or-string): one message for the field, not one per branch.
            loc, msg = loc[:-1], "must be a whole number or a percentage such as '25%'"
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see `kubectl explain daemonpool.spec`)"
        where = ".".join(loc)
        line = f"spec.{where}: {msg}" if where and not msg.startswith("spec.") else msg
        if line not in parts:
            parts.append(line)
    return "; ".join(parts)


def parse_spec(spec: Any) -> DaemonPoolSpec:
    try:
        return DaemonPoolSpec.model_validate(spec if spec is not None else {})
    except ValidationError as exc:
        raise InvalidPool(format_errors(exc)) from None


def check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        raise InvalidPool(
            f"metadata.name {name!r} must be a DNS label of at most {MAX_NAME_LENGTH} characters "
            "(lower case letters, digits, '-'); choose a shorter or simpler name"
        )


def parse_pool(obj: dict) -> tuple[dict, DaemonPoolSpec]:
    """Validate a whole DaemonPool object: (metadata, spec)."""
    meta = obj.get("metadata") or {}
    check_name(meta.get("name", ""))
    return meta, parse_spec(obj.get("spec"))


def live_spec(pool: dict | None) -> DaemonPoolSpec | None:
    """The spec of a pool that exists, is not being deleted and is valid; else None (a reader that skips it)."""
    if not pool or (pool.get("metadata") or {}).get("deletionTimestamp"):
        return None
    try:
        return parse_pool(pool)[1]
    except InvalidPool:
        return None
