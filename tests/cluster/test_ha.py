"""An operator you can leave alone (issue 14): one leader of two replicas, failover, metrics, fenced writes."""

from __future__ import annotations

import statistics
import time

import pytest

from testkit.cluster import holder, kill_leader, leader_pod, record, wait, worker_pool, writer_pods
from testkit.skips import unavailable

pytestmark = pytest.mark.timeout(900)
METRICS = [
    "daemonpool_reconciles_total",
    "daemonpool_reconcile_duration_seconds",
    "daemonpool_queue_depth",
    "daemonpool_api_requests_total",
    "daemonpool_watch_events_total",
    "daemonpool_watch_event_age_seconds",
    "daemonpool_watch_input_age_seconds",
    "daemonpool_watch_requests_total",
    "daemonpool_watch_restarts_total",
    "daemonpool_watch_stale_checks_total",
    "daemonpool_pools",
    "daemonpool_pool_condition",
    "daemonpool_pool_workers",
    "daemonpool_pool_restarts",
    "daemonpool_build_info",
    "daemonpool_leader",
    "daemonpool_leader_transitions_total",
    "daemonpool_loop_errors_total",
]
KILLS = 4  # CI size; each kill is a failover


def is_ready(cluster, ns, name, peers):
    p = cluster.get("dp", name, ns=ns, check=False) or {}
    conds = {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}
    return (
        conds.get("Ready", {}).get("status") == "True"
        and p["status"].get("readyPeers") == peers
        and conds["Ready"].get("observedGeneration") == p["metadata"]["generation"]
    )


def test_one_leader_failover_metrics_and_no_writes_by_a_standby(cluster, operator, images):
    if cluster.audit_log is None:
        unavailable("needs the local cluster's audit log (who wrote)")
    wait(
        lambda: (
            len([p for p in operator.pods() if all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))])
            == 2
        ),
        180,
        "2 ready operator replicas",
    )
    first = wait(lambda: leader_pod(cluster, operator), 60, "a leader")
    # Every metric, with its help text, from the leader's /metrics (through the API server's pod proxy).
    text = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{operator.namespace}/pods/{first['metadata']['name']}:8081/proxy/metrics"
    ).stdout
    missing = [m for m in METRICS if f"# HELP {m} " not in text]
    assert missing == [], missing
    assert "daemonpool_leader 1.0" in text
    # The pools come from the leader only: a standby's copy counted every pool twice in sum().
    (standby,) = [p for p in operator.pods() if p["metadata"]["name"] != first["metadata"]["name"]]
    text = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{operator.namespace}/pods/{standby['metadata']['name']}:8081/proxy/metrics"
    ).stdout
    assert (
        "daemonpool_leader 0.0" in text and "daemonpool_pools{" not in text and "daemonpool_pool_condition{" not in text
    )

    ns = cluster.namespace("ha")
    start = len(cluster.audit_log.read_text().splitlines())
    failovers = []
    try:
        leaders = {first["metadata"]["name"]}
        takeovers = []
        for i in range(KILLS):
            old = leader_pod(cluster, operator)
            old_holder = holder(cluster, operator)
            leaders.add(old["metadata"]["name"])
            t0 = time.monotonic()
            kill_leader(cluster, operator, old, i)
            wait(lambda h=old_holder: holder(cluster, operator) not in (None, h), 90, "the Lease taken over")
            takeovers.append(round(time.monotonic() - t0, 1))
            name = f"after-{i}"
            cluster.apply(worker_pool(name, ns, images["example-worker"], peers=1, work_seconds="0"))
            wait(lambda n=name: is_ready(cluster, ns, n, 1), 120, f"{name} Ready under the next leader")
            failovers.append(round(time.monotonic() - t0, 1))
            leaders.add(wait(lambda: leader_pod(cluster, operator), 60, "a leader again")["metadata"]["name"])
        # Writes by the operator's ServiceAccount, by the pod that made them: only the leader of the moment.
        writers = writer_pods(cluster, operator.username, start)
        deps = cluster.get("deployments", ns=ns)["items"]
        assert sorted(d["metadata"]["name"] for d in deps) == sorted(f"after-{i}" for i in range(KILLS)), "no orphans"
        rs = [r for r in cluster.get("replicasets", ns=ns)["items"] if r["spec"].get("replicas")]
        assert len(rs) == KILLS, "one ReplicaSet per pool: nobody wrote a Deployment twice"
        record(
            "failover_seconds",
            {
                "kills": KILLS,
                "lease_takeover_p50": statistics.median(takeovers),
                "lease_takeover_max": max(takeovers),
                "to_a_new_pool_ready": failovers,
                "writer_pods": sorted(writers),
                "leaders": sorted(leaders),
            },
        )
        assert set(writers) <= leaders, f"writes by a pod that never led: {set(writers) - leaders}"
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
