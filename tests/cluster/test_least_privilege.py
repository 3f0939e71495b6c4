"""The operator's ServiceAccount can change only the deletion cost on pools' pods (issue 21): RBAC grants
patch on pods (it cannot name one annotation), and the chart's ValidatingAdmissionPolicy holds it to that.
Tried as that account would be used by whoever holds its token: change an image, a label, a pod that is not
a pool's; only the annotation passes."""

from __future__ import annotations

import json

import pytest

from testkit.cluster import wait, worker_pool

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("privilege", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def as_operator(cluster, operator, *args):
    return cluster.kubectl("--as", operator.username, *args, check=False)


def test_the_operators_account_may_change_only_the_deletion_cost_of_pools_pods(cluster, operator, images, ns):
    cluster.apply(worker_pool("lp", ns, images["example-worker"], peers=1))
    pod = wait(
        lambda: (p := cluster.get("pods", "-l", "daemonpool.dev/pool=lp", ns=ns)["items"]) and p[0], 120, "a worker"
    )
    name = pod["metadata"]["name"]
    cost = {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-7"}}}
    ok = as_operator(cluster, operator, "patch", "pod", name, "-n", ns, "--type=merge", "-p", json.dumps(cost))
    assert ok.returncode == 0, ok.stderr
    refused = {
        "an image": {"spec": {"containers": [{"name": "worker", "image": "evil:latest"}]}},
        "a label": {"metadata": {"labels": {"stolen": "yes"}}},
        "another annotation": {"metadata": {"annotations": {"note": "x"}}},
    }
    for what, patch in refused.items():
        r = as_operator(cluster, operator, "patch", "pod", name, "-n", ns, "--type=strategic", "-p", json.dumps(patch))
        assert r.returncode != 0, f"{what} was changed"
        assert "may change only the annotation controller.kubernetes.io/pod-deletion-cost" in r.stderr, r.stderr
    # A pod that is not a pool's (kube-system's, say): not even the annotation.
    other = cluster.get("pods", ns="kube-system")["items"] or cluster.get("pods", ns=operator.namespace)["items"]
    target = other[0]["metadata"]
    r = as_operator(
        cluster,
        operator,
        "patch",
        "pod",
        target["name"],
        "-n",
        target["namespace"],
        "--type=merge",
        "-p",
        json.dumps(cost),
    )
    assert r.returncode != 0 and "may only patch pods of DaemonPools" in r.stderr, r.stderr
    after = cluster.get("pod", name, ns=ns)
    assert after["spec"]["containers"][0]["image"] == images["example-worker"]
    assert after["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"] == "-7"
