"""The `cluster` fixture: a real Kubernetes for every test in tests/cluster.

- KUBECONFIG set (a kind cluster made with kind-config.yaml, or any other): use it.
- DAEMONPOOL_KIND=1 on a machine with Docker: pytest-kind-ng makes a kind cluster.
- otherwise: start the local single-node cluster (hack/local-cluster) and stop it at the end
  (leave it running with DAEMONPOOL_KEEP_CLUSTER=1; reuse one already up).
Under CI=true a cluster test never skips: a cluster that cannot start fails the run with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from kube import C, ROOT, Cluster

HERE = os.path.dirname(os.path.abspath(__file__))
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.cluster)


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the cluster for tests/cluster could not start: {reason}", pytrace=False)
    pytest.skip(reason)


def _kind_cluster():
    if not shutil.which("docker") or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        _unavailable("DAEMONPOOL_KIND=1 needs a running Docker engine (none on this machine); "
                     "unset it to use the local cluster")
    try:
        from pytest_kind import KindCluster  # pytest-kind-ng
    except ImportError:
        _unavailable("DAEMONPOOL_KIND=1 needs pytest-kind-ng: pip install pytest-kind-ng")
    kind = KindCluster("daemonpool")
    kind.create(config_file=ROOT / "kind-config.yaml")
    return kind


@pytest.fixture(scope="session")
def cluster():
    from localcluster import cluster as local

    if os.environ.get("DAEMONPOOL_KIND") == "1":
        kind = _kind_cluster()
        yield Cluster(str(kind.kubeconfig_path), local=False, host_ip=os.environ.get("DAEMONPOOL_HOST_IP", "172.17.0.1"))
        if os.environ.get("DAEMONPOOL_KEEP_CLUSTER") != "1":
            kind.delete()
        return
    if os.environ.get("KUBECONFIG") and os.path.abspath(os.environ["KUBECONFIG"]) != str(C.KUBECONFIG):
        yield Cluster(os.environ["KUBECONFIG"], local=False, host_ip=os.environ.get("DAEMONPOOL_HOST_IP", ""))
        return
    if os.geteuid() != 0:
        _unavailable("the local cluster needs root (it runs a kubelet); point KUBECONFIG at a cluster instead")
    started = False
    try:
        if not local.is_up():
            local.up()
            started = True
    except local.ClusterError as exc:
        _unavailable(str(exc))
    except (subprocess.CalledProcessError, OSError) as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
    yield Cluster(str(C.KUBECONFIG), local=True, host_ip=C.GATEWAY)
    if started and os.environ.get("DAEMONPOOL_KEEP_CLUSTER") != "1":
        local.down()


@pytest.fixture(scope="session")
def images(cluster):
    """The project's images, built from its Dockerfiles and loaded into the cluster. Returns tag by name."""
    tags = {
        "worker-base": ("images/worker-base/Dockerfile", "daemonpool/worker-base:dev"),
        "example-worker": ("examples/worker/Dockerfile", "daemonpool/example-worker:dev"),
        "operator": ("operator/Dockerfile", "daemonpool/operator:dev"),
    }
    if not cluster.local:
        # Another cluster: its images are the user's business (kind: `kind load docker-image`).
        return {k: v[1] for k, v in tags.items()}
    from localcluster import images as img

    try:
        for dockerfile, tag in tags.values():
            img.build_image(dockerfile, tag)
    finally:
        img.docker_down()
    return {k: v[1] for k, v in tags.items()}
