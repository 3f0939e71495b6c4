"""What one node cannot show (issue 27), on the kind cluster of kind-config.yaml (1 control plane, 2 workers):
workers spread over nodes, the operator's two replicas apart, and a node that disappears with the leader on it.

Runs in hack/test's kind stage (DAEMONPOOL_KIND=1); needs at least two schedulable real nodes.
"""

from __future__ import annotations

import collections
import json
import subprocess
import time

import pytest

from testkit.cluster import holder, leader_pod, wait, worker_pool
from testkit.skips import unavailable

pytestmark = pytest.mark.timeout(900)
LEASE_SECONDS = 10  # operator/daemonpool_operator/leader.py


def schedulable_nodes(cluster) -> list:
    nodes = cluster.get("nodes")["items"]
    return sorted(
        n["metadata"]["name"]
        for n in nodes
        if not any(t.get("effect") == "NoSchedule" for t in n["spec"].get("taints") or [])
        and n["metadata"].get("labels", {}).get("type") != "kwok"
    )


@pytest.fixture(scope="module")
def nodes(cluster):
    names = schedulable_nodes(cluster)
    if len(names) < 2 or getattr(cluster, "kind", None) is None:
        unavailable(f"needs the kind cluster of kind-config.yaml (two worker nodes); schedulable here: {names}")
    return names


def pods_of(cluster, ns, pool) -> list:
    items = cluster.get("pods", "-l", f"daemonpool.dev/pool={pool}", ns=ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def ready(pod) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def conditions(cluster, ns, name) -> dict:
    p = cluster.get("dp", name, ns=ns)
    return {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}


def test_workers_spread_over_nodes_and_the_operator_replicas_sit_apart(cluster, nodes, operator, images):
    ns = cluster.namespace("spread")
    cluster.apply(worker_pool("spread", ns, images["example-worker"], peers=6))
    wait(lambda: len([p for p in pods_of(cluster, ns, "spread") if ready(p)]) == 6, 180, "6 ready workers")
    per_node = collections.Counter(p["spec"]["nodeName"] for p in pods_of(cluster, ns, "spread"))
    # The default spread is soft, so the scheduler may skew by one: never all on one node.
    assert set(per_node) == set(nodes), per_node
    assert max(per_node.values()) - min(per_node.values()) <= 1, per_node
    # The chart's default anti-affinity puts its two replicas on different nodes.
    wait(lambda: len(operator.pods()) == 2 and all(p["spec"].get("nodeName") for p in operator.pods()), 120, "2 pods")
    assert len({p["spec"]["nodeName"] for p in operator.pods()}) == 2, [p["spec"]["nodeName"] for p in operator.pods()]


def docker(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120)


def test_a_node_that_disappears_with_the_leader_on_it(cluster, nodes, operator, images):
    """The node holding the leader and some workers is killed (its container, as a VM that dies): the standby on
    the other node takes the Lease within its term, the pool's status says workers are missing while they are,
    and the pool is whole again on the node left. Tolerations of 5 s (the template's) instead of the default
    300 s keep the test short; the operator adds none of its own."""
    ns = cluster.namespace("lost-node")
    tolerations = [
        {"key": f"node.kubernetes.io/{t}", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        for t in ("unreachable", "not-ready")
    ]
    pool = worker_pool("lost", ns, images["example-worker"], peers=4)
    pool["spec"]["template"]["spec"]["tolerations"] = tolerations
    cluster.apply(pool)
    wait(lambda: len([p for p in pods_of(cluster, ns, "lost") if ready(p)]) == 4, 180, "4 ready workers")
    wait(lambda: conditions(cluster, ns, "lost").get("Ready", {}).get("status") == "True", 60, "pool Ready")
    leader = wait(lambda: leader_pod(cluster, operator), 60, "a leader")
    victim = leader["spec"]["nodeName"]
    standby = next(p for p in operator.pods() if p["metadata"]["name"] != leader["metadata"]["name"])
    assert standby["spec"]["nodeName"] != victim
    on_victim = [p["metadata"]["name"] for p in pods_of(cluster, ns, "lost") if p["spec"]["nodeName"] == victim]
    assert on_victim, "the spread put no worker on the leader's node"
    t0 = time.monotonic()
    docker(cluster, "kill", victim)
    try:
        # The standby takes over once the Lease runs out (it renews every few seconds; one term, plus a retry).
        new = wait(
            lambda: (h := holder(cluster, operator)) and h.startswith(standby["metadata"]["name"] + "_") and h,
            LEASE_SECONDS * 3 + 30,
            "the standby holding the Lease",
        )
        took_over = time.monotonic() - t0
        assert took_over < LEASE_SECONDS * 3 + 30, took_over
        # While the node is gone, the pool says so: not Ready, and why.
        not_ready = wait(
            lambda: (c := conditions(cluster, ns, "lost").get("Ready", {})).get("status") == "False" and c,
            150,
            "the pool's Ready False while workers are lost",
        )
        # Whole again on the node left, and Ready.
        wait(
            lambda: len([p for p in pods_of(cluster, ns, "lost") if ready(p) and p["spec"]["nodeName"] != victim]) == 4,
            240,
            "4 ready workers on the nodes left",
        )
        wait(lambda: conditions(cluster, ns, "lost").get("Ready", {}).get("status") == "True", 60, "pool Ready again")
        whole = time.monotonic() - t0
        print(
            json.dumps(
                {
                    "killed": victim,
                    "lease_taken_s": round(took_over, 1),
                    "whole_again_s": round(whole, 1),
                    "holder": new,
                    "not_ready": {k: not_ready[k] for k in ("reason", "message")},
                }
            )
        )
        assert not_ready["message"], not_ready
    finally:
        docker(cluster, "start", victim)
        wait(
            lambda: (
                cluster.kubectl(
                    "get", "node", victim, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}"
                ).stdout
                == "True"
            ),
            180,
            f"{victim} Ready again",
        )
