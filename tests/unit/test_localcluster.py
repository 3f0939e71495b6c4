"""The local cluster harness's readiness checks (hack/localcluster/cluster.py), without starting anything."""

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
    monkeypatch.setattr(kindnode, "node_image", lambda: kindnode.NODE_IMAGE)
    path = K.up("daemonpool")
    assert path.read_text() == "apiVersion: v1\nkind: Config\n"
    assert ("create",) not in [c[:1] for c in calls]
