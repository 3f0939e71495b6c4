"""The operator's settings as one frozen, documented object: every field has a default, the reason for it, and
an environment variable; ``cli.py`` adds a flag for each. Nothing reads the environment at import: the CLI
builds a ``Config`` (``Config.from_env``) and hands it to the ``Controller``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

# Environment names users already set, kept working (the new name wins when both are set).
OLD_NAMES = {"reconcile_threads": "DAEMONPOOL_WORKERS"}


def _setting(default: Any, env: str, why: str) -> Any:
    return dataclasses.field(default=default, metadata={"env": env, "why": why})


@dataclasses.dataclass(frozen=True)
class Config:
    """What an operator of the operator may tune. Every field has a default and a reason (``why``), and an
    environment variable (``env``) that ``from_env`` reads; the CLI adds a flag for each (cli.py)."""

    namespaces: tuple[str, ...] = _setting(
        (), "DAEMONPOOL_NAMESPACES", "watched namespaces, comma-separated; empty: all"
    )
    resync_seconds: float = _setting(
        60.0, "DAEMONPOOL_RESYNC_SECONDS", "every pool again from the cache, a safety net for a missed event (no reads)"
    )
    reconcile_threads: int = _setting(
        4, "DAEMONPOOL_RECONCILE_THREADS", "pools reconciled at once: keeps up with bursts, never floods the API"
    )
    stuck_seconds: float = _setting(
        180.0, "DAEMONPOOL_STUCK_SECONDS", "queued work with no reconcile finished this long fails the health check"
    )
    status_batch_seconds: float = _setting(
        0.5, "DAEMONPOOL_STATUS_BATCH_SECONDS", "pod and Deployment events wait this long: a rollout is one write"
    )
    blind_seconds: float = _setting(
        300.0, "DAEMONPOOL_BLIND_SECONDS", "a pool whose workers did not answer is not asked again this long"
    )
    slow_reconcile_seconds: float = _setting(
        10.0, "DAEMONPOOL_SLOW_RECONCILE_SECONDS", "a reconcile slower than this is logged (the API or a lock)"
    )
    metrics_port: int | None = _setting(
        None, "DAEMONPOOL_METRICS_PORT", "Prometheus /metrics: the CLI makes it 8081 in a pod, none with --dev"
    )
    # {namespace, name, identity} of the Lease; None: no election (one replica, or --dev). Set by the CLI.
    leader_election: Mapping[str, str] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> Config:
        """The defaults, overridden by the environment, overridden by ``given`` (flags). A value that is not
        of its setting's kind is a ValueError naming the variable and what it takes."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata.get("env")
            if name and not env.get(name) and env.get(OLD_NAMES.get(f.name, "")):
                name = OLD_NAMES[f.name]  # the name before 0.2, still read
            raw = env.get(name) if name else None
            if raw in (None, ""):
                continue
            try:
                if f.name == "namespaces":
                    values[f.name] = tuple(n for n in raw.split(",") if n)
                elif f.name in ("reconcile_threads", "metrics_port"):
                    values[f.name] = int(raw)
                else:
                    values[f.name] = float(raw)
            except ValueError:
                kind = "a whole number" if f.name in ("reconcile_threads", "metrics_port") else "a number of seconds"
                raise ValueError(f"{name}={raw!r} is not {kind} ({f.metadata['why']})") from None
        values.update({k: v for k, v in given.items() if v is not None})
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        for name in ("resync_seconds", "stuck_seconds", "blind_seconds", "slow_reconcile_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0 seconds, got {getattr(self, name)!r}")
        if self.status_batch_seconds < 0:
            raise ValueError(f"status_batch_seconds must be 0 or more, got {self.status_batch_seconds!r}")
        if self.reconcile_threads < 1:
            raise ValueError(f"reconcile_threads must be at least 1, got {self.reconcile_threads!r}")


SETTINGS_BEGIN = "<!-- settings:begin (generated from config.Config by python -m daemonpool_operator.crd) -->"
SETTINGS_END = "<!-- settings:end -->"


def settings_table() -> str:
    """The operator's settings as docs/operations.md shows them: flag, environment variable, default, why."""
    rows = ["| flag | environment | default | why |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(Config):
        env = f.metadata.get("env")
        if env:
            flag = "--namespace (repeatable)" if f.name == "namespaces" else "--" + f.name.replace("_", "-")
            default = (
                "all namespaces" if f.name == "namespaces" else ("none" if f.default is None else f"{f.default:g}")
            )
            rows.append(f"| `{flag}` | `{env}` | {default} | {f.metadata['why']} |")
    return "\n".join(rows)
