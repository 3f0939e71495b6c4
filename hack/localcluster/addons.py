"""Optional cluster components, the real ones, built here: metrics-server and KEDA.

    hack/local-cluster addons metrics-server keda     build (once, cached), load the images, apply, wait

Each is built from its Go module (pinned in hack/versions.env) into the cache like the Kubernetes binaries,
packed as a one-layer image (a static binary and a non-root user; nothing pulled from a registry), and
installed with its *upstream* manifests (its module's own kustomize folders) plus a few patches for this
cluster, each listed below with why. `down` removes them with the cluster (its etcd goes).

What each needs from the cluster (cluster.py, pki.py, templates/kubelet.yaml): the API server's aggregation
layer (front-proxy CA and client certificate, aggregator routing), and the kubelet's webhook authentication,
so metrics-server's ServiceAccount token may read /metrics/resource.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
from typing import Callable

from . import config as C
from . import tools
from .images import oci_archive
from .procs import ClusterError, ctr, kubectl, say, wait_for

ADDONS_DIR = C.RUN / "addons"
USER = "65532:65532"  # the non-root user the images run as (distroless's "nonroot"); manifests ask runAsNonRoot
# The keda-operator Service gets a fixed address: the metrics API server dials the operator's gRPC port, and
# this cluster has no DNS for the name it dials by default (its certificate names the Service, see below).
KEDA_OPERATOR_IP = "10.98.0.66"
# metrics-server runs on the host's network (the kubelet listens on 127.0.0.1 only); not the kubelet's 10250.
METRICS_SERVER_PORT = 10251


# What each addon builds: its Go module, version, and binary name -> package under the module.
BUILDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "metrics-server": (
        "sigs.k8s.io/metrics-server",
        C.METRICS_SERVER_VERSION,
        {"metrics-server": "./cmd/metrics-server"},
    ),
    "keda": (
        "github.com/kedacore/keda/v2",
        C.KEDA_VERSION,
        {"keda": "./cmd/operator", "keda-adapter": "./cmd/adapter"},
    ),
}


def _go_build(name: str) -> pathlib.Path:
    """BUILDS[name], built in a writable copy of the module (KEDA's go.mod has replace directives, so
    `go install pkg@version` refuses it); cached per version."""
    module, version, cmds = BUILDS[name]
    out = C.CACHE / f"{name}-{version}"
    if all((out / b).exists() for b in cmds):
        return out
    src = tools.module_dir(module, version)
    say(f"building {name} v{version} from the Go module proxy ({', '.join(cmds.values())}; minutes, once)")
    t0 = time.monotonic()
    work = C.CACHE / "build" / f"{name}-{version}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    for root, dirs, files in os.walk(work):
        for f in dirs + files:
            os.chmod(os.path.join(root, f), 0o755 if f in dirs else 0o644)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod")
    for binary, pkg in cmds.items():
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / (binary + ".tmp")), pkg],
            cwd=work,
            check=True,
            env=env,
            stdout=sys.stderr,
        )
        os.replace(out / (binary + ".tmp"), out / binary)
    shutil.rmtree(work, ignore_errors=True)
    say(f"{name} built in {time.monotonic() - t0:.0f}s")
    return out


def _image(name: str, binaries: pathlib.Path, files: list[str], entrypoint: str) -> None:
    """A one-layer image: the static binaries at /, an /etc/passwd naming the non-root user, an empty /tmp."""
    if name in ctr("images", "ls", "-q", check=False).stdout.split():
        return
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for f in files:
            t.add(binaries / f, arcname=f)
        passwd = b"root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"
        for path, data in (("etc/passwd", passwd), ("etc/group", b"root:x:0:\nnonroot:x:65532:\n")):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        t.addfile(tmp)
    archive = C.IMAGES / (name.replace("/", "_").replace(":", "_") + ".tar")
    C.IMAGES.mkdir(parents=True, exist_ok=True)
    oci_archive(archive, name, buf.getvalue(), {"Entrypoint": [entrypoint], "User": USER})
    ctr("images", "import", archive)


def _rel(path: pathlib.Path, name: str) -> str:
    """kustomize refuses an absolute path as a base ("new root cannot be absolute"): relative to our folder."""
    return os.path.relpath(path, ADDONS_DIR / name)


def _apply_kustomization(name: str, kustomization: str, extra: dict[str, str]) -> None:
    """Render with kubectl's built-in kustomize (the upstream folders are its bases) and apply server-side."""
    d = ADDONS_DIR / name
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    (d / "kustomization.yaml").write_text(kustomization)
    for fname, text in extra.items():
        (d / fname).write_text(text)
    # Upstream folders live in the read-only module cache, outside this folder: allow loading them.
    r = kubectl("kustomize", "--load-restrictor", "LoadRestrictionsNone", d, check=False)
    if r.returncode:
        raise ClusterError(name, f"kubectl kustomize {d}: {r.stderr.strip()}")
    (d / "rendered.yaml").write_text(r.stdout)
    r = kubectl("apply", "--server-side", "--force-conflicts", "-f", d / "rendered.yaml", timeout=120, check=False)
    if r.returncode:
        raise ClusterError(name, f"kubectl apply -f {d / 'rendered.yaml'}: {r.stderr.strip()}")


def _api_service_available(name: str) -> Callable[[], bool]:
    def check() -> bool:
        r = kubectl("get", "apiservice", name, "-o", "json", check=False, timeout=10)
        if r.returncode:
            return False
        conds = json.loads(r.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Available" and c["status"] == "True" for c in conds)

    return check


def _wait(name: str, what: str, check: Callable[[], bool], timeout: float, logs: list[str]) -> None:
    try:
        wait_for(name, check, timeout, what, watch_pid=False)
    except ClusterError:
        for sel in logs:
            r = kubectl("logs", *sel.split(), "--tail", "30", "--all-containers", check=False, timeout=20)
            say(f"--- kubectl logs {sel} ---\n{r.stdout}{r.stderr}")
        raise


def _patch(target: str, body: str) -> str:
    return f"- target:\n    {target}\n  patch: |-\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n"


# -- metrics-server ---------------------------------------------------------------------------------------


def metrics_server() -> None:
    module, v, _ = BUILDS["metrics-server"]
    bins = _go_build("metrics-server")
    image = f"daemonpool.local/metrics-server:v{v}"
    _image(image, bins, ["metrics-server"], "/metrics-server")
    ca = (C.PKI / "ca.crt").read_bytes()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "metrics-server-serving", "namespace": "kube-system"},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": base64.b64encode((C.PKI / "metrics-server.crt").read_bytes()).decode(),
            "tls.key": base64.b64encode((C.PKI / "metrics-server.key").read_bytes()).decode(),
            "ca.crt": base64.b64encode(ca).decode(),
        },
    }
    base = _rel(tools.module_dir(module, v) / "manifests" / "overlays" / "release", "metrics-server")
    # Patches, each with why:
    # - the host's network: the kubelet listens on 127.0.0.1 only (templates/kubelet.yaml), reached as the
    #   node's name, which resolves to it; a port that is not the kubelet's own 10250;
    # - the kubelet's serving certificate checked against the cluster CA (upstream examples skip the check);
    # - a serving certificate the API server checks (upstream's APIService sets insecureSkipTLSVerify).
    args = [
        "--cert-dir=/tmp",
        f"--secure-port={METRICS_SERVER_PORT}",
        "--bind-address=$(NODE_IP)",
        "--tls-cert-file=/serving/tls.crt",
        "--tls-private-key-file=/serving/tls.key",
        "--kubelet-preferred-address-types=Hostname",
        "--kubelet-use-node-status-port",
        "--kubelet-certificate-authority=/serving/ca.crt",
        "--metric-resolution=15s",
    ]
    c = "/spec/template/spec/containers/0"
    deployment = [
        {"op": "add", "path": "/spec/template/spec/hostNetwork", "value": True},
        {"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": "Default"},
        {"op": "replace", "path": f"{c}/args", "value": args},
        {
            "op": "add",
            "path": f"{c}/env",
            "value": [{"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
        },
        {
            "op": "replace",
            "path": f"{c}/ports",
            "value": [{"name": "https", "containerPort": METRICS_SERVER_PORT, "protocol": "TCP"}],
        },
        {
            "op": "add",
            "path": f"{c}/volumeMounts/-",
            "value": {"name": "serving", "mountPath": "/serving", "readOnly": True},
        },
        {
            "op": "add",
            "path": "/spec/template/spec/volumes/-",
            "value": {"name": "serving", "secret": {"secretName": "metrics-server-serving"}},
        },
    ]
    kustomization = f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- {base}
- serving-secret.yaml
images:
- name: registry.k8s.io/metrics-server/metrics-server
  newName: daemonpool.local/metrics-server
  newTag: v{v}
patches:
- path: deployment-patch.yaml
  target:
    kind: Deployment
    name: metrics-server
"""
    kustomization += _patch(
        "kind: APIService",
        f"""
        - op: remove
          path: /spec/insecureSkipTLSVerify
        - op: add
          path: /spec/caBundle
          value: {base64.b64encode(ca).decode()}
        """,
    )
    say(f"installing metrics-server v{v}")
    _apply_kustomization(
        "metrics-server",
        kustomization,
        {"serving-secret.yaml": json.dumps(secret), "deployment-patch.yaml": json.dumps(deployment)},
    )

    def metrics_flow() -> bool:
        # Available, and the node's figures arrived (its first scrape waits one resolution).
        return (
            _api_service_available("v1beta1.metrics.k8s.io")()
            and kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes", check=False, timeout=10).stdout.count(
                '"usage"'
            )
            > 0
        )

    _wait("metrics-server", "serving node metrics", metrics_flow, 180, ["-n kube-system deploy/metrics-server"])


# -- KEDA -------------------------------------------------------------------------------------------------


def keda() -> None:
    module, v, _ = BUILDS["keda"]
    bins = _go_build("keda")
    _image(f"daemonpool.local/keda:v{v}", bins, ["keda"], "/keda")
    _image(f"daemonpool.local/keda-metrics-apiserver:v{v}", bins, ["keda-adapter"], "/keda-adapter")
    cfg = _rel(tools.module_dir(module, v) / "config", "keda")
    # Upstream's config/default minus the admission webhooks (a third image, not needed to scale), plus:
    # - the images built here, never pulled (upstream says Always);
    # - the operator's Service at a fixed address, which the metrics API server dials by IP and checks by
    #   the name upstream dials (the certificate KEDA makes names the Service), as there is no cluster DNS;
    # - dnsPolicy Default: no cluster DNS to point pods at.
    kustomization = f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
transformers:
- {cfg}/default/kustomize-config/metadataLabelTransformer.yaml
resources:
- {cfg}/crd
- {cfg}/general
- {cfg}/rbac
- {cfg}/manager
- {cfg}/metrics-server
- {cfg}/service_account
images:
- name: ghcr.io/kedacore/keda
  newName: daemonpool.local/keda
  newTag: v{v}
- name: ghcr.io/kedacore/keda-metrics-apiserver
  newName: daemonpool.local/keda-metrics-apiserver
  newTag: v{v}
patches:
"""
    for dep in ("keda-operator", "keda-metrics-apiserver"):
        kustomization += _patch(
            f"kind: Deployment\n    name: {dep}",
            """
            - op: replace
              path: /spec/template/spec/containers/0/imagePullPolicy
              value: IfNotPresent
            - op: add
              path: /spec/template/spec/dnsPolicy
              value: Default
            """,
        )
    kustomization += _patch(
        "kind: Deployment\n    name: keda-metrics-apiserver",
        f"""
        - op: add
          path: /spec/template/spec/containers/0/args/-
          value: --metrics-service-address={KEDA_OPERATOR_IP}:9666
        - op: add
          path: /spec/template/spec/containers/0/args/-
          value: --metrics-service-grpc-authority=keda-operator.keda.svc.cluster.local
        """,
    )
    kustomization += _patch(
        "kind: Service\n    name: keda-operator",
        f"""
        - op: add
          path: /spec/clusterIP
          value: {KEDA_OPERATOR_IP}
        """,
    )
    say(f"installing KEDA v{v} (operator and metrics API server)")
    _apply_kustomization("keda", kustomization, {})
    _wait(
        "keda",
        "serving the external metrics API",
        _api_service_available("v1beta1.external.metrics.k8s.io"),
        240,
        ["-n keda deploy/keda-operator", "-n keda deploy/keda-metrics-apiserver"],
    )

    def both_available() -> bool:
        # The operator restarts once after making its certificates (upstream's RestartOnSecretRefresh).
        r = kubectl("get", "deployment", "-n", "keda", "-o", "json", check=False, timeout=10)
        items = json.loads(r.stdout)["items"] if r.returncode == 0 else []
        return len(items) == 2 and all(
            (d["status"].get("availableReplicas") or 0) >= 1 and (d["status"].get("readyReplicas") or 0) >= 1
            for d in items
        )

    _wait("keda", "operator and metrics API server Ready", both_available, 240, ["-n keda deploy/keda-operator"])


ADDONS: dict[str, Callable[[], None]] = {"metrics-server": metrics_server, "keda": keda}


def build_only(names: list[str]) -> None:
    """Build the binaries without a cluster (CI warms the cache before it starts one)."""
    for n in names:
        _go_build(n)


def install(names: list[str]) -> None:
    unknown = [n for n in names if n not in ADDONS]
    if unknown:
        raise SystemExit(f"addons: unknown {', '.join(unknown)}; known: {', '.join(ADDONS)}")
    for n in names:
        t0 = time.monotonic()
        ADDONS[n]()
        say(f"{n} ready in {time.monotonic() - t0:.0f}s")
