"""What one node cannot show (issue 27), on the kind cluster of kind-config.yaml (1 control plane, 2 workers):
workers spread over nodes, the operator's two replicas apart, and a node that disappears with the leader on it.

Runs in hack/test's kind stage (DAEMONPOOL_KIND=1); needs at least two schedulable real nodes.
"""

from __future__ import annotations

import collections
import json
import subprocess
import threading
import time

import psycopg
import pytest

from testkit.cluster import holder, leader_pod, wait, worker_pool, writer_pods, writes_outside_terms
from testkit.mail import fate, mailer_pool, outbox
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


class PodWatch:
    """`kubectl get pods -w -o json` in the background: every state each pod was seen in, so the exit code of a
    worker that is evicted (and gone a moment later) is not missed."""

    def __init__(self, cluster, ns):
        self.proc = subprocess.Popen(
            [cluster.kubectl_bin, "get", "pods", "-n", ns, "-w", "-o", "json"],
            stdout=subprocess.PIPE,
            text=True,
            env=cluster.env(),
        )
        self.exit_codes: dict = {}
        self.min_ready: int | None = None
        self.pods: dict = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        decoder, buf = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buf += line
            while buf.strip():
                try:
                    obj, end = decoder.raw_decode(buf.lstrip())
                except ValueError:
                    break
                buf = buf.lstrip()[end:]
                self._seen(obj)

    def _seen(self, pod):
        name = pod["metadata"]["name"]
        self.pods[name] = pod
        for c in pod["status"].get("containerStatuses") or []:
            term = (c.get("state") or {}).get("terminated")
            if term:
                self.exit_codes[name] = term["exitCode"]

    def ready_now(self) -> int:
        return sum(1 for p in self.pods.values() if ready(p) and not p["metadata"].get("deletionTimestamp"))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def test_kubectl_drain_keeps_peers_minus_max_unavailable_ready_and_loses_no_mail(
    cluster, nodes, operator, images, backing
):
    """A pool of 4 mailers with spec.disruption.maxUnavailable 1, draining a real outbox, and one node drained
    under it: the drain evicts one worker at a time, each after the last one's replacement is Ready; the evicted
    ones finish the mail they hold and exit 0 on SIGTERM (not 137, a SIGKILL); every mail is sent once."""
    pg, smtp = backing
    n = 600  # 60 s at 10 a second for the pool: the drain (seconds) happens while most are still due
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        outbox.migrate(db)
        db.execute("TRUNCATE mailer_outbox RESTART IDENTITY")
        ns = cluster.namespace("drain", labels={"pod-security.kubernetes.io/enforce": "restricted"})
        pool = mailer_pool(
            "drained",
            ns,
            images["mailer"],
            pg.dsn(cluster.host_ip),
            f"{cluster.host_ip}:{smtp.port}",
            peers=4,
            rate="10/s",
            disruption={"maxUnavailable": 1},
        )
        cluster.apply(pool)
        wait(lambda: len([p for p in pods_of(cluster, ns, "drained") if ready(p)]) == 4, 180, "4 ready workers")
        budget = wait(
            lambda: (
                (b := cluster.get("pdb", "drained", ns=ns, check=False))
                and b.get("status", {}).get("currentHealthy") == 4
                and b
            ),
            60,
            "the pool's PodDisruptionBudget counting 4 healthy",
        )
        assert budget["spec"]["maxUnavailable"] == 1 and budget["status"]["disruptionsAllowed"] == 1
        assert budget["metadata"]["ownerReferences"][0]["kind"] == "DaemonPool"
        per_node = collections.Counter(p["spec"]["nodeName"] for p in pods_of(cluster, ns, "drained"))
        node, on_node = per_node.most_common(1)[0]
        assert on_node >= 2, per_node
        watch = PodWatch(cluster, ns)
        lowest = [4]
        done = threading.Event()

        def sample():
            while not done.is_set():
                if watch.pods:
                    lowest[0] = min(lowest[0], watch.ready_now())
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        try:
            wait(lambda: watch.ready_now() == 4, 30, "the watch seeing 4 ready workers")
            outbox.enqueue_many(db, [(f"drain{i}@example.com", f"Order {i}", "Thanks.") for i in range(n)])
            wait(lambda: outbox.stats(db)["sent"] >= 20, 60, "the pool sending")
            sampler.start()
            t0 = time.monotonic()
            r = cluster.kubectl(
                "drain",
                node,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=300s",
                "--pod-selector",
                "daemonpool.dev/pool=drained",
                check=False,
                timeout=330,
            )
            took = time.monotonic() - t0
            sent_by_then = outbox.stats(db)["sent"]
            assert r.returncode == 0, r.stderr + r.stdout
            wait(lambda: watch.ready_now() == 4, 180, "4 ready workers after the drain")
            done.set()
            sampler.join(5)

            def drained():
                s = outbox.stats(db)
                return s["pending"] == 0 and s["sending"] == 0 and s

            wait(drained, 240, "the outbox to drain")
            result = fate(db, smtp)
            evicted = [name for name, p in watch.pods.items() if p["spec"].get("nodeName") == node]
            print(
                json.dumps(
                    {
                        "drained": node,
                        "evicted": len(evicted),
                        "took_s": round(took, 1),
                        "lowest_ready": lowest[0],
                        "exit_codes": {name: watch.exit_codes.get(name) for name in evicted},
                        "sent_when_the_drain_ended": sent_by_then,
                        **result,
                    }
                )
            )
            assert sent_by_then < n, "the outbox was empty before the drain ended: nothing was in flight"
            assert lowest[0] >= 3, f"ready workers fell to {lowest[0]} during the drain (peers 4, maxUnavailable 1)"
            assert len(evicted) == on_node
            assert all(watch.exit_codes.get(name) == 0 for name in evicted), watch.exit_codes
            assert all(p["spec"]["nodeName"] != node for p in pods_of(cluster, ns, "drained"))
            assert result["messages"] == n
            assert (result["lost"], result["dead"], result["duplicates"]) == ([], [], 0), result
        finally:
            done.set()
            watch.stop()
            cluster.kubectl("uncordon", node, check=False)


def docker(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120)


def test_a_node_that_disappears_with_the_leader_on_it(cluster, nodes, operator, images):
    """The node holding the leader and some workers is killed (its container, as a VM that dies): the standby on
    the other node takes the Lease within its term, the pool's status says workers are missing while they are,
    and the pool is whole again on the node left, with no write by either replica outside its term (the API
    server's audit log, testkit/kind.py). Tolerations of 5 s (the template's) instead of the default 300 s keep
    the test short; the operator adds none of its own."""
    if cluster.audit_log is None:
        unavailable("needs the kind cluster's audit log (who wrote when), which the tests' kind config adds")
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
    start = len(cluster.audit_log.read_text().splitlines())
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
        # Writes by a replica that did not hold the Lease when the API server received or answered them.
        outside = writes_outside_terms(cluster, operator, start)
        writers = sorted(writer_pods(cluster, operator.username, start))
        print(
            json.dumps(
                {
                    "killed": victim,
                    "lease_taken_s": round(took_over, 1),
                    "whole_again_s": round(whole, 1),
                    "holder": new,
                    "not_ready": {k: not_ready[k] for k in ("reason", "message")},
                    "writer_pods": writers,
                    "writes_outside_terms": len(outside),
                }
            )
        )
        assert not_ready["message"], not_ready
        assert outside == [], outside[:10]
        # The standby wrote once it led (status, the replacement workers): the check above saw its writes.
        assert standby["metadata"]["name"] in writers, writers
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
