"""The operator's ServiceAccount can change only the deletion cost on pools' pods (issue 21), and write only
pools' PodDisruptionBudgets: RBAC grants patch on pods (it cannot name one annotation) and writes on budgets
(it cannot name the pools' ones), and the chart's ValidatingAdmissionPolicies hold it to that. Tried as that
account would be used by whoever holds its token: change an image, a label, a pod that is not a pool's,
delete or loosen a user's budget; only the annotation and the pool's own budget pass."""

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


def as_operator(cluster, operator, *args, input=None):
    return cluster.kubectl("--as", operator.username, *args, check=False, input=input)


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


def test_the_operators_account_may_write_only_the_budgets_of_pools(cluster, operator, images, ns):
    """RBAC lets the operator create, patch and delete PodDisruptionBudgets (spec.disruption); the chart's
    policy holds it to the pools' own: a user's budget cannot be deleted or loosened with its token, nor one
    made that looks like a pool's but is not controlled by one. A pool's budget it may still change."""
    cluster.apply(worker_pool("guarded", ns, images["example-worker"], peers=1, disruption={"maxUnavailable": 1}))
    wait(lambda: cluster.get("pdb", "guarded", ns=ns, check=False), 60, "the pool's budget")
    users = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "users", "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "database"}}},
    }
    cluster.apply(users)
    refusal = "may only create, change or delete the PodDisruptionBudgets of DaemonPools"
    loosen = json.dumps({"spec": {"minAvailable": 0}})
    tries = {
        "delete a user's budget": ("delete", "pdb", "users", "-n", ns),
        "loosen a user's budget": ("patch", "pdb", "users", "-n", ns, "--type=merge", "-p", loosen),
        "take a user's budget over": ("label", "pdb", "users", "-n", ns, "daemonpool.dev/pool=guarded"),
    }
    for what, args in tries.items():
        r = as_operator(cluster, operator, *args)
        assert r.returncode != 0, f"{what}: allowed"
        assert refusal in r.stderr, (what, r.stderr)
    fake = {**users, "metadata": {"name": "fake", "namespace": ns, "labels": {"daemonpool.dev/pool": "guarded"}}}
    r = as_operator(cluster, operator, "create", "-f", "-", input=json.dumps(fake))
    assert r.returncode != 0 and refusal in r.stderr, r.stderr
    assert cluster.get("pdb", "users", ns=ns)["spec"]["minAvailable"] == 1
    # The pool's own budget: the operator may change it (what spec.disruption does).
    r = as_operator(
        cluster, operator, "patch", "pdb", "guarded", "-n", ns, "--type=merge", "-p", '{"spec": {"maxUnavailable": 1}}'
    )
    assert r.returncode == 0, r.stderr
    # And delete it once the pool no longer asks for one (spec.disruption removed): the policy lets that through.
    cluster.kubectl(
        "patch", "dp", "guarded", "-n", ns, "--type=json", "-p", '[{"op": "remove", "path": "/spec/disruption"}]'
    )
    wait(lambda: cluster.get("pdb", "guarded", ns=ns, check=False) is None, 60, "the pool's budget deleted")
    assert cluster.get("pdb", "users", ns=ns) is not None
