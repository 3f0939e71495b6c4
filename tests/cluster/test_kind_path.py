"""The kind path: kind-config.yaml, pytest-kind-ng, and the images loaded with `kind load docker-image`.

Runs in the kind stage of `hack/test` (DAEMONPOOL_KIND=1), where the `cluster` fixture is pytest-kind-ng's.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from testkit.cluster import ROOT, wait
from testkit.skips import unavailable

pytestmark = pytest.mark.timeout(900)


def test_kind_config_describes_the_daemonpool_cluster():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "daemonpool"
    # One control plane and two workers: what needs several nodes (tests/cluster/test_multinode.py) has them.
    assert [n["role"] for n in cfg["nodes"]] == ["control-plane", "worker", "worker"]
    assert all(n["image"].startswith("kindest/node:v1.") for n in cfg["nodes"])
    # The README and kind-config.yaml tell the same load command for the images the tests use.
    for tag in ("daemonpool/operator:dev", "daemonpool/example-worker:dev"):
        assert tag in (ROOT / "kind-config.yaml").read_text()


@pytest.fixture
def kind_cluster(cluster):
    if os.environ.get("DAEMONPOOL_KIND") != "1" or getattr(cluster, "kind", None) is None:
        unavailable("the kind path runs in hack/test's kind stage (hack/test --kind, or DAEMONPOOL_KIND=1)")
    return cluster


def test_kind_cluster_from_kind_config_has_its_three_nodes_ready(kind_cluster):
    nodes = json.loads(kind_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    names = sorted(n["metadata"]["name"] for n in nodes)
    assert names == ["daemonpool-control-plane", "daemonpool-worker", "daemonpool-worker2"]
    for n in nodes:
        ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}["Ready"]
        assert ready == "True", n["metadata"]["name"]
        assert n["status"]["nodeInfo"]["kubeletVersion"] == "v" + _versions()["K8S_VERSION"]
    # The system pods kind and kubeadm start: the control plane, CoreDNS, kube-proxy and the pod network.
    # Ready within a minute or two of the cluster (a static pod's mirror says Ready only after its first
    # readiness probe: the API server's was seen not Ready yet the moment the cluster was made).
    seen: dict = {}

    def not_ready():
        pods = json.loads(kind_cluster.kubectl("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
        seen["pods"] = [p["metadata"]["name"] for p in pods]
        seen["not_ready"] = [
            p["metadata"]["name"]
            for p in pods
            if not any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
        ]
        return seen["not_ready"]

    try:
        wait(lambda: not not_ready(), 120, "the kube-system pods Ready", interval=2)
    except AssertionError:
        pytest.fail(f"not Ready after 120 s: {seen['not_ready']}")
    for prefix in ("etcd-", "kube-apiserver-", "kube-controller-manager-", "kube-scheduler-", "coredns-"):
        assert any(name.startswith(prefix) for name in seen["pods"]), (prefix, seen["pods"])
    for prefix in ("kube-proxy-", "daemonpool-kind-cni-"):  # one on each node
        assert sum(name.startswith(prefix) for name in seen["pods"]) == 3, (prefix, seen["pods"])


def test_images_loaded_with_kind_load_run_on_every_node(kind_cluster, images):
    """`kind load docker-image` (the fixture's) put the project's images on all three nodes: a pod of the
    example worker starts on each, with imagePullPolicy Never (nothing can be pulled here)."""
    ns = kind_cluster.namespace("kind-load")
    for node in ("daemonpool-control-plane", "daemonpool-worker", "daemonpool-worker2"):
        kind_cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"on-{node}", "namespace": ns},
                "spec": {
                    "nodeName": node,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        {
                            "name": "w",
                            "image": images["worker-base"],
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", "import worker_runtime; print('ok')"],
                        }
                    ],
                    "restartPolicy": "Never",
                },
            }
        )
    for node in ("daemonpool-control-plane", "daemonpool-worker", "daemonpool-worker2"):
        kind_cluster.kubectl(
            "wait", "-n", ns, f"pod/on-{node}", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s"
        )
        assert kind_cluster.kubectl("logs", "-n", ns, f"on-{node}").stdout.strip() == "ok"


def _versions():
    import re

    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", (ROOT / "hack" / "versions.env").read_text(), re.M))


def test_nothing_leaves_the_kind_network(kind_cluster, images):
    """The guard (hack/localcluster/kind.py): a pod's packet for an address off this machine is rejected at the
    kind bridge (EHOSTUNREACH at once), not sent out through the host's default route. 192.0.2.1 is TEST-NET-1."""
    if not kind_cluster.kind.harness:
        unavailable("the guard is the harness's; a user's Docker networks are the user's")
    from localcluster import kind as K
    from localcluster.procs import sh

    assert K.guard_installed()
    before = sh("nft", "list", "table", "inet", K.GUARD_TABLE).stdout
    ns = kind_cluster.namespace("guard")
    probe = (
        "import errno, socket\n"
        "s = socket.socket(); s.settimeout(10)\n"
        "try:\n    s.connect(('192.0.2.1', 80)); print('connected')\n"
        "except OSError as e:\n    print(errno.errorcode.get(e.errno, e))\n"
    )
    kind_cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "namespace": ns},
            "spec": {
                "containers": [
                    {
                        "name": "p",
                        "image": images["worker-base"],
                        "imagePullPolicy": "Never",
                        "command": ["python3", "-c", probe],
                    }
                ],
                "restartPolicy": "Never",
            },
        }
    )
    kind_cluster.kubectl("wait", "-n", ns, "pod/probe", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s")
    assert kind_cluster.kubectl("logs", "-n", ns, "probe").stdout.strip() == "EHOSTUNREACH"
    after = sh("nft", "list", "table", "inet", K.GUARD_TABLE).stdout
    assert _packets(after) > _packets(before)


def _packets(ruleset: str) -> int:
    import re

    return sum(int(n) for n in re.findall(r"counter packets (\d+)", ruleset))


def test_the_host_reaches_pods_through_their_nodes_and_nothing_else_of_the_clusters_subnets(kind_cluster):
    """The host's routes to each node's pod CIDR (kind.route_pods): a pod answers the host by its IP, as on the
    local cluster. A packet for an address of the pod subnet that no node holds is rejected by the guard's output
    chain (EHOSTUNREACH at once), not sent out through the host's default route."""
    if not kind_cluster.kind.harness:
        unavailable("the routes and the guard are the harness's; a user's Docker networks are the user's")
    import errno
    import socket
    import urllib.request

    from localcluster import kind as K
    from localcluster.procs import sh

    pods = json.loads(kind_cluster.kubectl("get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    dns = [p["status"]["podIP"] for p in pods if p["metadata"]["name"].startswith("coredns-")]
    assert dns, "no CoreDNS pod"
    with urllib.request.urlopen(f"http://{dns[0]}:8181/ready", timeout=5) as r:  # CoreDNS's ready plugin
        assert r.status == 200
    before = _packets(sh("nft", "list", "chain", "inet", K.GUARD_TABLE, "output").stdout)
    s = socket.socket()
    s.settimeout(10)
    try:
        with pytest.raises(OSError) as refused:
            s.connect(("10.244.255.1", 80))  # in POD_SUBNET; no node's podCIDR
    finally:
        s.close()
    assert refused.value.errno in (errno.EHOSTUNREACH, errno.EPERM, errno.EACCES), refused.value
    assert _packets(sh("nft", "list", "chain", "inet", K.GUARD_TABLE, "output").stdout) > before
