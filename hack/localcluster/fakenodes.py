"""Fake nodes next to the real one: kwok (sigs.k8s.io/kwok) built from the Go module proxy and cached,
run against the local cluster's API server. Its pods become Running and Ready without a container.

`hack/local-cluster fake-nodes N` makes N nodes named fake-0 … fake-(N-1), tainted and labelled so only
pods that tolerate the taint (and select the label) land there. `down` stops kwok with everything else.
Its one blocker, and the fix the harness applies: kube-apiserver needs --feature-gates=WatchList=false beside
Debian's etcd 3.4 (hack/README.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from . import config as C
from . import tools
from .procs import ClusterError, kubectl, pid_of, say, sh, spawn, stop, wait_for

# The stages kwok needs to make nodes Ready and pods Running/Ready/Completed/deleted (kustomize/stage).
STAGES = [
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
]


def _module_dir() -> str:
    return str(tools.module_cache() / f"sigs.k8s.io/kwok@v{C.KWOK_VERSION}")


def ensure_kwok() -> str:
    """Build kwok once per version (about 2.5 min cold on 2 cores); returns its path."""
    if C.KWOK_BIN.exists() and os.path.isdir(_module_dir()):
        return str(C.KWOK_BIN)
    say(f"building kwok v{C.KWOK_VERSION} from the Go module proxy (a few minutes, once)")
    t0 = time.monotonic()
    C.KWOK_BIN.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOFLAGS="-mod=mod", GOBIN=str(C.KWOK_BIN.parent), CGO_ENABLED="0")
    subprocess.run(
        ["go", "install", "-trimpath", f"sigs.k8s.io/kwok/cmd/kwok@v{C.KWOK_VERSION}"],
        check=True,
        env=env,
        stdout=sys.stderr,
    )
    say(f"kwok built in {time.monotonic() - t0:.0f}s")
    return str(C.KWOK_BIN)


def _stages_file() -> str:
    path = C.RUN / "etc" / "kwok-stages.yaml"
    parts = []
    for rel in STAGES:
        with open(os.path.join(_module_dir(), "kustomize", "stage", rel)) as f:
            parts.append(f.read().strip())
    path.write_text("\n---\n".join(parts) + "\n")
    return str(path)


def start() -> None:
    if pid_of("kwok"):
        return
    binary = ensure_kwok()
    route_fake_pods()
    say("starting kwok (fake nodes)")
    spawn(
        "kwok",
        [
            binary,
            "--kubeconfig",
            C.KUBECONFIG,
            "--config",
            _stages_file(),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-lease-duration-seconds=40",
            f"--cidr={C.FAKE_POD_GATEWAY}/{C.FAKE_POD_CIDR.split('/')[1]}",
            f"--node-ip={C.FAKE_POD_GATEWAY}",
        ],
    )
    time.sleep(1)
    if pid_of("kwok") is None:
        raise ClusterError("kwok", "the process exited")


def route_fake_pods() -> None:
    """Fake pods' addresses are the host's own (a `local` route): asking one refuses at once, and a
    connection from the host (`--operator dev`) never leaves for the default route. `down` removes it."""
    sh("ip", "route", "replace", "local", C.FAKE_POD_CIDR, "dev", "lo", "table", "local")


def unroute_fake_pods() -> None:
    sh("ip", "route", "del", "local", C.FAKE_POD_CIDR, "dev", "lo", "table", "local", check=False)


def node(i: int) -> dict:
    key, value = C.FAKE_NODE_LABEL
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": f"fake-{i}",
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {key: value, "kubernetes.io/hostname": f"fake-{i}", "kubernetes.io/role": "agent"},
        },
        "spec": {"taints": [C.FAKE_NODE_TAINT]},
        "status": {"allocatable": C.FAKE_NODE_CAPACITY, "capacity": C.FAKE_NODE_CAPACITY},
    }


def _ready_fakes() -> int:
    out = kubectl("get", "nodes", "-l", "=".join(C.FAKE_NODE_LABEL), "-o", "json", timeout=60).stdout
    return sum(
        1
        for n in json.loads(out)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    )


def add(n: int) -> None:
    """N fake nodes, Ready (more are added, none removed)."""
    start()
    docs = "\n---\n".join(json.dumps(node(i)) for i in range(n))
    kubectl("apply", "-f", "-", input=docs, timeout=120)
    wait_for("kwok", lambda: _ready_fakes() >= n, 120, f"{n} fake node(s) Ready")
    say(f"{n} fake node(s) Ready (label {'='.join(C.FAKE_NODE_LABEL)}, taint {C.FAKE_NODE_TAINT['key']})")


def remove() -> None:
    """The fake nodes gone (their pods are then removed by the pod garbage collector) and kwok stopped."""
    kubectl("delete", "nodes", "-l", "=".join(C.FAKE_NODE_LABEL), "--wait=false", timeout=120)
    stop("kwok")
    unroute_fake_pods()
    say("fake nodes removed")


def pod_placement() -> dict:
    """What a pod template needs to land on the fake nodes: a nodeSelector and the toleration."""
    key, value = C.FAKE_NODE_LABEL
    return {
        "nodeSelector": {key: value},
        "tolerations": [{"key": C.FAKE_NODE_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}],
    }
