"""What the API's answers mean, as our own errors (kube.py raises them; the controller decides what each
means), and how long to wait before trying again. Pure: no client, no I/O."""

from __future__ import annotations

# Seconds before a write the API refused for a passing reason is tried again.
RETRY_DELAY = 2


class NamespaceTerminating(Exception):
    """The namespace is being deleted: nothing may be created there, and the pool goes with it."""


class Transient(Exception):
    """A passing failure (an outage, 429, 5xx, a timeout): try again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float):
        super().__init__(message)
        self.delay = delay


class Rejected(Exception):
    """The API server (or the client's own validation) refused the object: ``status`` and the server's ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


# The longest Retry-After we honour: a server asking for more is asked again after this many seconds.
MAX_RETRY_AFTER = 300.0


def retry_after(headers) -> float:
    """Seconds to wait before trying again: the server's Retry-After (429, 503 under APF) when it sends a
    number of seconds, else RETRY_DELAY; never less than RETRY_DELAY, never more than MAX_RETRY_AFTER."""
    raw = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    if raw is None:
        return RETRY_DELAY
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return RETRY_DELAY
    if seconds != seconds:  # nan
        return RETRY_DELAY
    return max(RETRY_DELAY, min(MAX_RETRY_AFTER, seconds))
