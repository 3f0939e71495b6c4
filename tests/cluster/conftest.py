"""The `cluster` fixture: a real Kubernetes for every test in tests/cluster.

- KUBECONFIG set (a kind cluster made with kind-config.yaml, or any other): use it.
- DAEMONPOOL_KIND=1 (hack/test --kind): pytest-kind-ng makes a kind cluster from kind-config.yaml, on the
  user's Docker, or as root on the harness's own dockerd and node image (hack/localcluster/kind.py).
- otherwise: start the local single-node cluster (hack/local-cluster) and stop it at the end
  (leave it running with DAEMONPOOL_KEEP_CLUSTER=1; reuse one already up).
Under CI=true a cluster test never skips: a cluster that cannot start fails the run with the reason.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import uuid

import pytest

from testkit import kind as kindconfig
from testkit import services
from testkit.cluster import ROOT, C, Cluster
from testkit.skips import unavailable

HERE = os.path.dirname(os.path.abspath(__file__))
IN_CI = os.environ.get("CI", "").lower() == "true"


def pytest_collection_modifyitems(items):
    for item in items:
        if str(item.fspath).startswith(HERE):
            item.add_marker(pytest.mark.cluster)


def _unavailable(reason: str):
    unavailable(f"the cluster for tests/cluster could not start: {reason}")


def _user_docker() -> bool:
    return bool(shutil.which("docker")) and subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _kind_cluster():
    """pytest-kind-ng's cluster from kind-config.yaml: on the user's Docker and kind when they run; else, as
    root, on the harness's dockerd with the node image built here and the kind network's guard
    (hack/localcluster/kind.py), put back afterwards."""
    try:
        from pytest_kind import KindCluster  # pytest-kind-ng
    except ImportError:
        _unavailable("DAEMONPOOL_KIND=1 needs pytest-kind-ng: pip install pytest-kind-ng")
    if _user_docker() and shutil.which("kind"):
        harness = False
        kind_path, kubectl_path, kubeconfig = shutil.which("kind"), shutil.which("kubectl"), None
    elif os.geteuid() == 0:
        from localcluster import kind as K
        from localcluster import kindnode, tools

        harness = True
        K.baseline()
        kindnode.node_image()
        K.net_up()  # the guard, before any node starts
        os.environ.update(K.env())  # pytest-kind-ng's kind and docker calls reach the harness's dockerd
        kind_path, kubectl_path = tools.ensure("kind"), str(C.BIN / "kubectl")
        kubeconfig = K.RUN / "daemonpool.kubeconfig"
    else:
        _unavailable("DAEMONPOOL_KIND=1 needs Docker and kind running, or root (the harness then runs its own)")
    kind = KindCluster(
        "daemonpool",
        kubeconfig=kubeconfig,
        kind_path=pathlib.Path(kind_path) if kind_path else None,
        kubectl_path=pathlib.Path(kubectl_path) if kubectl_path else None,
    )
    kind.harness = harness
    # kind-config.yaml plus the API audit log (testkit/kind.py); a fixed directory, which a cluster kept from an
    # earlier session (DAEMONPOOL_KEEP_CLUSTER=1) still mounts.
    kind.workdir = C.CACHE / "kind-tests"
    config, kind.audit_log = kindconfig.audited_config(
        ROOT / "kind-config.yaml", ROOT / "hack" / "localcluster" / "templates" / "audit-policy.yaml", kind.workdir
    )
    kind.create(config_file=config)
    kind.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s")
    if harness:
        K.route_pods(kind.kubeconfig_path)  # the host asks pods by IP, as on the local cluster
    return kind


@pytest.fixture(scope="session")
def cluster():
    from localcluster import cluster as local

    if os.environ.get("DAEMONPOOL_KIND") == "1":
        kind = _kind_cluster()
        gateway = subprocess.run(
            ["docker", "network", "inspect", "kind", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        c = Cluster(
            str(kind.kubeconfig_path),
            local=False,
            host_ip=os.environ.get("DAEMONPOOL_HOST_IP", gateway),
            audit_log=kind.audit_log,
        )
        c.kind = kind
        yield c
        if os.environ.get("DAEMONPOOL_KEEP_CLUSTER") != "1":
            kind.delete()
            shutil.rmtree(kind.workdir, ignore_errors=True)
            if kind.harness:
                from localcluster import kind as K

                left = K.down()
                assert left == [], f"the host differs from its baseline after the kind cluster: {left}"
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


@pytest.fixture(scope="session", autouse=True)
def _namespaces_made_are_removed(cluster):
    """Every namespace a test made goes at the end, even when the test failed before its own clean-up."""
    yield
    for ns in cluster.made_namespaces:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def images(cluster):
    """The project's images, built from its Dockerfiles and loaded into the cluster. Returns tag by name."""
    tags = C.PROJECT_IMAGES
    if getattr(cluster, "kind", None) is not None:
        # kind: the same Dockerfiles, built by the user's Docker on the public Python image (or by the
        # harness's dockerd on its local base), then loaded with `kind load docker-image`.
        for dockerfile, tag in tags.values():
            if cluster.kind.harness:
                from localcluster import images as img

                img.build(dockerfile, tag)
            else:
                subprocess.run(["docker", "build", "-f", str(ROOT / dockerfile), "-t", tag, str(ROOT)], check=True)
            cluster.kind.load_docker_image(tag)
        return {k: v[1] for k, v in tags.items()}
    if not cluster.local:
        # Another cluster: its images are the user's business (pushed to a registry it pulls from).
        return {k: v[1] for k, v in tags.items()}
    from localcluster import images as img

    try:
        for dockerfile, tag in tags.values():
            img.build_image(dockerfile, tag)
    finally:
        img.docker_down()
    return {k: v[1] for k, v in tags.items()}


# The tests' own release and namespace, unique per session: a user's own install (hack/demo's
# daemonpool-operator in daemonpool-system) is never upgraded or uninstalled by the tests.
_SESSION = uuid.uuid4().hex[:6]
OPERATOR_NS = f"daemonpool-test-{_SESSION}"
RELEASE = f"daemonpool-operator-test-{_SESSION}"  # contains the chart name: the chart's fullname is the release name
USER_RELEASE = ("daemonpool-system", "daemonpool-operator")


def helm(cluster, *args, check=True, timeout=300):
    from localcluster import install

    r = subprocess.run(
        [install.ensure_helm(), *map(str, args)], capture_output=True, text=True, env=cluster.env(), timeout=timeout
    )
    if check and r.returncode:
        raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{r.stdout}\n{r.stderr}")
    return r


def install_operator(cluster, images, *extra):
    """helm install (or upgrade) the chart into a namespace that enforces the restricted profile."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": OPERATOR_NS, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
        }
    )
    repo, tag = images["operator"].rsplit(":", 1)
    return helm(
        cluster,
        "upgrade",
        "--install",
        RELEASE,
        ROOT / "helm" / "daemonpool-operator",
        "-n",
        OPERATOR_NS,
        "--set",
        f"image.repository={repo}",
        "--set",
        f"image.tag={tag}",
        "--set",
        "logLevel=debug",
        # The CRD is a template of the chart, owned by one release: the tests' release takes it over from a
        # user's (hack/demo), an earlier session's or a kubectl-applied install.yaml (the release test's), whose
        # labels another field manager holds; all keep it on uninstall (crds.keep).
        "--take-ownership",
        "--force-conflicts",
        *extra,
        "--wait",
        "--timeout",
        "180s",
    )


class Operator:
    namespace = OPERATOR_NS
    release = RELEASE
    service_account = RELEASE  # the chart's fullname when the release is named like the chart

    def __init__(self, cluster):
        self.cluster = cluster

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def pod(self) -> dict | None:
        items = self.cluster.get("pods", "-l", "app.kubernetes.io/name=daemonpool-operator", ns=self.namespace)["items"]
        live = [p for p in items if not p["metadata"].get("deletionTimestamp")]
        return live[0] if live else None

    def pods(self) -> list:
        items = self.cluster.get("pods", "-l", f"app.kubernetes.io/instance={self.release}", ns=self.namespace)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def logs(self) -> str:
        """The last lines of every replica (leader and standbys)."""
        return self.cluster.kubectl(
            "logs", "-n", self.namespace, "-l", f"app.kubernetes.io/instance={self.release}", "--tail=200", check=False
        ).stdout


def _pause_user_operator(cluster):
    """A user's own operator (hack/demo) would reconcile the tests' pools too: scale it to 0 for the session.
    Returns how to put it back."""
    ns, name = USER_RELEASE
    dep = cluster.get("deployment", name, ns=ns, check=False)
    if dep is None:
        return lambda: None
    replicas = dep["spec"].get("replicas", 1)
    cluster.kubectl("scale", "deployment", name, "-n", ns, "--replicas=0")
    return lambda: cluster.kubectl("scale", "deployment", name, "-n", ns, f"--replicas={replicas}", check=False)


@pytest.fixture(scope="session")
def operator(cluster, images):
    """The operator, installed with its Helm chart (a release of the tests' own) and running as a pod under
    its own ServiceAccount. Removed at the end, with its namespace; a user's own install is put back."""
    restore = _pause_user_operator(cluster)
    try:
        install_operator(cluster, images)
        yield Operator(cluster)
    finally:
        helm(cluster, "uninstall", RELEASE, "-n", OPERATOR_NS, "--wait", check=False)
        cluster.kubectl("delete", "namespace", OPERATOR_NS, "--wait=false", check=False)
        restore()


FAKE_NODES = 5  # 550 pods: the fake-node test peaks at 400, the chaos test at 100 pools x 4


@pytest.fixture(scope="session")
def fake_nodes(cluster):
    """Fake nodes (kwok) next to the real one; removed at the end unless they were there before (a user's
    bench). Returns what a pod template needs to land on them."""
    if not cluster.local:
        unavailable("fake nodes come from the local cluster harness (kwok); this cluster is not the local one")
    from localcluster import fakenodes

    had = cluster.get("nodes", "-l", "=".join(C.FAKE_NODE_LABEL))["items"]
    fakenodes.add(max(FAKE_NODES, len(had)))
    try:
        yield fakenodes.pod_placement()
    finally:
        if not had:
            fakenodes.remove()


@pytest.fixture
def backing(cluster):
    """A real PostgreSQL and SMTP server on an address of this machine the pods reach (the mailer's, KEDA's)."""
    if not cluster.host_ip:
        unavailable("set DAEMONPOOL_HOST_IP to an address of this machine that pods can reach")
    pg = services.Postgres(addresses=("127.0.0.1", cluster.host_ip)).start()
    smtp = services.MailSink(host=cluster.host_ip).start()
    yield pg, smtp
    smtp.stop()
    pg.stop()
