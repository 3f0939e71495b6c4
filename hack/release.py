"""hack/release: every release artifact, built from this checkout into dist/, and optionally pushed.

    hack/release [--registry REG] [--push] [--plain-http] [--out DIR] [--namespace NS] [--name NAME]

REG is where the images and the chart are to live, HOST[:PORT]/PATH (default: the DAEMONPOOL_REGISTRY
environment variable, else ``daemonpool``, a name only a registry of your own can serve). What dist/ holds:

    python/daemonpool-V-py3-none-any.whl, python/daemonpool-V.tar.gz   the package (`twine check --strict`)
    images/operator-V.oci.tar, images/worker-base-V.oci.tar         OCI image layouts of REG/operator:V, ...
    daemonpool-operator-V.tgz                                         the chart (`helm package`; image.repository
                                                                      defaults to REG/operator)
    install.yaml                                                      Namespace, CRD and operator for `kubectl apply -f`
    SHA256SUMS

--push sends the images (docker push) and the chart (helm push, to oci://REG/charts) to REG; --plain-http is
implied for a registry on the loopback. V is worker_runtime.__version__, the one version (pyproject.toml reads
it; Chart.yaml must say the same). Docker: yours when `docker info` answers (images on the public Python base),
else, as root, the harness's own dockerd on its debootstrap base (hack/localcluster/images.py).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HACK = pathlib.Path(__file__).resolve().parent
ROOT = HACK.parent
sys.path.insert(0, str(HACK))

from localcluster import images as harness  # noqa: E402 - hack/ is not a package
from localcluster import tools  # noqa: E402

CHART = ROOT / "helm" / "daemonpool-operator"
# The images a release ships: the operator, and the base users build their workers on.
RELEASE_IMAGES = {"operator": "operator/Dockerfile", "worker-base": "images/worker-base/Dockerfile"}
NAMESPACE = "daemonpool-system"  # install.yaml's default namespace, the one the README installs into


def say(msg: str) -> None:
    print(f"[release] {msg}", file=sys.stderr, flush=True)


def version() -> str:
    text = (ROOT / "worker_runtime" / "__init__.py").read_text()
    v = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if not v:
        raise SystemExit("worker_runtime/__init__.py has no __version__ line")
    return v.group(1)


def check_versions(v: str) -> None:
    chart = (CHART / "Chart.yaml").read_text()
    got = {k: re.search(rf'^{k}: "?([^"\n]+)"?$', chart, re.M) for k in ("version", "appVersion")}
    wrong = {k: m.group(1) if m else None for k, m in got.items() if not m or m.group(1) != v}
    if wrong:
        raise SystemExit(f"Chart.yaml says {wrong}, worker_runtime.__version__ says {v}: set both to {v}")


def loopback(registry: str) -> bool:
    host = registry.split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


class Docker:
    """The user's Docker when it answers, else (root only) the harness's dockerd on its local base."""

    def __init__(self) -> None:
        self.own = shutil.which("docker") is not None and _ok(["docker", "info"])
        if not self.own and os.geteuid() != 0:
            raise SystemExit("no Docker answers (`docker info`), and the harness's own dockerd needs root")

    def run(self, *args: str, timeout: float = 1800) -> str:
        if self.own:
            r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        else:
            r = harness.docker(*args, check=False, timeout=timeout)
        if r.returncode:
            raise SystemExit(f"docker {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r.stdout

    def build(self, dockerfile: str, tag: str) -> None:
        if self.own:
            say(f"docker build {dockerfile} -> {tag}")
            self.run("build", "-f", str(ROOT / dockerfile), "-t", tag, str(ROOT))
        else:
            harness.build(dockerfile, tag)


def _ok(cmd: list) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def python_package(out: pathlib.Path) -> list[pathlib.Path]:
    say("building the wheel and sdist (python -m build), then twine check --strict")
    shutil.rmtree(out, ignore_errors=True)
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    made = sorted(out.iterdir())
    _run([sys.executable, "-m", "twine", "check", "--strict", *made])
    return made


def release_images(docker: Docker, registry: str, v: str, out: pathlib.Path) -> dict[str, str]:
    """{name: REG/name:V}, each built, tagged and saved as an OCI layout in out/."""
    out.mkdir(parents=True, exist_ok=True)
    refs = {}
    for name, dockerfile in RELEASE_IMAGES.items():
        ref = f"{registry}/{name}:{v}"
        docker.build(dockerfile, ref)
        with tempfile.TemporaryDirectory() as tmp:
            saved = pathlib.Path(tmp, "saved.tar")
            docker.run("save", "-o", str(saved), ref)
            digest = harness.oci_layout_from_docker_save(saved, out / f"{name}-{v}.oci.tar", ref)
        say(f"{ref}: {out / f'{name}-{v}.oci.tar'} (manifest {digest[:19]})")
        refs[name] = ref
    return refs


def chart_package(helm: str, registry: str, v: str, out: pathlib.Path) -> pathlib.Path:
    """The chart with image.repository = REG/operator, linted and packaged."""
    with tempfile.TemporaryDirectory() as tmp:
        staged = pathlib.Path(tmp, CHART.name)
        shutil.copytree(CHART, staged, ignore=shutil.ignore_patterns("ci"))
        values = staged / "values.yaml"
        text = values.read_text()
        line = "  repository: daemonpool/operator\n"
        if text.count(line) != 1:
            raise SystemExit("values.yaml: expected exactly one `  repository: daemonpool/operator` line to set")
        values.write_text(text.replace(line, f"  repository: {registry}/operator\n"))
        _run([helm, "lint", "--strict", staged])
        _run([helm, "package", staged, "--destination", out])
    tgz = out / f"{CHART.name}-{v}.tgz"
    if not tgz.exists():
        raise SystemExit(f"helm package did not write {tgz}")
    return tgz


def install_yaml(helm: str, tgz: pathlib.Path, out: pathlib.Path, namespace: str, name: str) -> pathlib.Path:
    """The chart rendered for `kubectl apply -f`: a Namespace enforcing the restricted profile, then the chart."""
    rendered = _run([helm, "template", name, tgz, "-n", namespace]).stdout
    rendered = rendered.replace("app.kubernetes.io/managed-by: Helm", "app.kubernetes.io/managed-by: kubectl")
    ns = (
        "# The daemonpool operator for `kubectl apply --server-side -f install.yaml`, rendered from its chart by\n"
        "# hack/release. `kubectl delete -f` of this file also deletes the CRD and with it EVERY DaemonPool and its\n"
        "# workers; to remove only the operator: kubectl delete -f install.yaml -l app.kubernetes.io/component!=crd\n"
        "apiVersion: v1\nkind: Namespace\nmetadata:\n"
        f"  name: {namespace}\n  labels:\n    pod-security.kubernetes.io/enforce: restricted\n---\n"
    )
    path = out / "install.yaml"
    path.write_text(ns + rendered)
    return path


def push(docker: Docker, helm: str, registry: str, refs: dict[str, str], tgz: pathlib.Path, plain: bool) -> None:
    for ref in refs.values():
        say(f"docker push {ref}")
        docker.run("push", ref)
    say(f"helm push {tgz.name} oci://{registry}/charts")
    _run([helm, "push", tgz, f"oci://{registry}/charts", *(["--plain-http"] if plain else [])])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/release", description=__doc__.split("\n\n")[0])
    p.add_argument("--registry", default=os.environ.get("DAEMONPOOL_REGISTRY", "daemonpool"), help="HOST[:PORT]/PATH")
    p.add_argument("--push", action="store_true", help="push the images and the chart to the registry")
    p.add_argument("--plain-http", action="store_true", help="the registry speaks HTTP (implied on the loopback)")
    p.add_argument("--out", default=str(ROOT / "dist"), help="where the artifacts go (default: dist/)")
    p.add_argument("--namespace", default=NAMESPACE, help=f"install.yaml's namespace (default: {NAMESPACE})")
    p.add_argument("--name", default="daemonpool-operator", help="install.yaml's release name: the objects' names")
    a = p.parse_args(argv)
    registry = a.registry.rstrip("/")
    t0 = time.monotonic()
    v = version()
    check_versions(v)
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    say(f"daemonpool {v} for {registry} into {out}")
    helm = shutil.which("helm") or tools.ensure("helm")
    made = python_package(out / "python")
    docker = Docker()
    refs = release_images(docker, registry, v, out / "images")
    tgz = chart_package(helm, registry, v, out)
    manifest = install_yaml(helm, tgz, out, a.namespace, a.name)
    files = [*made, *sorted((out / "images").glob(f"*-{v}.oci.tar")), tgz, manifest]
    sums = "".join(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(out)}\n" for f in files)
    (out / "SHA256SUMS").write_text(sums)
    if a.push:
        push(docker, helm, registry, refs, tgz, a.plain_http or loopback(registry))
    say(f"done in {time.monotonic() - t0:.0f}s:\n" + sums.rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
