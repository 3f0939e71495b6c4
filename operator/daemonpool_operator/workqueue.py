"""A work queue of pool keys, like client-go's: events only enqueue, reconcile threads take keys. Its
retries back off per key and share one rate limit; events are coalesced, not limited.

- Coalescing: a key is in the queue at most once, however many events arrive; a key that is
  being processed and is added again is processed once more afterwards (never twice at once).
- Bounded concurrency: ``threads`` threads take keys; one pool never runs on two of them.
- Retries back off per key (``base`` doubling up to ``cap``); a success forgets the failures. Retries
  also share one token bucket (``qps``, ``burst``): the delay is the larger of the two, as client-go's
  default controller rate limiter does, so many failing pools cannot hammer a struggling API server.
  Events (``add``) are not limited: they are coalesced instead.
- ``add_after`` schedules a key later (a retry, or a condition that will change with time).

Pure Python and threads: imports neither kopf nor kubernetes, so it is unit-tested directly.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from typing import Any, Callable, Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)  # the key: (namespace, name) for pools

# First retry delay and its cap: a failing pool is retried promptly, then at most once a minute.
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0
# Retries of all pools together: client-go's default (10 per second, bursts of 100).
RETRY_QPS = 10.0
RETRY_BURST = 100


class Retry(Exception):
    """Raised by a reconcile to be tried again after ``delay`` seconds (None: per-key backoff)."""

    def __init__(self, why: str, delay: float | None = None):
        super().__init__(why)
        self.delay = delay


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], None],
        *,
        threads: int = 4,
        base: float = BACKOFF_BASE_SECONDS,
        cap: float = BACKOFF_CAP_SECONDS,
        on_error: Callable[[K, BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        qps: float = RETRY_QPS,
        burst: int = RETRY_BURST,
    ):
        self._process = process
        self._threads_wanted = threads
        self._base, self._cap = base, cap
        self._on_error = on_error
        self._clock = clock
        self._cv = threading.Condition()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()  # queued, or to be queued again once processing ends
        self._active: set[K] = set()  # being processed right now
        self._later: list[tuple[float, int, K]] = []  # heap of (when, seq, key)
        self._scheduled: set[K] = set()  # keys in _later
        self._seq = 0
        self._failures: dict[K, int] = {}
        self._threads: list[Any] = []
        self._stopped = False
        self._qps, self._burst = qps, burst
        self._tokens, self._refilled = float(burst), clock()
        self.processed = 0  # reconciles run (for tests and metrics)
        self.last_progress = clock()

    # -- producers -------------------------------------------------------------------
    def add(self, key: K) -> None:
        with self._cv:
            if key in self._dirty:
                return  # coalesced: one pending reconcile per key
            self._dirty.add(key)
            if key not in self._active:
                self._queue.append(key)
                self._cv.notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` in ``delay`` seconds; nothing when it is already waiting (now or later): events
        that arrive meanwhile are covered by that reconcile."""
        if delay <= 0:
            self.add(key)
            return
        with self._cv:
            if key in self._scheduled or (key in self._dirty and key not in self._active):
                return
            self._scheduled.add(key)
            self._seq += 1
            heapq.heappush(self._later, (self._clock() + delay, self._seq, key))
            self._cv.notify()

    def __len__(self) -> int:
        with self._cv:
            return len(self._queue) + len(self._later)

    @property
    def depth(self) -> int:
        """Keys waiting to be reconciled now (not counting scheduled retries)."""
        with self._cv:
            return len(self._queue)

    # -- consumers -------------------------------------------------------------------
    def _promote_due(self) -> float | None:
        """Move scheduled keys that are due into the queue; seconds until the next one, or None."""
        now = self._clock()
        while self._later and self._later[0][0] <= now:
            _, _, key = heapq.heappop(self._later)
            self._scheduled.discard(key)
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._active:
                    self._queue.append(key)
        return (self._later[0][0] - now) if self._later else None

    def _get(self, timeout: float | None) -> K | None:
        with self._cv:
            deadline = None if timeout is None else self._clock() + timeout
            while True:
                if self._stopped:
                    return None
                wait = self._promote_due()
                if self._queue:
                    key = self._queue.popleft()
                    self._dirty.discard(key)
                    self._active.add(key)
                    return key
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cv.wait(wait)

    def _done(self, key: K) -> None:
        with self._cv:
            self._active.discard(key)
            self.processed += 1
            self.last_progress = self._clock()
            if key in self._dirty:  # added again while it was being processed
                self._queue.append(key)
                self._cv.notify()

    def process_one(self, timeout: float | None = 0) -> bool:
        """Take one key and reconcile it in this thread; False when none was ready (tests drive it so)."""
        key = self._get(timeout)
        if key is None:
            return False
        try:
            self._process(key)
        except Retry as exc:
            self._retry(key, exc.delay)
        except Exception as exc:  # noqa: BLE001 - one pool's failure must not stop the queue; it is retried
            if self._on_error is not None:
                self._on_error(key, exc)
            self._retry(key, None)
        else:
            self._failures.pop(key, None)
        finally:
            self._done(key)
        return True

    def _retry(self, key: K, delay: float | None) -> None:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        if delay is None:
            delay = min(self._cap, self._base * (2**n))
        self.add_after(key, max(delay, self._bucket_delay()))

    def _bucket_delay(self) -> float:
        """Take a token from the retries' bucket: 0 when one is there, else how long until one will be."""
        with self._cv:
            now = self._clock()
            self._tokens = min(float(self._burst), self._tokens + (now - self._refilled) * self._qps)
            self._refilled = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self._qps

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """Drop ``key`` entirely (its pool is gone): queued, scheduled and its failures. One being
        processed finishes, and is not queued again."""
        with self._cv:
            self._failures.pop(key, None)
            self._dirty.discard(key)
            if key in self._queue:
                self._queue.remove(key)
            if key in self._scheduled:
                self._scheduled.discard(key)
                self._later = [entry for entry in self._later if entry[2] != key]
                heapq.heapify(self._later)

    def drain(self, limit: int = 100000) -> int:
        """Process until nothing is ready now; returns how many reconciles ran."""
        n = 0
        while n < limit and self.process_one(timeout=0):
            n += 1
        return n

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self) -> None:
        if self._threads:
            return
        for i in range(self._threads_wanted):
            t = threading.Thread(target=self._run, name=f"daemonpool-reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self) -> None:
        while not self._stopped:
            self.process_one(timeout=None)

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
