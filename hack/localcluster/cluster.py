"""A real single-node Kubernetes from upstream binaries: up, down, status.

`up` takes a baseline of the host, makes the bridge and the guard, certificates and configs,
then walks COMPONENTS in order (start, wait until ready); `down` stops them in reverse,
removes what the containers left, and puts the host back to the baseline.
Parts: procs.py (processes), host.py (bridge, guard, sysctls, cgroups, baseline),
render.py + templates/ (config files), images.py (images), install.py (packages, binaries).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from typing import Callable

from . import config as C
from . import fakenodes, host, images, install, pki, render
from .procs import ClusterError, ctr, kill_matching, kubectl, pid_of, say, sh, spawn, stop, wait_for

__all__ = ["ClusterError", "up", "down", "status", "is_up", "COMPONENTS"]


def _api_ready() -> bool:
    return kubectl("get", "--raw", "/readyz", check=False, timeout=10).stdout.strip() == "ok"


def _etcd_ready() -> bool:
    with urllib.request.urlopen(f"{C.ETCD_CLIENT}/health", timeout=2) as r:
        return json.loads(r.read()).get("health") == "true"


def _node_ready() -> bool:
    r = kubectl("get", "node", C.NODE_NAME, "-o", "json", check=False, timeout=10)
    if r.returncode:
        return False
    node = json.loads(r.stdout)
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))
    tainted = any(t["key"].startswith("node.kubernetes.io/") for t in node["spec"].get("taints") or [])
    return ready and not tainted


def _default_sa() -> bool:
    return kubectl("get", "serviceaccount", "default", "-n", "default", check=False, timeout=10).returncode == 0


def _containerd_ready() -> bool:
    """Its API answers and its CRI plugin finished starting: `ctr version` answers before the CRI service is
    initialized, and a kubelet started in between exits ("server is not initialized yet", seen once)."""
    if ctr("version", check=False, timeout=5).returncode != 0:
        return False
    try:
        return "Start streaming server" in (C.LOGS / "containerd.log").read_text(errors="replace")
    except OSError:
        return False


# -- the components, in start order ------------------------------------------------

P, D, E = C.PKI, C.RUN, C.RUN / "etc"


def _etcd():
    return [
        "etcd",
        "--name",
        "daemonpool",
        "--data-dir",
        D / "etcd",
        "--listen-client-urls",
        C.ETCD_CLIENT,
        "--advertise-client-urls",
        C.ETCD_CLIENT,
        "--listen-peer-urls",
        C.ETCD_PEER,
        "--initial-advertise-peer-urls",
        C.ETCD_PEER,
        "--initial-cluster",
        f"daemonpool={C.ETCD_PEER}",
        "--listen-metrics-urls",
        "http://127.0.0.1:23810",
    ]


def _apiserver():
    return [
        C.BIN / "kube-apiserver",
        "--etcd-servers",
        C.ETCD_CLIENT,
        "--bind-address",
        C.GATEWAY,
        "--advertise-address",
        C.GATEWAY,
        "--secure-port",
        C.API_PORT,
        "--endpoint-reconciler-type",
        "lease",
        "--service-cluster-ip-range",
        C.SERVICE_CIDR,
        "--client-ca-file",
        P / "ca.crt",
        "--tls-cert-file",
        P / "apiserver.crt",
        "--tls-private-key-file",
        P / "apiserver.key",
        "--kubelet-client-certificate",
        P / "apiserver-kubelet-client.crt",
        "--kubelet-client-key",
        P / "apiserver-kubelet-client.key",
        "--kubelet-preferred-address-types",
        "Hostname,InternalIP",
        "--service-account-key-file",
        P / "sa.pub",
        "--service-account-signing-key-file",
        P / "sa.key",
        "--service-account-issuer",
        "https://kubernetes.default.svc.cluster.local",
        "--authorization-mode",
        "Node,RBAC",
        "--enable-admission-plugins",
        "NodeRestriction",
        "--audit-policy-file",
        E / "audit-policy.yaml",
        "--audit-log-path",
        D / "audit" / "audit.log",
        "--audit-log-format",
        "json",
        "--audit-log-maxsize",
        "200",
        "--audit-log-maxbackup",
        "2",
        "--profiling=false",
        # kwok's watches (fake nodes) are refused with Debian's etcd 3.4 unless streaming lists are off.
        "--feature-gates=WatchList=false",
        # As on most clusters: PodSecurity admission, not this flag, decides who may run privileged.
        "--allow-privileged=true",
        # The aggregation layer, for the optional metrics-server and KEDA (addons.py). Aggregator routing
        # sends to the endpoint's address, which the host reaches directly (no kube-proxy hop).
        "--requestheader-client-ca-file",
        P / "front-proxy-ca.crt",
        "--requestheader-allowed-names",
        "front-proxy-client",
        "--requestheader-username-headers",
        "X-Remote-User",
        "--requestheader-group-headers",
        "X-Remote-Group",
        "--requestheader-extra-headers-prefix",
        "X-Remote-Extra-",
        "--proxy-client-cert-file",
        P / "front-proxy-client.crt",
        "--proxy-client-key-file",
        P / "front-proxy-client.key",
        "--enable-aggregator-routing=true",
    ]


def _kubelet():
    return [
        C.BIN / "kubelet",
        "--config",
        E / "kubelet.yaml",
        "--kubeconfig",
        E / "kubelet.kubeconfig",
        "--hostname-override",
        C.NODE_NAME,
        "--node-ip",
        host.node_ip(),
        "--root-dir",
        D / "kubelet",
        "--v",
        "1",
    ]


def _controller_manager():
    return [
        C.BIN / "kube-controller-manager",
        "--kubeconfig",
        E / "controller-manager.kubeconfig",
        "--authentication-kubeconfig",
        E / "controller-manager.kubeconfig",
        "--authorization-kubeconfig",
        E / "controller-manager.kubeconfig",
        "--leader-elect=false",
        "--controllers",
        "*,-nodeipam",
        "--use-service-account-credentials=true",
        "--service-account-private-key-file",
        P / "sa.key",
        "--root-ca-file",
        P / "ca.crt",
        "--cluster-signing-cert-file",
        P / "ca.crt",
        "--cluster-signing-key-file",
        P / "ca.key",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        "10257",
        # The defaults (20 QPS, burst 30) starve plain Deployments at scale (100 x 5 pods: 41 s
        # against 14 s); the operator's benchmark compares against this, so neither side is starved.
        "--kube-api-qps",
        "200",
        "--kube-api-burst",
        "300",
    ]


def _scheduler():
    return [
        C.BIN / "kube-scheduler",
        "--kubeconfig",
        E / "scheduler.kubeconfig",
        "--authentication-kubeconfig",
        E / "scheduler.kubeconfig",
        "--authorization-kubeconfig",
        E / "scheduler.kubeconfig",
        "--leader-elect=false",
        "--bind-address",
        "127.0.0.1",
        "--secure-port",
        "10259",
    ]


@dataclass(frozen=True)
class Component:
    name: str
    argv: Callable[[], list]
    ready: Callable[[], bool] | None = None  # waited on right after the start (None: later steps tell)
    timeout: float = 60.0
    what: str = "ready"
    after: Callable[[], None] | None = None  # a step once it is ready
    stop_grace: float = 15.0


COMPONENTS = [
    Component("etcd", _etcd, _etcd_ready, 30, "healthy", stop_grace=20),
    Component("kube-apiserver", _apiserver, _api_ready, 90, "ready", stop_grace=20),
    Component(
        "containerd",
        lambda: ["containerd", "--config", D / "containerd" / "config.toml"],
        _containerd_ready,
        30,
        "answering",
        after=images.ensure_pause_loaded,
        stop_grace=20,
    ),
    Component("kubelet", _kubelet),
    Component("kube-proxy", lambda: [C.BIN / "kube-proxy", "--config", E / "kube-proxy.yaml"]),
    Component("kube-controller-manager", _controller_manager),
    Component("kube-scheduler", _scheduler),
]
NAMES = [c.name for c in COMPONENTS]
# Last checks, once everything runs: (component blamed, check, timeout, what).
FINAL_CHECKS = [
    ("kubelet", _node_ready, 120, "Ready (node Ready and untainted)"),
    ("kube-controller-manager", _default_sa, 60, "done creating the default ServiceAccount"),
]


def is_up() -> bool:
    return all(pid_of(c) for c in NAMES) and C.KUBECONFIG.exists() and _api_ready()


def up() -> None:
    t0 = time.monotonic()
    install.ensure_all()
    if all(pid_of(c) for c in NAMES) and C.KUBECONFIG.exists():
        say("already up")
        print_env()
        return
    if any(pid_of(c) for c in NAMES) or (C.RUN / "pids").exists() or (C.RUN / "etcd").exists():
        say("a partial cluster or the leftovers of one are here: taking it down first")
        down()
    if C.LOGS.exists():
        prev = C.RUN.parent / "cluster-logs.prev"
        shutil.rmtree(prev, ignore_errors=True)
        shutil.copytree(C.LOGS, prev)
        shutil.rmtree(C.LOGS)
    host.take_baseline()
    host.net_up()
    if not (C.PKI / "ca.crt").exists():
        say("making certificates")
        pki.make()
    render.write_configs()
    for comp in COMPONENTS:
        say(f"starting {comp.name}")
        spawn(comp.name, comp.argv())
        if comp.ready is not None:
            wait_for(comp.name, comp.ready, comp.timeout, comp.what)
        if comp.after is not None:
            comp.after()
    for name, check, timeout, what in FINAL_CHECKS:
        wait_for(name, check, timeout, what)
    say(f"up in {time.monotonic() - t0:.1f}s")
    print_env()


def print_env() -> None:
    say(f"use it:  export KUBECONFIG={C.KUBECONFIG}; export PATH={C.BIN}:$PATH; kubectl get nodes")


def _kill_containers():
    """Every container the cluster started: their shims and processes, and their mounts."""
    if C.CONTAINERD_SOCK.exists() and pid_of("containerd"):
        tasks = ctr("tasks", "ls", "-q", check=False, timeout=30).stdout.split()
        for t in tasks:
            ctr("tasks", "kill", "-s", "SIGKILL", t, check=False, timeout=30)
        time.sleep(0.5)
        for t in tasks:
            ctr("tasks", "delete", "-f", t, check=False, timeout=30)
        for c in ctr("containers", "ls", "-q", check=False, timeout=30).stdout.split():
            ctr("containers", "delete", c, check=False, timeout=30)
    # Shims of our containerd outlive it: end them by their -address argument.
    kill_matching(lambda cmd: b"containerd-shim" in cmd and str(C.CONTAINERD_SOCK).encode() in cmd)


def down() -> None:
    t0 = time.monotonic()
    base = host.load_baseline()
    images.docker_down()
    # Reverse order; the containers go once their kubelet is gone and before their containerd.
    stop("kwok")  # fake nodes, when `fake-nodes` started it
    stop("registry")  # the local registry, when `registry up` started it (its storage stays in the cache)
    fakenodes.unroute_fake_pods()
    for comp in reversed(COMPONENTS):
        if comp.name == "containerd":
            _kill_containers()
        stop(comp.name, grace=comp.stop_grace)
    # Anything of ours whose PID file is gone (an interrupted run): found by the folders it names.
    run = str(C.RUN).encode() + b"/"
    if kill_matching(lambda cmd: run in cmd and not cmd.startswith(b"python")):
        time.sleep(0.5)
    if (C.BIN / "kube-proxy").exists():
        sh(C.BIN / "kube-proxy", "--cleanup", "--proxy-mode", "nftables", check=False, timeout=60)
    host.unmount_under(C.RUN, C.CONTAINERD_ROOT, "/run/containerd/io.containerd.grpc.v1.cri")
    host.restore(base)
    for sub in (
        "etcd",
        "kubelet",
        "containerd",
        "cni",
        "pod-logs",
        "pids",
        "audit",
        "etc",
        "pki",
        "baseline.json",
        "admin.kubeconfig",
    ):
        path = C.RUN / sub
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    say(f"down in {time.monotonic() - t0:.1f}s (logs kept in {C.LOGS})")


def status() -> int:
    running = 0
    for c in NAMES:
        pid = pid_of(c)
        running += bool(pid)
        print(f"{c:<26} {'running pid ' + str(pid) if pid else 'stopped'}")
    print(f"{'bridge ' + C.BRIDGE:<26} {'present' if os.path.exists('/sys/class/net/' + C.BRIDGE) else 'absent'}")
    print(f"{'guard (nft)':<26} {'installed' if host.guard_installed() else 'absent'}")
    kwok = pid_of("kwok")
    print(f"{'kwok (fake nodes)':<26} {'running pid ' + str(kwok) if kwok else 'stopped'}")
    if running == len(NAMES) and C.KUBECONFIG.exists():
        r = kubectl("get", "nodes", check=False)
        print(r.stdout.strip() or r.stderr.strip())
        print(f"export KUBECONFIG={C.KUBECONFIG}")
        return 0
    return 1 if running else 3
