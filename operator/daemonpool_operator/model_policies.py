"""How a pool's workers are replaced (strategy), recycled and disrupted: the spec's policy sections, apart
from model.py to keep each schema module short to read. Pure: pydantic only."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema
from pydantic.alias_generators import to_camel

__all__ = ["INT_OR_PERCENT", "Disruption", "IntOrString", "Recycle", "RollingUpdate", "Strategy"]

INT_OR_PERCENT = r"^(\d+|\d+%)$"

IntOrString = Annotated[
    Union[Annotated[int, Field(ge=0)], Annotated[str, StringConstraints(pattern=INT_OR_PERCENT)]],
    # The form Kubernetes accepts for int-or-string; pattern applies to strings, minimum to numbers.
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": INT_OR_PERCENT,
            "minimum": 0,
        }
    ),
]


class _Model(BaseModel):
    # As model._Model: camelCase in Kubernetes, unknown fields refused.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class RollingUpdate(_Model):
    max_surge: IntOrString = Field(
        1,
        description="Extra workers allowed during a rollout (number or percent). Default 1: roll one at a time, never below peers.",
    )
    max_unavailable: IntOrString = Field(
        0,
        description="Workers that may be missing during a rollout (number or percent). Default 0: keep full capacity.",
    )


class Strategy(_Model):
    type: Literal["RollingUpdate", "Recreate"] = Field(
        "RollingUpdate",
        description="RollingUpdate replaces workers gradually; Recreate stops all before starting new ones.",
    )
    rolling_update: Optional[RollingUpdate] = Field(
        None, description="Settings for type RollingUpdate (defaults: maxSurge 1, maxUnavailable 0)."
    )


class Recycle(_Model):
    max_items: Optional[int] = Field(
        None,
        ge=1,
        le=1_000_000_000,
        description=(
            "After about this many items (up to 10 % more, at random, so workers started together do not all go "
            "at once) a worker finishes its item and exits cleanly; the kubelet starts a fresh one. Default: never."
        ),
    )
    max_rss_mib: Optional[int] = Field(
        None,
        alias="maxRssMiB",
        ge=16,
        le=1_048_576,
        description=(
            "Above this resident memory (MiB), checked after each item, a worker finishes and exits cleanly; set it "
            "below the container's memory limit so a leak recycles the worker instead of an OOM kill. Default: never."
        ),
    )


class Disruption(_Model):
    max_unavailable: IntOrString = Field(
        description=(
            "Workers a voluntary disruption (`kubectl drain`, a node upgrade) may take at once, a number or percent "
            "of peers; evictions past it wait. Workers that are not Ready can always be evicted, so a broken one "
            "never blocks a drain."
        ),
    )
