"""The local cluster harness's readiness checks (hack/localcluster/cluster.py), without starting anything."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import cluster  # noqa: E402


def test_containerd_is_ready_only_once_its_cri_service_started(tmp_path, monkeypatch):
    """`ctr version` answers before the CRI service is initialized; a kubelet started then exits with "server is
    not initialized yet" (seen once: the whole `up` failed)."""
    monkeypatch.setattr(cluster, "ctr", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    monkeypatch.setattr(cluster.C, "LOGS", tmp_path)
    log = tmp_path / "containerd.log"
    log.write_text(
        'level=info msg="Start cri plugin with config {...}"\nlevel=info msg="containerd successfully booted"\n'
    )
    assert cluster._containerd_ready() is False
    log.write_text(log.read_text() + 'level=info msg="Start event monitor"\nlevel=info msg="Start streaming server"\n')
    assert cluster._containerd_ready() is True


def test_containerd_that_does_not_answer_is_not_ready(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "ctr", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "connection refused"))
    monkeypatch.setattr(cluster.C, "LOGS", tmp_path)
    (tmp_path / "containerd.log").write_text('msg="Start streaming server"\n')
    assert cluster._containerd_ready() is False


def test_kind_up_on_a_cluster_made_before_writes_its_kubeconfig(tmp_path, monkeypatch):
    """A kind cluster pytest-kind-ng (or a user) made: `kind up` still leaves the kubeconfig it prints."""
    from localcluster import kind as K
    from localcluster import kindnode

    calls = []

    def fake_kind(*args, check=True, capture=False):
        calls.append(args)
        out = "daemonpool\n" if args[:2] == ("get", "clusters") else "apiVersion: v1\nkind: Config\n"
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(K, "RUN", tmp_path / "kind")
    monkeypatch.setattr(K, "kind", fake_kind)
    monkeypatch.setattr(K, "baseline", lambda: {})
    monkeypatch.setattr(K, "net_up", lambda: None)
    monkeypatch.setattr(K, "route_pods", lambda kubeconfig: {})
    monkeypatch.setattr(kindnode, "node_image", lambda: kindnode.NODE_IMAGE)
    path = K.up("daemonpool")
    assert path.read_text() == "apiVersion: v1\nkind: Config\n"
    assert ("create",) not in [c[:1] for c in calls]


def test_kind_routes_each_nodes_pod_cidr_through_that_node_on_the_kind_bridge(monkeypatch):
    """The host reaches pods by IP (the tests ask workers and queue servers) through the node that holds them;
    a node without a podCIDR yet gets no route."""
    from localcluster import kind as K

    def node(name, cidr, ip):
        return {
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr} if cidr else {},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]},
        }

    nodes = [node("cp", "10.244.0.0/24", "172.30.0.4"), node("w", "10.244.1.0/24", "172.30.0.3"), node("n", None, "x")]
    calls = []

    def fake_sh(*args, **kw):
        calls.append(args)
        out = json.dumps({"items": nodes}) if "nodes" in args else ""
        return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")

    monkeypatch.setattr(K, "sh", fake_sh)
    assert K.route_pods("/kc") == {"10.244.0.0/24": "172.30.0.4", "10.244.1.0/24": "172.30.0.3"}
    assert [c for c in calls if c[0] == "ip"] == [
        ("ip", "route", "replace", "10.244.0.0/24", "via", "172.30.0.4", "dev", "dpkind0"),
        ("ip", "route", "replace", "10.244.1.0/24", "via", "172.30.0.3", "dev", "dpkind0"),
    ]


def test_the_kind_guard_rejects_the_hosts_packets_for_the_clusters_subnets_off_its_bridge(monkeypatch):
    """Without a route, a packet for a pod or a service of the kind cluster takes the default route out of the
    machine: the guard's output chain rejects it unless it leaves by the kind bridge."""
    from localcluster import images
    from localcluster import kind as K

    guards = []
    monkeypatch.setattr(images, "docker", lambda *a, **kw: subprocess.CompletedProcess(a, 0, stdout="dpkind0\n"))
    monkeypatch.setattr(K, "sh", lambda *a, input=None, **kw: guards.append(input) if input else None)
    K.net_up()
    (guard,) = guards
    assert "hook output" in guard
    assert 'ip daddr { 10.244.0.0/16, 10.96.0.0/16 } oifname != "dpkind0" counter reject' in guard
    assert 'iifname "dpkind0" oifname != "dpkind0" counter reject' in guard


class FakeHost:
    """The host's links (name -> the bridge it hangs on), nft tables and sysctls, changed by the `ip link
    delete` and `nft delete table` calls put_back_network makes, as the kernel would."""

    def __init__(self, links: dict, tables: list, sysctls: dict):
        self.links, self.tables, self.sysctls = dict(links), list(tables), dict(sysctls)

    def install(self, monkeypatch):
        from localcluster import host

        listdir = host.os.listdir
        monkeypatch.setattr(host.os, "listdir", lambda p: sorted(self.links) if p == "/sys/class/net" else listdir(p))
        exists = host.os.path.exists
        monkeypatch.setattr(
            host.os.path,
            "exists",
            lambda p: p[len("/sys/class/net/") :] in self.links if p.startswith("/sys/class/net/") else exists(p),
        )
        monkeypatch.setattr(host, "master_of", lambda link: self.links.get(link))
        monkeypatch.setattr(host, "nft_tables", lambda: list(self.tables))
        monkeypatch.setattr(host, "sysctl_read", lambda k: self.sysctls.get(k))
        monkeypatch.setattr(host, "sysctl_write", lambda k, v: self.sysctls.__setitem__(k, v))
        monkeypatch.setattr(host, "sh", self.sh)
        return host

    def sh(self, *args, check=True, **kw):
        if args[:3] == ("ip", "link", "delete"):
            self.links.pop(args[3], None)
            for link, master in self.links.items():  # the kernel detaches what hung on a deleted bridge
                if master == args[3]:
                    self.links[link] = None
        elif args[:3] == ("nft", "delete", "table"):
            self.tables.remove(" ".join(args[3:]))
        return subprocess.CompletedProcess(args, 0, "", "")


BASE = {"links": ["eth0", "lo"], "nft_tables": [], "sysctls": {"net.ipv4.ip_forward": "0"}}
LOCAL = ("dpbr0", "daemonpool_guard")
KIND = ("dpkind0", "daemonpool_kind_guard")


def test_the_local_clusters_teardown_leaves_kinds_guard_and_veths_while_kind_is_up(monkeypatch):
    """Both clusters up (the kind one made after the local one's baseline): the local teardown removes its
    bridge, its veths, its guard and kube-proxy's table only when kind is gone too. Before: it deleted kind's
    guard (nothing then stopped kind's pods' packets from leaving) and kind's veths."""
    fake = FakeHost(
        {"eth0": None, "lo": None, "dpbr0": None, "veth1": "dpbr0", "dpkind0": None, "veth9": "dpkind0"},
        ["inet daemonpool_guard", "ip kube-proxy", "inet daemonpool_kind_guard"],
        {"net.ipv4.ip_forward": "1"},
    )
    host = fake.install(monkeypatch)
    left = host.put_back_network(BASE, LOCAL, KIND)
    assert sorted(fake.links) == ["dpkind0", "eth0", "lo", "veth9"]
    assert "inet daemonpool_kind_guard" in fake.tables and "inet daemonpool_guard" not in fake.tables
    assert fake.sysctls["net.ipv4.ip_forward"] == "1", "kind still forwards"
    assert left == []


def test_with_the_other_cluster_gone_everything_goes_back_and_what_cannot_is_said(monkeypatch):
    fake = FakeHost(
        {"eth0": None, "lo": None, "dpkind0": None, "veth9": "dpkind0", "veth5": None, "docker0": None},
        ["inet daemonpool_kind_guard", "ip stray"],
        {"net.ipv4.ip_forward": "1"},
    )
    host = fake.install(monkeypatch)
    fake.tables.remove("inet daemonpool_kind_guard")  # kind.down deletes its guard first
    left = host.put_back_network(BASE, KIND, LOCAL)
    assert sorted(fake.links) == ["docker0", "eth0", "lo"]  # veth5 hung on nothing: nobody's, removed
    assert fake.tables == [] and fake.sysctls["net.ipv4.ip_forward"] == "0"
    assert left == ["link docker0"]
