"""A watch cut without being closed (issue 14): the leader's watch connections stop receiving anything.

In the leader pod's network namespace an nftables rule drops every packet the API server sends on the
operator's idle connections (its watches) and nothing else: the connections stay open, the process
healthy, the Lease renewed. A pool created after that must still be reconciled, by the same leader,
once the operator has noticed and watched again (watchdog.py: TCP keepalive, then the census).
"""

from __future__ import annotations

import re
import time

import pytest

from localcluster.procs import ctr, sh

from testkit.cluster import holder, leader_pod, operator_metric, record, wait, worker_pool
from testkit.skips import unavailable

pytestmark = pytest.mark.timeout(600)
# watchdog.KEEPALIVE_SECONDS (40) finds the dead connections; the census (2 x 30 s) is the second net.
RECOVERY_BOUND = 150
TABLE = "daemonpool_test_stall"


def container_pid(pod: dict) -> int:
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    for line in ctr("tasks", "ls").stdout.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == cid:
            return int(pid)
    raise AssertionError(f"no running task for container {cid}")


def api_connections(pid: int) -> dict:
    """{local port: (bytes sent, bytes received)} of the pod's established TCP connections to port 443/6443."""
    out = sh("nsenter", "-t", str(pid), "-n", "ss", "-tniH", "state", "established").stdout
    conns, port = {}, None
    for line in out.splitlines():
        if not line.startswith((" ", "\t")):
            local, peer = line.split()[-2:]
            port = int(local.rsplit(":", 1)[1]) if peer.rsplit(":", 1)[1] in ("443", "6443") else None
            continue
        if port is not None:
            sent = re.search(r"bytes_sent:(\d+)", line)
            got = re.search(r"bytes_received:(\d+)", line)
            conns[port] = (int(sent.group(1)) if sent else 0, int(got.group(1)) if got else 0)
    return conns


def test_a_watch_that_stops_receiving_is_noticed_and_rewatched(cluster, operator, images):
    if not cluster.local:
        unavailable("cuts connections inside the operator pod's network namespace: needs the local cluster's node")
    leader = wait(lambda: leader_pod(cluster, operator), 120, "a leader")
    name, lease = leader["metadata"]["name"], holder(cluster, operator)
    restarts_before = leader["status"]["containerStatuses"][0]["restartCount"]
    pid = container_pid(leader)
    ns = cluster.namespace("stall")
    cluster.apply(worker_pool("before", ns, images["example-worker"], peers=1, work_seconds="0"))
    wait(lambda: cluster.get("deployment", "before", ns=ns, check=False), 60, "the first pool's Deployment")
    requests_before = operator_metric(cluster, operator, name, "daemonpool_watch_requests_total")

    # The watches: connections to the API server that sent nothing for 6 s (a watch sends its request once,
    # then only receives; the Lease is renewed every 2 s on a connection of its own, left alone).
    first = api_connections(pid)
    time.sleep(6)
    second = api_connections(pid)
    idle = sorted(p for p, (sent, _) in second.items() if p in first and first[p][0] == sent)
    assert len(idle) >= 3, f"expected the 3 watch connections among {second} (first look {first})"
    rules = "\n".join(f"    tcp dport {p} counter drop" for p in idle)
    sh(
        "nsenter",
        "-t",
        str(pid),
        "-n",
        "nft",
        "-f",
        "-",
        input=f"table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority -300;\n{rules}\n  }}\n}}\n",
    )
    try:
        t0 = time.monotonic()
        cluster.apply(worker_pool("after", ns, images["example-worker"], peers=1, work_seconds="0"))
        wait(
            lambda: cluster.get("deployment", "after", ns=ns, check=False),
            RECOVERY_BOUND,
            "the Deployment of a pool created after the watches were cut",
        )
        recovered = round(time.monotonic() - t0, 1)
        dropped = sh("nsenter", "-t", str(pid), "-n", "nft", "list", "table", "inet", TABLE).stdout
    finally:
        sh("nsenter", "-t", str(pid), "-n", "nft", "delete", "table", "inet", TABLE, check=False)
    now = leader_pod(cluster, operator)
    assert now is not None and now["metadata"]["name"] == name and holder(cluster, operator) == lease, (
        "the same leader recovered its watches (no failover)"
    )
    assert now["status"]["containerStatuses"][0]["restartCount"] == restarts_before, "no restart of the operator"
    requests_after = operator_metric(cluster, operator, name, "daemonpool_watch_requests_total")
    assert requests_after >= requests_before + 1, "the operator watched again"
    packets = sum(int(n) for n in re.findall(r"packets (\d+)", dropped))
    record(
        "watch_stall",
        {
            "cut_connections": len(idle),
            "recovered_seconds": recovered,
            "watch_requests_opened": requests_after - requests_before,
            "census_restarts": operator_metric(cluster, operator, name, "daemonpool_watch_restarts_total"),
            "packets_dropped": packets,
        },
    )
