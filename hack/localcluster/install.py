"""Install what the local cluster needs when it is missing: Debian packages, Kubernetes binaries, helm."""

from __future__ import annotations

import os
import subprocess
import sys

from . import config as C
from . import tools
from .procs import say


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


def ensure_helm() -> str:
    """Helm, built from its Go module (tools.py): no root needed."""
    return tools.ensure("helm")


def ensure_all() -> None:
    if os.geteuid() != 0:
        raise SystemExit("local-cluster must run as root (it starts a kubelet and changes the host's network)")
    ensure_packages()
    ensure_k8s()
    ensure_helm()
