"""Command-line tools built from their Go modules: pinned in versions.env, cached per version in the cache.

    hack/local-cluster tools [NAME ...]     build what is missing (all when no NAME), print the paths

No root and no cluster needed: `hack/demo` on someone else's cluster uses helm from here when the PATH has none.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from . import config as C
from .procs import say

# name -> (Go package, versions.env key)
TOOLS: dict[str, tuple[str, str]] = {
    "helm": ("helm.sh/helm/v4/cmd/helm", "HELM_VERSION"),
    "registry": ("github.com/distribution/distribution/v3/cmd/registry", "REGISTRY_VERSION"),
    "promtool": ("github.com/prometheus/prometheus/cmd/promtool", "PROMETHEUS_MODULE_VERSION"),
    "kubeconform": ("github.com/yannh/kubeconform/cmd/kubeconform", "KUBECONFORM_VERSION"),
    "kube-score": ("github.com/zegl/kube-score/cmd/kube-score", "KUBE_SCORE_VERSION"),
    # kind, and what its node image needs that Debian does not package (hack/localcluster/kind.py).
    "kind": ("sigs.k8s.io/kind", "KIND_VERSION"),
    "crictl": ("sigs.k8s.io/cri-tools/cmd/crictl", "KIND_CRICTL_VERSION"),
    "coredns": ("github.com/coredns/coredns", "KIND_COREDNS_VERSION"),
}


def module_cache() -> pathlib.Path:
    """The Go module cache (`go env GOMODCACHE`), where `go mod download` puts a module's files."""
    out = subprocess.run(["go", "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout.strip()
    return pathlib.Path(out)


def module_dir(module: str, version: str) -> pathlib.Path:
    """A module's files at a version (read-only), downloaded from the module proxy the first time."""
    d = module_cache() / f"{module}@v{version}"
    if not d.is_dir():
        subprocess.run(["go", "mod", "download", f"{module}@v{version}"], check=True, stdout=sys.stderr)
    return d


def prometheus_operator_crds() -> list[pathlib.Path]:
    """The CRDs of prometheus-operator (ServiceMonitor, PodMonitor, PrometheusRule) from its module: the chart's
    monitoring objects are checked against them by the API server (tests/cluster/test_chart.py)."""
    d = module_dir("github.com/prometheus-operator/prometheus-operator", C.VERSIONS["PROMETHEUS_OPERATOR_VERSION"])
    names = ("servicemonitors", "podmonitors", "prometheusrules")
    return [d / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{n}.yaml" for n in names]


def version(name: str) -> str:
    return C.VERSIONS[TOOLS[name][1]]


def path(name: str) -> pathlib.Path:
    return C.TOOLS / f"{name}-{version(name)}" / name


def ensure(name: str) -> str:
    """The tool's path, built with `go install PKG@vVERSION` the first time (a minute or two each).

    Also linked as TOOLS/bin/NAME, the folder `hack/local-cluster env` puts on the PATH.
    """
    target = path(name)
    if not target.exists():
        _build(name, target)
    link = C.TOOLS / "bin" / name
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp_link = link.with_name(name + ".new")
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(target)
        os.replace(tmp_link, link)
    return str(target)


def _build(name: str, target: pathlib.Path) -> None:
    if shutil.which("go") is None:
        raise SystemExit(f"{name} v{version(name)} is not built yet and there is no `go` on the PATH to build it")
    pkg = TOOLS[name][0]
    say(f"building {name} v{version(name)} from the Go module proxy ({pkg}; once, a minute or two)")
    t0 = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        env = dict(os.environ, GOBIN=tmp, CGO_ENABLED="0")
        subprocess.run(
            ["go", "install", "-trimpath", "-ldflags", "-s -w", f"{pkg}@v{version(name)}"],
            check=True,
            env=env,
            stdout=sys.stderr,
        )
        os.replace(os.path.join(tmp, os.path.basename(pkg)), target)
    say(f"{name} built in {time.monotonic() - t0:.0f}s")


def main(names: list[str]) -> None:
    for name in names or list(TOOLS):
        if name not in TOOLS:
            raise SystemExit(f"unknown tool {name!r}; one of: {', '.join(TOOLS)}")
        print(ensure(name))
