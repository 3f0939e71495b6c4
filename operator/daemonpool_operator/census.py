"""The census of the pools' watch: pure (no kopf, no I/O), held by the controller.

Every ``CHECK_SECONDS`` (the controller's slow loop) one LIST of pools with ``limit=1`` (how many there are,
and the first one's resourceVersion) is compared with what the watch delivered. The same difference at two
checks in a row means the watch stopped delivering while the API server answers: every watch is restarted
(``restart``: kopfhooks.restart_watches, a new request from its last resourceVersion). Still different after
``UNHEALTHY_CHECKS`` checks: the health endpoint fails, and the kubelet restarts the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import metrics

# Seconds between censuses of the pools: one small LIST each, whatever the number of pools.
CHECK_SECONDS = 30.0
# Consecutive censuses that disagree with the cache before the health endpoint fails (with restarts between).
UNHEALTHY_CHECKS = 5

log = logging.getLogger("daemonpool")
# A LIST of pools with limit=1: (how many, (namespace, name, resourceVersion) of the first, or None).
Listed = tuple[int, tuple[str, str, str] | None]


def disagreement(listed: Listed, cached: dict[tuple[str, str], str]) -> str | None:
    """Why the API server's census and the cache disagree, or None.

    ``listed``: (count, first) from a LIST with limit=1, first = (namespace, name, resourceVersion) or None;
    ``cached``: {(namespace, name): resourceVersion} from the watch.
    """
    count, first = listed
    if count != len(cached):
        return f"the API server has {count} pool(s), the watch delivered {len(cached)}"
    if first is not None:
        ns, name, rv = first
        have = cached.get((ns, name))
        if have is None:
            return f"pool {ns}/{name} exists, the watch never delivered it"
        if _rv(have) < _rv(rv):
            return f"pool {ns}/{name} is at resourceVersion {rv}, the watch delivered {have}"
    return None


def _rv(v: object) -> int:
    try:
        return int(str(v))  # anything: what is not a number is -1
    except (TypeError, ValueError):
        return -1  # opaque: an unknown version counts as older


class Census:
    """Counts the censuses in a row that disagree; ``restart()`` ends every watch request."""

    def __init__(self, restart: Callable[[], None] = lambda: None) -> None:
        self.restart = restart
        self.disagreements = 0
        self.last: str | None = None

    def check(self, listed: Listed, cached: dict[tuple[str, str], str]) -> None:
        """One census: restart the watches at the second disagreement in a row; count them for health()."""
        why = disagreement(listed, cached)
        if why is None:
            self.disagreements, self.last = 0, None
            return
        self.disagreements += 1
        metrics.WATCH_STALE_CHECKS.inc()
        if self.disagreements >= 2:
            log.warning(
                "the pools' watch looks stale (%s, at %d checks in a row): restarting every watch",
                why,
                self.disagreements,
            )
            self.restart()
        self.last = why

    def health(self) -> str | None:
        """None while the watches keep up; why not, once restarts did not help for UNHEALTHY_CHECKS checks."""
        if self.disagreements >= UNHEALTHY_CHECKS:
            return f"watches stale for {self.disagreements} checks despite restarts: {self.last}"
        return None
