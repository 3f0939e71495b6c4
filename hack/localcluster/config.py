"""Where things live and which addresses the local cluster uses. One place for all of it."""

import os
import pathlib

HACK = pathlib.Path(__file__).resolve().parent.parent
ROOT = HACK.parent


def _versions() -> dict:
    out = {}
    for line in (HACK / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


VERSIONS = _versions()  # every pin of versions.env; the ones the harness names often, below
K8S_VERSION = VERSIONS["K8S_VERSION"]
KWOK_VERSION = VERSIONS["KWOK_VERSION"]
METRICS_SERVER_VERSION = VERSIONS["METRICS_SERVER_VERSION"]
KEDA_VERSION = VERSIONS["KEDA_VERSION"]
# The local OCI registry (hack/local-cluster registry up): the release is pushed there and the node pulls from it.
REGISTRY_ADDR = os.environ.get("DAEMONPOOL_LOCAL_REGISTRY", "127.0.0.1:5000")
# Cached outside the repo, keyed by version; survives `down` so `up` is fast.
CACHE = pathlib.Path(os.environ.get("DAEMONPOOL_CACHE", pathlib.Path.home() / ".cache" / "daemonpool"))
BIN = CACHE / f"k8s-{K8S_VERSION}" / "bin"
TOOLS = CACHE / "tools"
IMAGES = CACHE / "images"
# containerd's content store lives in the cache too: imported images survive `down`.
CONTAINERD_ROOT = CACHE / "containerd-root"
# Everything one running cluster owns; removed by `down` except the logs.
RUN = pathlib.Path(os.environ.get("DAEMONPOOL_CLUSTER_DIR", CACHE / "cluster"))
LOGS = RUN / "logs"
PKI = RUN / "pki"
KUBECONFIG = RUN / "admin.kubeconfig"

# The node's name must resolve to 127.0.0.1 so exec and logs stay on loopback.
NODE_NAME = "localhost"
BRIDGE = "dpbr0"
POD_CIDR = "10.99.0.0/24"
GATEWAY = "10.99.0.1"
SERVICE_CIDR = "10.98.0.0/24"
SERVICE_IP = "10.98.0.1"
API_PORT = 6443
ETCD_CLIENT = "http://127.0.0.1:23790"
ETCD_PEER = "http://127.0.0.1:23800"
CONTAINERD_SOCK = RUN / "containerd" / "containerd.sock"
GUARD_TABLE = "daemonpool_guard"
# kind's network (kind.py): its bridge and guard, named here so that either cluster's teardown knows the other's.
KIND_BRIDGE = "dpkind0"
KIND_GUARD_TABLE = "daemonpool_kind_guard"
PAUSE_IMAGE = "registry.k8s.io/pause:daemonpool"
BASE_IMAGE = "daemonpool/python-base:bookworm"
SYSCTLS = (
    "vm.overcommit_memory",
    "kernel.panic",
    "kernel.panic_on_oops",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)

APT_PACKAGES = [
    "etcd-server",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "debootstrap",
    "openssl",
    "iptables",
    "nftables",
    "iproute2",
    "conntrack",
    "gcc",
    "libc6-dev",
    "docker.io",
    "kmod",
    "util-linux",
    # Services the tests start (the mailer example).
    "postgresql",
    # A Python any user can run: tests/cluster/test_demo.py runs hack/demo as an unprivileged user (setpriv
    # is util-linux's), and the toolchain Python may live under /root.
    "python3",
]

# The project's images: (Dockerfile, tag). The one list; hack/demo and the tests read it from here.
PROJECT_IMAGES = {
    "worker-base": ("images/worker-base/Dockerfile", "daemonpool/worker-base:dev"),
    "example-worker": ("examples/worker/Dockerfile", "daemonpool/example-worker:dev"),
    "operator": ("operator/Dockerfile", "daemonpool/operator:dev"),
    "mailer": ("examples/mailer/Dockerfile", "daemonpool/mailer:dev"),
}

# Fake nodes (kwok): a label and taint only pods that ask for them land on; the real node stays real.
KWOK_BIN = CACHE / f"kwok-{KWOK_VERSION}" / "kwok"
FAKE_NODE_LABEL = ("type", "kwok")
# Addresses kwok gives its pods. Routed to the host itself, so a connection to a fake pod is refused at
# once (as by a pod that does not listen) instead of timing out, and no packet for it leaves the machine.
FAKE_POD_CIDR = "10.200.0.0/16"
FAKE_POD_GATEWAY = "10.200.0.1"  # kwok's --cidr names its first address; nodes report it as their IP
FAKE_NODE_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# Each fake node: room for 110 pods, as a real node's default.
FAKE_NODE_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110"}
