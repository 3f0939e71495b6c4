"""kind on this machine: the network, its guard, the cluster, and the host put back afterwards.

    hack/local-cluster kind node-image     build kindest/node:vK8S in the harness's dockerd (kindnode.py; once)
    hack/local-cluster kind up [NAME]      the docker network `kind` and its guard, then `kind create cluster`
                                           from kind-config.yaml; prints the kubeconfig's path
    hack/local-cluster kind down [NAME]    the cluster, the network, the guard and dockerd gone; host back to baseline
    hack/local-cluster kind env            DOCKER_HOST and PATH lines for a shell (`eval "$(... kind env)"`)
    hack/local-cluster kind build-image DOCKERFILE TAG   docker build a project image here, `kind load` it

The guard: the network `kind` is made here, before any node starts, on a bridge of a known name, and an
nftables table rejects anything forwarded from it to another interface (as the local cluster's guard does).
dockerd itself runs without iptables or masquerading, so nothing on the kind network is NATed out either.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time

from . import config as C
from . import host, images, kindnode, tools
from .procs import say, sh

NODE_IMAGE = kindnode.NODE_IMAGE
NETWORK = "kind"  # the name kind looks for (it reuses a network that exists)
BRIDGE = C.KIND_BRIDGE
SUBNET = "172.30.0.0/24"
GATEWAY = "172.30.0.1"  # the host on the kind network: pods reach PostgreSQL and SMTP here
GUARD_TABLE = C.KIND_GUARD_TABLE
# kind's pod and service subnets (kind-config.yaml sets neither): the host reaches pods through their nodes
# (route_pods), and nothing for either subnet may leave by another interface (the guard's output chain; before
# the routes, the host's default route sent a test's packets for a pod out of eth0).
POD_SUBNET = "10.244.0.0/16"
SERVICE_SUBNET = "10.96.0.0/16"
RUN = C.CACHE / "kind"  # the baseline and the kubeconfig of the kind cluster


def env() -> dict[str, str]:
    """What kind, pytest-kind-ng and docker need to reach the harness's dockerd and find kind and kubectl."""
    path = f"{C.TOOLS / 'bin'}:{C.BIN}:{os.environ.get('PATH', '')}"
    return {"DOCKER_HOST": f"unix://{images.DOCKER_SOCK}", "PATH": path}


def baseline() -> dict:
    path = RUN / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    base = {
        "sysctls": {k: host.sysctl_read(k) for k in C.SYSCTLS},
        "nft_tables": host.nft_tables(),
        "links": sorted(os.listdir("/sys/class/net")),
        "lib_modules": os.path.exists("/lib/modules"),
    }
    RUN.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(base, indent=1))
    return base


def net_up() -> None:
    """The network `kind` on bridge dpkind0, and the guard on it, before any node starts."""
    if images.docker("network", "inspect", NETWORK, check=False).returncode != 0:
        images.docker(
            "network",
            "create",
            "-d",
            "bridge",
            "-o",
            f"com.docker.network.bridge.name={BRIDGE}",
            "-o",
            "com.docker.network.bridge.enable_ip_masquerade=false",
            "--subnet",
            SUBNET,
            "--gateway",
            GATEWAY,
            NETWORK,
        )
    bridge = images.docker(
        "network", "inspect", "-f", '{{index .Options "com.docker.network.bridge.name"}}', NETWORK
    ).stdout.strip()
    if bridge != BRIDGE:
        raise SystemExit(
            f"a docker network {NETWORK!r} exists on bridge {bridge!r}, not {BRIDGE}: remove it (docker network rm kind)"
        )
    guard = f"""table inet {GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -200; policy accept;
    iifname "{BRIDGE}" oifname != "{BRIDGE}" counter reject with icmpx admin-prohibited
  }}
  chain output {{
    type filter hook output priority -200; policy accept;
    ip daddr {{ {POD_SUBNET}, {SERVICE_SUBNET} }} oifname != "{BRIDGE}" counter reject with icmpx admin-prohibited
  }}
}}
"""
    sh("nft", "delete", "table", "inet", GUARD_TABLE, check=False)
    sh("nft", "-f", "-", input=guard)


def route_pods(kubeconfig: pathlib.Path | str) -> dict[str, str]:
    """Routes from the host to each node's pod CIDR through that node on the kind network, as the local cluster
    has to its pods: the tests ask workers and queue servers by pod IP. Gone with the bridge at ``down``.
    Returns {podCIDR: node IP}."""
    out = sh(C.BIN / "kubectl", "--kubeconfig", kubeconfig, "get", "nodes", "-o", "json").stdout
    routes = {}
    for node in json.loads(out)["items"]:
        cidr = node["spec"].get("podCIDR")
        ips = [a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"]
        if cidr and ips:
            sh("ip", "route", "replace", cidr, "via", ips[0], "dev", BRIDGE)
            routes[cidr] = ips[0]
    return routes


def guard_installed() -> bool:
    return f"inet {GUARD_TABLE}" in host.nft_tables()


def kind(*args: str, check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tools.ensure("kind"), *args], check=check, text=True, capture_output=capture, env=dict(os.environ, **env())
    )


def up(name: str = "daemonpool") -> pathlib.Path:
    """A kind cluster from kind-config.yaml; returns its kubeconfig's path."""
    t0 = time.monotonic()
    baseline()
    kindnode.node_image()
    net_up()
    kubeconfig = RUN / f"{name}.kubeconfig"
    if name not in kind("get", "clusters", capture=True).stdout.split():
        say(f"kind create cluster --name {name} --config kind-config.yaml")
        kind(
            "create",
            "cluster",
            "--name",
            name,
            "--config",
            str(C.ROOT / "kind-config.yaml"),
            "--kubeconfig",
            str(kubeconfig),
            "--wait",
            "180s",
        )
    else:  # made before (by pytest-kind-ng, or by hand): its kubeconfig from kind
        kubeconfig.parent.mkdir(parents=True, exist_ok=True)
        kubeconfig.write_text(kind("get", "kubeconfig", "--name", name, capture=True).stdout)
    route_pods(kubeconfig)
    say(f"kind cluster {name} up in {time.monotonic() - t0:.0f}s; KUBECONFIG={kubeconfig}")
    return kubeconfig


def down(name: str | None = None) -> list[str]:
    """Every kind cluster (or ``name``), the network, the guard, dockerd; then the host against the baseline.
    Returns what still differs (empty when the host is back)."""
    if images.DOCKER_SOCK.exists():
        names = [name] if name else kind("get", "clusters", check=False, capture=True).stdout.split()
        for n in names:
            kind("delete", "cluster", "--name", n, check=False)
        images.docker("network", "rm", NETWORK, check=False)
    sh("nft", "delete", "table", "inet", GUARD_TABLE, check=False)
    images.docker_down()
    base = json.loads((RUN / "baseline.json").read_text()) if (RUN / "baseline.json").exists() else None
    diffs: list[str] = []
    if base:
        # The local cluster may be up beside this one: its bridge, guard and sysctls stay (host.py).
        diffs = host.put_back_network(base, (BRIDGE, GUARD_TABLE), (C.BRIDGE, C.GUARD_TABLE))
        if not base["lib_modules"] and os.path.isdir("/lib/modules") and not os.listdir("/lib/modules"):
            os.rmdir("/lib/modules")  # docker made it for kind's read-only mount of the host's modules
        (RUN / "baseline.json").unlink()
    return diffs


def main(args: list[str]) -> None:
    cmd = args[0] if args else "up"
    if cmd == "node-image":
        print(kindnode.node_image())
    elif cmd == "up":
        print(up(*args[1:2]))
    elif cmd == "down":
        left = down(*args[1:2])
        if left:
            raise SystemExit(f"kind down: the host differs from its baseline: {left}")
        say("kind down: the host is back to its baseline")
    elif cmd == "build-image":
        if len(args) != 3:
            raise SystemExit("usage: hack/local-cluster kind build-image DOCKERFILE TAG")
        images.build(args[1], args[2])
        kind("load", "docker-image", args[2], "--name", "daemonpool")
    elif cmd == "env":
        for k, v in env().items():
            print(f"export {k}={v}")
    else:
        raise SystemExit(f"unknown kind command {cmd!r}; one of: node-image, up, down, env, build-image")
