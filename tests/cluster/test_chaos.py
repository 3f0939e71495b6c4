"""Chaos (issue 14): pools churn in a seeded random order while the leader is killed again and again.

Two operator replicas. Pools on fake nodes (kwok) are created, scaled, edited and deleted from a seeded
random sequence while the leader is killed — SIGKILL of its container from the node and deletion of its
pod, alternating. At the end every pool matches its last spec, no Deployment is left without its pool,
no pool has more than one live ReplicaSet, and every write came from a pod that was leader.

CI size by default (40 pools, 4 kills); DAEMONPOOL_CHAOS_FULL=1 runs the full size (100 pools, 10
kills). DAEMONPOOL_CHAOS_SEED picks another sequence. Its one failure (two pools not Ready 240 s after
the churn) fits a gap then found in the cache: a replica that listed again (at start, or after its
watch's resourceVersion expired) kept Deployments and pods deleted meanwhile (kopf sends no DELETED for
them), so a pool created again under the same name stayed in DeploymentConflict with a Deployment that
no longer existed. cache.World.listed drops them now; the failure itself was not reproduced.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time

import pytest

from testkit.cluster import (
    holder,
    kill_leader,
    leader_pod,
    record,
    wait,
    worker_pool,
    writer_pods,
    writes_outside_terms,
)
from testkit.skips import unavailable

FULL = os.environ.get("DAEMONPOOL_CHAOS_FULL") == "1"
pytestmark = pytest.mark.timeout(1800)
POOLS, KILLS = (100, 10) if FULL else (40, 4)
SEED = int(os.environ.get("DAEMONPOOL_CHAOS_SEED", "14"))


class Churn:
    """The seeded sequence of pool changes, applied from a thread; ``last`` is each pool's last spec."""

    def __init__(self, cluster, ns, image, placement, seed):
        self.cluster, self.ns, self.image, self.placement = cluster, ns, image, placement
        self.rng = random.Random(seed)
        self.last: dict = {}  # name -> (peers, value), or None once deleted
        self.ops: dict = {"create": 0, "scale": 0, "edit": 0, "delete": 0}
        self.stop = threading.Event()
        self.errors: list = []

    def body(self, name, peers, value):
        pool = worker_pool(name, self.ns, self.image, peers=peers, timeout=30, work_seconds=value)
        pool["spec"]["template"]["spec"].update(self.placement)
        return pool

    def step(self):
        name = f"c-{self.rng.randrange(POOLS):03d}"
        cur = self.last.get(name)
        roll = self.rng.random()
        if cur is None:
            op, new = "create", (self.rng.randint(1, 3), str(self.rng.randint(1, 9)))
        elif roll < 0.45:
            op, new = "scale", (self.rng.randint(0, 4), cur[1])
        elif roll < 0.8:
            op, new = "edit", (cur[0], str(self.rng.randint(1, 9)))
        else:
            op, new = "delete", None
        if op == "delete":
            r = self.cluster.kubectl("delete", "dp", name, "-n", self.ns, "--wait=false", check=False)
        else:
            r = self.cluster.kubectl(
                "apply", "-f", "-", input=json.dumps(self.body(name, *new)), check=False, timeout=60
            )
        if r.returncode:
            self.errors.append(f"{op} {name}: {r.stderr.strip()}")
            return
        self.last[name] = new
        self.ops[op] += 1

    def run(self):
        while not self.stop.is_set():
            self.step()


def _ready(p) -> bool:
    conds = {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}
    return (
        conds.get("Ready", {}).get("status") == "True"
        and conds["Ready"].get("observedGeneration") == p["metadata"]["generation"]
    )


def _why(p, d) -> str:
    """What a pool that is not Ready looks like, for the failure message."""
    if p is None:
        return "no pool"
    ready = {c["type"]: c for c in (p.get("status") or {}).get("conditions", [])}.get("Ready", {})
    out = (
        f"generation {p['metadata']['generation']}, Ready {ready.get('status')} {ready.get('reason')} "
        f"at generation {ready.get('observedGeneration')}: {ready.get('message')}"
    )
    if d is None:
        return out + "; no Deployment"
    s = d.get("status") or {}
    return (
        out
        + f"; Deployment {s.get('readyReplicas', 0)}/{d['spec']['replicas']} ready, uid owners "
        + str([r["uid"][:8] for r in d["metadata"].get("ownerReferences", [])])
        + f" (pool uid {p['metadata']['uid'][:8]})"
    )


def converged(cluster, ns, last: dict) -> bool:
    pools = {p["metadata"]["name"]: p for p in cluster.get("daemonpools", ns=ns)["items"]}
    deps = {d["metadata"]["name"]: d for d in cluster.get("deployments", ns=ns)["items"]}
    wrong = []
    for name, spec in sorted(last.items()):
        if spec is None:
            if name in pools or name in deps:
                wrong.append(f"{name}: deleted, still there")
            continue
        peers, value = spec
        p, d = pools.get(name), deps.get(name)
        if p is None or d is None or not _ready(p):
            wrong.append(f"{name}: not Ready ({_why(p, d)})")
            continue
        env = {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if d["spec"]["replicas"] != peers or env.get("WORK_SECONDS") != value:
            wrong.append(f"{name}: Deployment {d['spec']['replicas']}/{env.get('WORK_SECONDS')}, want {spec}")
    if wrong:
        raise AssertionError(f"{len(wrong)} pool(s) not converged: {wrong[:5]}")
    return True


def test_pools_converge_while_the_leader_is_killed_again_and_again(cluster, operator, images, fake_nodes):
    if cluster.audit_log is None:
        unavailable("needs the local cluster's audit log (who wrote) and its node (to kill containers)")
    wait(lambda: len([p for p in operator.pods() if p["status"].get("podIP")]) == 2, 180, "2 operator replicas")
    ns = cluster.namespace("chaos")
    start = len(cluster.audit_log.read_text().splitlines())
    churn = Churn(cluster, ns, images["example-worker"], fake_nodes, SEED)
    for _ in range(POOLS):  # a first round so that most pools exist when the kills start
        churn.step()
    worker = threading.Thread(target=churn.run, name="churn", daemon=True)
    worker.start()
    takeovers, leaders = [], set()
    try:
        for i in range(KILLS):
            old = wait(lambda: leader_pod(cluster, operator), 90, "a leader")
            old_holder = holder(cluster, operator)
            leaders.add(old["metadata"]["name"])
            time.sleep(3)  # some churn under this leader
            t0 = time.monotonic()
            kill_leader(cluster, operator, old, i)
            wait(lambda h=old_holder: holder(cluster, operator) not in (None, h), 90, "the Lease taken over")
            takeovers.append(round(time.monotonic() - t0, 1))
        leaders.add(wait(lambda: leader_pod(cluster, operator), 90, "a leader")["metadata"]["name"])
    finally:
        churn.stop.set()
        worker.join(120)
    assert not churn.errors, churn.errors[:5]
    t_end = time.monotonic()
    wait(lambda: converged(cluster, ns, churn.last), 240, "every pool at its last spec", interval=2)
    settle = round(time.monotonic() - t_end, 1)

    owners = {p["metadata"]["uid"] for p in cluster.get("daemonpools", ns=ns)["items"]}
    orphans = [
        d["metadata"]["name"]
        for d in cluster.get("deployments", ns=ns)["items"]
        if not {r["uid"] for r in d["metadata"].get("ownerReferences", [])} & owners
    ]
    assert orphans == [], f"Deployments without their pool: {orphans}"
    live: dict = {}
    for rs in cluster.get("replicasets", ns=ns)["items"]:
        if rs["spec"].get("replicas"):
            live.setdefault(rs["metadata"]["labels"].get("daemonpool.dev/pool"), []).append(rs["metadata"]["name"])
    assert [k for k, v in live.items() if len(v) > 1] == [], f"pools with two live ReplicaSets: {live}"
    writers = writer_pods(cluster, operator.username, start)
    leaders |= {p["metadata"]["name"] for p in operator.pods()}  # the last leader and its standby
    record(
        "chaos",
        {
            "seed": SEED,
            "pools": POOLS,
            "kills": KILLS,
            "ops": churn.ops,
            "lease_takeover_p50": statistics.median(takeovers),
            "lease_takeover_p95": sorted(takeovers)[max(0, round(0.95 * len(takeovers)) - 1)],
            "lease_takeovers": takeovers,
            "converged_after_churn_s": settle,
            "writer_pods": sorted(writers),
        },
    )
    assert set(writers) <= leaders, f"writes by a pod that never led: {set(writers) - leaders}"
    outside = writes_outside_terms(cluster, operator, start)
    assert outside == [], f"{len(outside)} write(s) by a pod that did not hold the Lease then: {outside[:5]}"
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
