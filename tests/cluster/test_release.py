"""The release, installed the way the README tells users: from a real registry, with Helm and with kubectl.

`hack/release --push` builds every artifact and pushes the images and the OCI chart to a CNCF distribution
registry on 127.0.0.1 (built from its Go module), which the cluster's containerd pulls from. Then the README's
commands, in order: `kubectl apply -f install.yaml` on a cluster without the CRD, removing only the operator,
the "remove everything" recipe, the previous release (0.1.0's packaged chart, tests/cluster/data) upgraded to
this one with the documented CRD step, `helm uninstall` keeping the pools, `helm install oci://...`.

Removing the CRD deletes every DaemonPool in the cluster. So this module runs on the local cluster only (a
cluster the harness owns), pauses the session's operator, saves any other DaemonPool (hack/demo's), and puts
the CRD, the session's operator and those pools back at the end.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import venv

import pytest
import yaml

import worker_runtime

from .conftest import _SESSION, OPERATOR_NS, RELEASE, helm, install_operator
from testkit.cluster import ROOT, record, wait

pytestmark = pytest.mark.timeout(1200)
CRD = "daemonpools.daemonpool.dev"
OLD_CHART = ROOT / "tests" / "cluster" / "data" / "daemonpool-operator-0.1.0.tgz"


@pytest.fixture(scope="module")
def released(cluster, tmp_path_factory):
    if not cluster.local:
        pytest.skip("removes and restores the CRD: only on the local cluster the harness owns")
    from localcluster import registry

    addr = registry.up()
    reg = f"{addr}/release-test-{_SESSION}"
    out = tmp_path_factory.mktemp("dist")
    # A namespace and release name of the test's own: the cluster-scoped objects (ClusterRole, admission policy)
    # are named after the release, and a user's install (hack/demo's daemonpool-operator) may hold those names.
    ns = f"daemonpool-reltest-{_SESSION}"
    name = f"daemonpool-operator-reltest-{_SESSION}"
    t0 = time.monotonic()
    r = subprocess.run(
        [ROOT / "hack" / "release", "--registry", reg, "--namespace", ns, "--name", name, "--push", "--out", out],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    record("release_seconds", {"release_and_push": round(time.monotonic() - t0, 1)})
    return {
        "registry": reg,
        "out": out,
        "version": worker_runtime.__version__,
        "namespace": ns,
        "name": name,
        "log": r.stderr,
    }


def test_release_artifacts(cluster, released, tmp_path):
    out, v, reg = released["out"], released["version"], released["registry"]
    sums = dict(reversed(line.split("  ", 1)) for line in (out / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == {
        f"python/daemonpool-{v}-py3-none-any.whl",
        f"python/daemonpool-{v}.tar.gz",
        f"images/operator-{v}.oci.tar",
        f"images/worker-base-{v}.oci.tar",
        f"daemonpool-operator-{v}.tgz",
        "install.yaml",
    }
    # The runtime alone: the wheel without its extra installs offline, and the operator's command says what is
    # missing instead of a traceback.
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    wheel = out / "python" / f"daemonpool-{v}-py3-none-any.whl"
    subprocess.run([env / "bin" / "pip", "install", "-q", "--no-index", "--no-deps", wheel], check=True)
    got = subprocess.run([env / "bin" / "worker-runtime", "--version"], capture_output=True, text=True)
    assert v in got.stdout + got.stderr
    op = subprocess.run([env / "bin" / "daemonpool-operator"], capture_output=True, text=True)
    assert op.returncode == 2 and "pip install 'daemonpool[operator]'" in op.stderr and "Traceback" not in op.stderr
    # The images are OCI layouts containerd imports under their release names.
    from localcluster.procs import ctr

    for name in ("operator", "worker-base"):
        archive = out / "images" / f"{name}-{v}.oci.tar"
        with tarfile.open(archive) as t:
            assert json.load(t.extractfile("oci-layout"))["imageLayoutVersion"] == "1.0.0"
        ctr("-n", "daemonpool-release-test", "images", "import", archive)
        listed = ctr("-n", "daemonpool-release-test", "images", "ls", "-q").stdout.split()
        assert f"{reg}/{name}:{v}" in listed
        ctr("-n", "daemonpool-release-test", "images", "rm", f"{reg}/{name}:{v}", check=False)
    # The packaged chart points at the release's images and documents itself (helm show readme / values).
    tgz = out / f"daemonpool-operator-{v}.tgz"
    values = yaml.safe_load(helm(cluster, "show", "values", tgz).stdout)
    assert values["image"]["repository"] == f"{reg}/operator"
    readme = helm(cluster, "show", "readme", tgz).stdout
    assert "| `image.repository` |" in readme and "helm install" in readme
    # The chart in the registry is the one in dist/.
    shown = helm(cluster, "show", "chart", f"oci://{reg}/charts/daemonpool-operator", "--version", v, "--plain-http")
    assert yaml.safe_load(shown.stdout)["version"] == v


def _pool(image: str, peers: int = 2) -> dict:
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": "rel"},
        "spec": {
            "peers": peers,
            "timeoutSeconds": 10,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "image": image,
                            # The release's worker base alone is a worker: `worker-runtime run` keeps the contract.
                            "command": ["worker-runtime", "run", "--", "sleep", "100000"],
                        }
                    ]
                }
            },
        },
    }


def _ready(cluster, ns: str, peers: int):
    def check():
        dp = cluster.get("dp", "rel", ns=ns, check=False)
        conds = {c["type"]: c for c in ((dp or {}).get("status") or {}).get("conditions", [])}
        ready = conds.get("Ready", {})
        return ready.get("status") == "True" and dp["status"].get("readyPeers") == peers and dp

    return wait(check, 180, f"pool rel in {ns} Ready with {peers} workers")


def _crd_gone(cluster):
    wait(lambda: cluster.get("crd", CRD, check=False) is None, 120, f"CRD {CRD} deleted")


def _saved_pools(cluster) -> list:
    """Every DaemonPool outside the tests' own namespaces, as it can be created again."""
    out = []
    for p in cluster.get("dp", "-A")["items"]:
        meta = p["metadata"]
        out.append(
            {
                "apiVersion": p["apiVersion"],
                "kind": p["kind"],
                "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations") if k in meta},
                "spec": p["spec"],
            }
        )
    return out


def test_the_readme_install_paths(cluster, operator, images, released):
    reg, out, v, ns = released["registry"], released["out"], released["version"], released["namespace"]
    name = released["name"]
    pool_ns = cluster.namespace("reluser")
    saved = [p for p in _saved_pools(cluster) if not p["metadata"]["namespace"].startswith(("crd-", "reluser"))]
    worker = f"{reg}/worker-base:{v}"
    chart = f"oci://{reg}/charts/daemonpool-operator"
    steps: dict = {}
    cluster.kubectl("scale", "deployment", RELEASE, "-n", OPERATOR_NS, "--replicas=0")
    try:
        t = time.monotonic()
        # A cluster that never had daemonpool: no CRD.
        cluster.kubectl("delete", "crd", CRD, "--wait=true", check=False)
        _crd_gone(cluster)

        # 1. kubectl users: the rendered install.yaml, server-side.
        manifest = out / "install.yaml"
        cluster.kubectl("apply", "--server-side", "-f", manifest)
        cluster.kubectl("rollout", "status", f"deploy/{name}", "-n", ns, "--timeout=180s", timeout=200)
        cluster.apply(_pool(worker), ns=pool_ns)
        _ready(cluster, pool_ns, 2)
        pods = cluster.get("pods", "-l", "daemonpool.dev/pool=rel", ns=pool_ns)["items"]
        pulled = {cs["imageID"] for p in pods for cs in p["status"]["containerStatuses"]}
        assert all(i.startswith(f"{reg}/worker-base@sha256:") for i in pulled), pulled  # from the registry
        op = cluster.get("pods", "-l", "app.kubernetes.io/name=daemonpool-operator", ns=ns)["items"]
        assert {cs["imageID"].split("@")[0] for p in op for cs in p["status"]["containerStatuses"]} == {
            f"{reg}/operator"
        }
        deployment_uid = cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"]
        steps["kubectl_install_to_ready"] = round(time.monotonic() - t, 1)

        # The operator only: the CRD and the pools stay, the workers keep running.
        cluster.kubectl("delete", "-f", manifest, "-l", "app.kubernetes.io/component!=crd", "--wait=true", timeout=300)
        assert cluster.get("crd", CRD, check=False) is not None
        assert cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"] == deployment_uid
        wait(lambda: cluster.get("namespace", ns, check=False) is None, 120, "the operator's Namespace deleted")
        assert cluster.get("dp", "rel", ns=pool_ns)["spec"]["peers"] == 2

        # 2. Remove everything (the README's recipe): the CRD goes, and with it every pool and its workers.
        cluster.kubectl("delete", "crd", CRD, "--wait=true")
        _crd_gone(cluster)
        wait(lambda: cluster.get("deploy", "rel", ns=pool_ns, check=False) is None, 120, "the pool's Deployment GC'd")

        # 3. The previous release (its chart installs the CRD from crds/), then the upgrade to this one.
        t = time.monotonic()
        helm(
            cluster,
            "install",
            name,
            OLD_CHART,
            "-n",
            ns,
            "--create-namespace",
            "--set",
            f"image.repository={reg}/operator",  # 0.1.0's image was never built here; the flags are the same
            "--set",
            f"image.tag={v}",
            "--wait",
            "--timeout",
            "180s",
        )
        old_crd = cluster.get("crd", CRD)
        assert (
            "problem"
            not in old_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        )
        cluster.apply(_pool(worker), ns=pool_ns)
        _ready(cluster, pool_ns, 2)
        deployment_uid = cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"]
        # Without the documented step Helm refuses: 0.1.0 left the CRD to crds/, so no release owns it.
        refused = helm(cluster, "upgrade", name, chart, "--version", v, "-n", ns, "--plain-http",
                       check=False)  # fmt: skip
        assert refused.returncode != 0 and "cannot be imported into the current release" in refused.stderr
        helm(cluster, "upgrade", name, chart, "--version", v, "-n", ns, "--plain-http",
             "--take-ownership", "--wait", "--timeout", "180s")  # fmt: skip
        new_crd = cluster.get("crd", CRD)
        assert (
            "problem"
            in new_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        )
        assert new_crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

        def problem_column():
            dp = cluster.get("dp", "rel", ns=pool_ns)
            return "problem" in (dp.get("status") or {}) and dp

        wait(problem_column, 60, "the upgraded operator writes status.problem")
        assert cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"] == deployment_uid, "workers replaced"
        _ready(cluster, pool_ns, 2)
        steps["upgrade_from_0_1_0"] = round(time.monotonic() - t, 1)

        # 4. helm uninstall: the CRD (crds.keep), the pools and their workers stay.
        helm(cluster, "uninstall", name, "-n", ns, "--wait")
        assert cluster.get("crd", CRD, check=False) is not None
        assert cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"] == deployment_uid

        # 5. The README's helm install from the registry; it adopts the kept CRD and the running pool.
        t = time.monotonic()
        helm(cluster, "install", name, chart, "--version", v, "-n", ns, "--plain-http",
             "--wait", "--timeout", "180s")  # fmt: skip
        cluster.kubectl("scale", "dp", "rel", "-n", pool_ns, "--replicas=3")
        _ready(cluster, pool_ns, 3)
        assert cluster.get("deploy", "rel", ns=pool_ns)["metadata"]["uid"] == deployment_uid
        steps["helm_install_to_scaled"] = round(time.monotonic() - t, 1)

        # 6. Remove everything, the Helm way.
        helm(cluster, "uninstall", name, "-n", ns, "--wait")
        cluster.kubectl("delete", "crd", CRD, "--wait=true")
        _crd_gone(cluster)
        wait(lambda: cluster.get("deploy", "rel", ns=pool_ns, check=False) is None, 120, "workers gone with the CRD")
        record("release_install_paths", steps)
    finally:
        helm(cluster, "uninstall", name, "-n", ns, "--wait", check=False)
        cluster.kubectl("delete", "-f", out / "install.yaml", "-l", "app.kubernetes.io/component!=crd",
                        "--ignore-not-found", "--wait=false", check=False)  # fmt: skip
        cluster.kubectl("delete", "namespace", ns, pool_ns, "--wait=false", "--ignore-not-found", check=False)
        # The session's operator (its release re-creates the CRD) and the pools that were there before.
        install_operator(cluster, images)
        if saved:
            cluster.apply(saved)
