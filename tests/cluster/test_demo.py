"""hack/demo on an existing cluster (KUBECONFIG set), run as an unprivileged user: no root, no Debian packages.

Before: every branch of hack/demo ran `localcluster install`, which stops with "must run as root" as a normal
user. Here it runs as uid 65534 with nothing but a Python, kubectl, helm and a kubeconfig it can read, against
the local cluster whose nodes already have the images (DAEMONPOOL_IMAGES=loaded); the registry path is the
release test's (tests/cluster/test_release.py).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile

import pytest

from .conftest import _pause_user_operator, helm, install_operator
from testkit.cluster import ROOT, C

pytestmark = pytest.mark.timeout(600)
NOBODY = 65534


@pytest.fixture
def scratch():
    """A folder the unprivileged user can reach (pytest's tmp_path sits under a 0700 folder of root's)."""
    d = pathlib.Path(tempfile.mkdtemp(prefix="dp-demo-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_demo_installs_on_an_existing_cluster_without_root(cluster, operator, images, scratch):
    if not cluster.local:
        pytest.skip("runs the demo against the local cluster as another user")
    from localcluster import install

    tmp_path = scratch
    home = tmp_path / "home"
    bin_ = home / "bin"
    bin_.mkdir(parents=True)
    for tool in (C.BIN / "kubectl", install.ensure_helm()):
        shutil.copy(tool, bin_)
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(cluster.kubectl("config", "view", "--raw", "--flatten").stdout)
    for p in (tmp_path, home, bin_, *home.iterdir(), *bin_.iterdir()):
        os.chown(p, NOBODY, NOBODY)
    os.chmod(tmp_path, 0o755)
    env = {
        "HOME": str(home),
        "PATH": f"{bin_}:/usr/bin:/bin",
        "KUBECONFIG": str(kubeconfig),
        "DAEMONPOOL_IMAGES": "loaded",
        "PYTHON": "/usr/bin/python3",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    existed = cluster.get("deployment", "daemonpool-operator", ns="daemonpool-system", check=False) is not None
    try:
        r = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", ROOT / "hack" / "demo"],
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "must run as root" not in r.stderr and "installing Debian packages" not in r.stderr
        assert "images already on the nodes" in r.stderr
        dp = cluster.get("dp", "example", ns="default")
        assert {c["type"]: c["status"] for c in dp["status"]["conditions"]}["Ready"] == "True"
        dep = cluster.get("deployment", "daemonpool-operator", ns="daemonpool-system")
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "daemonpool/operator:dev"
    finally:
        if existed:  # a user's demo (CI runs hack/demo first): paused again for the session, as conftest does
            _pause_user_operator(cluster)
        else:  # made here: removed, with the example objects
            helm(cluster, "uninstall", "daemonpool-operator", "-n", "daemonpool-system", "--wait", check=False)
            for f in ("pool.yaml", "autoscale.yaml"):
                cluster.kubectl(
                    "delete", "-f", ROOT / "examples" / f, "--ignore-not-found", "--wait=false", check=False
                )
        install_operator(cluster, images)  # the session's release takes the CRD back
