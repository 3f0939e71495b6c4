"""The DaemonPool API's autoscaling part (spec.autoscale, status.autoscale): a part of ``model``, the source
of the CRD schema, with the CEL rules that concern it. Imports neither kopf nor kubernetes."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

__all__ = ["AUTOSCALE_RULES", "Autoscale", "AutoscaleStatus", "Backlog", "SecretKeyRef"]


class _Model(BaseModel):
    # As model._Model: camelCase in Kubernetes, unknown fields refused.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class SecretKeyRef(_Model):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)] = Field(
        description="A Secret in the pool's namespace (the operator must be allowed to read it: see the chart)."
    )
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="The key whose value is the PostgreSQL connection string (libpq DSN or URI)."
    )


class Backlog(_Model):
    source: Literal["workers", "http", "postgres"] = Field(
        description=(
            "Where the queued items are counted: workers (each worker's d.report_backlog(n), shown in its /state; the "
            "largest reported counts, as every worker sees the same queue; cannot wake a pool at zero), http (GET "
            "url answers one number) or postgres (query returns one number). The operator asks http and postgres "
            "every periodSeconds; they can wake a pool at zero."
        ),
    )
    secret_ref: Optional[SecretKeyRef] = Field(
        None,
        description="For source postgres: where the DSN is (a key of a Secret in the pool's namespace).",
    )
    query: Optional[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        None,
        description=(
            "For source postgres: SQL returning one whole number (the first column of the first row), e.g. "
            "SELECT count(*) FROM jobs WHERE state = 'pending'. Run in a read-only transaction with a 1 s "
            "statement timeout."
        ),
    )
    url: Optional[Annotated[str, StringConstraints(pattern=r"^http://[^\s/]+(/\S*)?$", max_length=2048)]] = Field(
        None,
        description=(
            "For source http: the http:// URL (no TLS yet) the operator GETs (1 s deadline, 4 KiB at most, no "
            "redirects); the answer's body is one whole number >= 0. The operator pod must reach it (its dnsPolicy is Default: use an IP or "
            "a name the node resolves)."
        ),
    )
    items_per_worker: int = Field(
        10,
        ge=1,
        le=1_000_000,
        description=(
            "Queued items one worker should have ahead of it: the backlog asks for ceil(backlog / itemsPerWorker) "
            "workers. Default 10."
        ),
    )
    period_seconds: int = Field(
        5,
        ge=1,
        le=300,
        description="How often the operator asks an http source. Default 5: a queue count is rarely cheap.",
    )


class Autoscale(_Model):
    """The pool sizes itself between minPeers and maxPeers; spec.peers is then not used."""

    min_peers: int = Field(
        1,
        ge=0,
        le=10000,
        description=(
            "Fewest workers. 0 scales to zero when there is no work; only an outside backlog (source http or "
            "postgres) wakes such a pool. Default 1."
        ),
    )
    max_peers: int = Field(ge=1, le=10000, description="Most workers (required: a bound on cost).")
    target_busy: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "Fraction of the workers' capacity that should be busy (items in flight / capacity, as each worker's "
            "/state reports them). desired = clamp(max(ceil(busy / targetBusy), ceil(backlog / itemsPerWorker)), "
            "minPeers, maxPeers), where busy counts workers' worth of items in flight. Default 0.8."
        ),
    )
    idle_seconds: int = Field(
        10,
        ge=0,
        le=86400,
        description=(
            "A scale-in removes only workers idle at least this long, drained first (never a busy worker). Default 10."
        ),
    )
    stable_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description=(
            "Scale in only to the largest desired count of this many past seconds: demand must stay lower this long "
            "(scale-up is at once). Default 60."
        ),
    )
    scale_up_step: int = Field(
        4,
        ge=1,
        le=10000,
        description=(
            "Scale-up goes to at most answering + max(scaleUpStep, answering) workers, where answering is the "
            "workers whose /state answers: a pool woken from zero starts this many, then doubles as they answer, "
            "instead of starting maxPeers workers that all connect at once. Default 4."
        ),
    )
    backlog: Optional[Backlog] = Field(None, description="Where queued work is counted; default none (busy only).")


class AutoscaleStatus(_Model):
    """What the autoscaler saw and did at its last decision (written only when it decides something new)."""

    desired: int = Field(description="Workers the autoscaler wants now (the Deployment's replicas).")
    busy: float = Field(0.0, description="Workers' worth of items in flight at the last decision.")
    backlog: Optional[int] = Field(None, description="Queued items at the last decision; absent when not counted.")
    reason: str = Field("", description="Why the last decision, in words.")
    last_scale_time: Optional[str] = Field(None, description="When the autoscaler last changed the count (RFC 3339).")
    conflict: Optional[str] = Field(
        None, description="Another autoscaler (an HPA, KEDA's) that targets this pool too, and what to do about it."
    )


# Rules the schema alone cannot say (see model.CEL_RULES): API server (CEL) and model (_py), one message.
AUTOSCALE_RULES: list[dict] = [
    {
        "rule": "!has(self.autoscale) || !has(self.autoscale.minPeers) || self.autoscale.minPeers <= self.autoscale.maxPeers",
        "message": "spec.autoscale.minPeers must be at most spec.autoscale.maxPeers; raise maxPeers or lower minPeers",
        "fieldPath": ".autoscale.minPeers",
        "reason": "FieldValueInvalid",
        "_py": lambda s: s.autoscale is None or s.autoscale.min_peers <= s.autoscale.max_peers,
    },
    {
        "rule": "!has(self.autoscale) || !has(self.autoscale.backlog) || "
        "(self.autoscale.backlog.source == 'http') == has(self.autoscale.backlog.url)",
        "message": "spec.autoscale.backlog.url is required for source http and only for it; set it, or remove it",
        "fieldPath": ".autoscale.backlog.url",
        "reason": "FieldValueInvalid",
        "_py": lambda s: (
            s.autoscale is None
            or s.autoscale.backlog is None
            or (s.autoscale.backlog.source == "http") == (s.autoscale.backlog.url is not None)
        ),
    },
    {
        "rule": "!has(self.autoscale) || !has(self.autoscale.backlog) || "
        "(self.autoscale.backlog.source == 'postgres') == (has(self.autoscale.backlog.secretRef) && "
        "has(self.autoscale.backlog.query))",
        "message": "spec.autoscale.backlog.secretRef and query are required for source postgres and only for it; "
        "set both, or remove them",
        "fieldPath": ".autoscale.backlog",
        "reason": "FieldValueInvalid",
        "_py": lambda s: (
            s.autoscale is None
            or s.autoscale.backlog is None
            or (s.autoscale.backlog.source == "postgres")
            == (s.autoscale.backlog.secret_ref is not None and s.autoscale.backlog.query is not None)
        ),
    },
    {
        "rule": "!has(self.autoscale) || (has(self.autoscale.minPeers) && self.autoscale.minPeers > 0) || "
        "(has(self.autoscale.backlog) && self.autoscale.backlog.source != 'workers')",
        "message": "spec.autoscale.minPeers 0 needs backlog.source http or postgres: at zero no worker can report "
        "work; set minPeers to 1 or count the backlog outside the workers",
        "fieldPath": ".autoscale.minPeers",
        "reason": "FieldValueInvalid",
        "_py": lambda s: (
            s.autoscale is None
            or s.autoscale.min_peers > 0
            or (s.autoscale.backlog is not None and s.autoscale.backlog.source != "workers")
        ),
    },
    {
        "rule": "!has(self.autoscale) || !has(self.probes) || self.probes == 'http'",
        "message": "spec.autoscale needs spec.probes http (the operator asks each worker over HTTP); remove probes: exec",
        "fieldPath": ".autoscale",
        "reason": "FieldValueInvalid",
        "_py": lambda s: s.autoscale is None or s.probes == "http",
    },
]
