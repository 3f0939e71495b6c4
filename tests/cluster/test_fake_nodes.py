"""Many pools on fake nodes (kwok): 50 pools x 5 workers converge, scale and delete cleanly (issue 12).

kwok's pods run no container, so this is the operator's cost at size, not the workers'. The timings are
recorded (tests/testkit/measure.py), never asserted beyond generous timeouts: bench/scale.py compares them with
plain Deployments.
"""

from __future__ import annotations

import json
import time

import pytest

from testkit.cluster import record, wait, worker_pool

pytestmark = pytest.mark.timeout(1200)
POOLS, PEERS = 50, 5
# Peers scaled to and back: 50 x 8 = 400 pods at the peak, on the fake nodes (conftest: 5 of 110 pods).
SCALED = 8


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("fakenodes")
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _pool(ns: str, i: int, peers: int, placement: dict, image: str) -> dict:
    pool = worker_pool(f"fp-{i:02d}", ns, image, peers=peers, timeout=30)
    pool["spec"]["template"]["spec"].update(placement)
    return pool


def _pools(cluster, ns) -> list:
    return cluster.get("daemonpools", ns=ns)["items"]


def _all_ready(cluster, ns, peers: int) -> bool:
    pools = _pools(cluster, ns)
    bad = [
        p["metadata"]["name"]
        for p in pools
        if not (
            p.get("status", {}).get("readyPeers") == peers
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and p["status"].get("observedGeneration") == p["metadata"]["generation"]
        )
    ]
    if len(pools) != POOLS or bad:
        raise AssertionError(
            f"{len(pools)} pools, not Ready with {peers} peers: {bad[:5]}{'…' if len(bad) > 5 else ''}"
        )
    return True


def _live_pods(cluster, ns) -> list:
    items = cluster.get("pods", "-l", "daemonpool.dev/pool", ns=ns)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_fifty_pools_on_fake_nodes_converge_scale_and_delete(cluster, operator, images, fake_nodes, ns):
    image = images["example-worker"]
    t0 = time.monotonic()
    cluster.apply([_pool(ns, i, PEERS, fake_nodes, image) for i in range(POOLS)], ns=ns)
    wait(lambda: _all_ready(cluster, ns, PEERS), 300, f"{POOLS} pools Ready with {PEERS} peers")
    converged = time.monotonic() - t0

    # Each pool's Deployment is its own (owner, replicas) and every worker sits on a fake node.
    deps = {d["metadata"]["name"]: d for d in cluster.get("deployments", ns=ns)["items"]}
    assert sorted(deps) == [f"fp-{i:02d}" for i in range(POOLS)]
    for name, d in deps.items():
        (owner,) = d["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner.get("controller")) == ("DaemonPool", name, True)
        assert d["spec"]["replicas"] == PEERS
    pods = _live_pods(cluster, ns)
    assert len(pods) == POOLS * PEERS
    assert all(p["spec"]["nodeName"].startswith("fake-") for p in pods), "a worker left the fake nodes"

    scaled = {}
    for peers in (SCALED, PEERS):
        t1 = time.monotonic()
        for i in range(POOLS):
            cluster.kubectl(
                "patch", "dp", f"fp-{i:02d}", "-n", ns, "--type=merge", "-p", json.dumps({"spec": {"peers": peers}})
            )
        wait(lambda p=peers: _all_ready(cluster, ns, p), 300, f"{POOLS} pools Ready with {peers} peers")
        wait(lambda p=peers: len(_live_pods(cluster, ns)) == POOLS * p, 120, f"{POOLS * peers} live pods")
        scaled[peers] = time.monotonic() - t1
    replicasets = cluster.get("replicasets", ns=ns)["items"]
    assert len(replicasets) == POOLS, "scaling made a new ReplicaSet (a template change): it must not"

    t2 = time.monotonic()
    cluster.kubectl("delete", "daemonpools", "--all", "-n", ns, "--wait=true", timeout=300)
    wait(lambda: not cluster.get("deployments", ns=ns)["items"], 180, "the pools' Deployments garbage-collected")
    wait(lambda: not cluster.get("pods", ns=ns)["items"], 180, "the pools' pods gone")
    deleted = time.monotonic() - t2
    record(
        "fake_nodes_50x5",
        {
            "pools": POOLS,
            "peers": PEERS,
            "converge_s": round(converged, 1),
            f"scale_to_{SCALED}_s": round(scaled[SCALED], 1),
            f"scale_to_{PEERS}_s": round(scaled[PEERS], 1),
            "delete_s": round(deleted, 1),
        },
    )
