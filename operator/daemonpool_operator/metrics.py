"""Prometheus metrics of the operator (prometheus-client), served on their own port.

Counters are updated where things happen (kube.py for API requests, the handlers for watch events and
reconciles); the pools by condition and reason are counted from the cache at scrape time.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from worker_runtime.httpserver import TEXT, BoundedServer, response

RECONCILES = Counter(
    "daemonpool_reconciles_total", "Reconciles of a pool, by what asked for it and how it ended.", ["trigger", "result"]
)
RECONCILE_SECONDS = Histogram(
    "daemonpool_reconcile_duration_seconds",
    "Seconds one reconcile of one pool took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("daemonpool_queue_depth", "Pools waiting to be reconciled.")
API_REQUESTS = Counter(
    "daemonpool_api_requests_total", "Requests to the Kubernetes API, by verb and status code.", ["verb", "code"]
)
WATCH_EVENTS = Counter("daemonpool_watch_events_total", "Watch events received, by resource.", ["resource"])
WATCH_AGE = Gauge(
    "daemonpool_watch_event_age_seconds", "Seconds since the last watch event, by resource.", ["resource"]
)
WATCH_INPUT_AGE = Gauge(
    "daemonpool_watch_input_age_seconds",
    "Seconds since a watch last delivered anything (an event or a bookmark), by resource.",
    ["resource"],
)
WATCH_REQUESTS = Counter(
    "daemonpool_watch_requests_total",
    "Watch requests opened, by resource: one per resource at start, then one each time a watch ends "
    "(the API server's 5-minute end, a dead connection, a restart by the operator).",
    ["resource"],
)
WATCH_RESTARTS = Counter(
    "daemonpool_watch_restarts_total",
    "Watch requests ended by the operator because they stopped delivering.",
    ["resource"],
)
WATCH_STALE_CHECKS = Counter(
    "daemonpool_watch_stale_checks_total", "Censuses of the pools (a LIST with limit=1) that disagreed with the watch."
)
LOOP_ERRORS = Counter(
    "daemonpool_loop_errors_total", "Unexpected errors a background loop survived (logged with a traceback).", ["loop"]
)
LEADER = Gauge("daemonpool_leader", "1 while this replica is the leader (reconciles), 0 while standby.")
LEADER_TRANSITIONS = Counter(
    "daemonpool_leader_transitions_total", "Times this replica became or stopped being leader."
)

AUTOSCALE_ASKS = Counter(
    "daemonpool_autoscale_state_asks_total", "Workers' /state answers the autoscaler read (long polls: one a change)."
)
AUTOSCALE_PASS_SECONDS = Histogram(
    "daemonpool_autoscale_pass_seconds",
    "Seconds one autoscaler pass over every autoscaled pool took (asking the workers included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
AUTOSCALE_DECISIONS = Counter(
    "daemonpool_autoscale_changes_total", "Worker counts the autoscaler changed, by direction (up, down).", ["kind"]
)
AUTOSCALE_DESIRED = Gauge(
    "daemonpool_autoscale_desired_workers", "Workers the autoscaler wants, per pool.", ["namespace", "name"]
)
AUTOSCALE_BUSY = Gauge(
    "daemonpool_autoscale_busy_workers", "Workers' worth of items in flight, per pool.", ["namespace", "name"]
)
AUTOSCALE_BACKLOG = Gauge(
    "daemonpool_autoscale_backlog_items", "Queued items the pool's backlog source counts.", ["namespace", "name"]
)


def autoscaled(key: tuple, desired: int, busy: float, backlog: int | None) -> None:
    AUTOSCALE_DESIRED.labels(*key).set(desired)
    AUTOSCALE_BUSY.labels(*key).set(busy)
    if backlog is not None:
        AUTOSCALE_BACKLOG.labels(*key).set(backlog)


def forget_autoscaled(key: tuple) -> None:
    for g in (AUTOSCALE_DESIRED, AUTOSCALE_BUSY, AUTOSCALE_BACKLOG):
        try:
            g.remove(*key)
        except KeyError:
            pass


_last_event: dict = {}


def mark_now(gauge: Gauge, times: dict, resource: str) -> None:
    """Record that ``resource`` was seen now; ``gauge`` then reports the seconds since, at scrape time."""
    if resource not in times:

        def age(r: str = resource) -> float:
            return time.monotonic() - times[r]

        gauge.labels(resource).set_function(age)
    times[resource] = time.monotonic()


def watch_event(resource: str) -> None:
    WATCH_EVENTS.labels(resource).inc()
    mark_now(WATCH_AGE, _last_event, resource)


class PoolConditions:
    """The pools, from the cache, exported by the leader only (a standby's cache is as full, and two replicas
    each exporting them counted every pool twice):

    - daemonpool_pools{condition, status, reason}: how many pools show each condition;
    - daemonpool_pool_condition{namespace, name, condition, reason}: 1 while that condition is True, else 0;
    - daemonpool_pool_workers{namespace, name, state}: desired (spec.peers or the autoscaler's count), existing,
      ready and updated workers;
    - daemonpool_pool_restarts{namespace, name}: container restarts of the current workers (status.restarts).
    """

    def __init__(self, pools, leading=lambda: True):
        self._pools = pools
        self._leading = leading

    def collect(self):
        if not self._leading():
            return
        g = GaugeMetricFamily(
            "daemonpool_pools", "Pools by condition, status and reason.", labels=["condition", "status", "reason"]
        )
        per = GaugeMetricFamily(
            "daemonpool_pool_condition",
            "1 while the pool's condition is True, else 0; reason is the condition's.",
            labels=["namespace", "name", "condition", "reason"],
        )
        workers = GaugeMetricFamily(
            "daemonpool_pool_workers", "Workers of the pool by state.", labels=["namespace", "name", "state"]
        )
        restarts = GaugeMetricFamily(
            "daemonpool_pool_restarts",
            "Container restarts of the pool's current workers.",
            labels=["namespace", "name"],
        )
        counts: dict = {}
        for pool in self._pools():
            meta, st = pool.get("metadata") or {}, pool.get("status") or {}
            ns, name = meta.get("namespace", ""), meta.get("name", "")
            if not name:
                continue
            for c in st.get("conditions") or []:
                key = (c.get("type", ""), c.get("status", ""), c.get("reason", ""))
                counts[key] = counts.get(key, 0) + 1
                per.add_metric([ns, name, key[0], key[2]], 1 if key[1] == "True" else 0)
            spec = pool.get("spec") or {}
            want = (st.get("autoscale") or {}).get("desired", spec.get("peers", 1))
            for state, n in (
                ("desired", want),
                ("existing", st.get("peers", 0)),
                ("ready", st.get("readyPeers", 0)),
                ("updated", st.get("updatedPeers", 0)),
            ):
                workers.add_metric([ns, name, state], n)
            restarts.add_metric([ns, name], st.get("restarts", 0))
        for key, n in sorted(counts.items()):
            g.add_metric(list(key), n)
        yield from (g, per, workers, restarts)


def build_info(version: str, kopf_version: str, python: str) -> None:
    """daemonpool_build_info{version, kopf, python} 1: which build runs, for dashboards and upgrade checks."""
    BUILD_INFO.labels(version, kopf_version, python).set(1)


BUILD_INFO = Gauge("daemonpool_build_info", "1, labelled with the running build.", ["version", "kopf", "python"])


def _respond(method: str, target: str) -> bytes:
    head_only = method == "HEAD"
    if method not in ("GET", "HEAD"):
        return response(405, b"only GET and HEAD\n", TEXT, head_only)
    if target.partition("?")[0] != "/metrics":
        return response(404, b"not found: /metrics\n", TEXT, head_only)
    return response(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST, head_only)


def serve(port: int, pools, leading=lambda: True) -> BoundedServer:
    """Start the /metrics endpoint on the runtime's bounded server (prometheus-client's own server starts a
    thread per connection: 1,242 idle connections made 1,244 threads)."""
    REGISTRY.register(PoolConditions(pools, leading))
    return BoundedServer(_respond, port, name="metrics")
