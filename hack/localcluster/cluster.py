"""A real single-node Kubernetes from upstream binaries: up, down, status.

Order of `up` (each step waits for the previous one to be healthy):
  baseline of the host -> bridge + guard -> PKI and configs -> etcd ->
  kube-apiserver -> containerd (+ pause image) -> kubelet -> kube-proxy ->
  controller-manager -> scheduler -> Node Ready, untainted, default ServiceAccount.
`down` undoes it in reverse and puts the host back to the baseline.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from . import config as C
from . import images, install, pki

COMPONENTS = ["etcd", "kube-apiserver", "containerd", "kubelet", "kube-proxy", "kube-controller-manager",
              "kube-scheduler"]


class ClusterError(RuntimeError):
    """`up` failed: names the component and carries the end of its log."""

    def __init__(self, component: str, why: str):
        self.component = component
        log = C.LOGS / f"{component}.log"
        tail = ""
        if log.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        super().__init__(f"{component} failed: {why}\n--- last lines of {log} ---\n{tail}")


def say(msg: str) -> None:
    print(f"[local-cluster] {msg}", file=sys.stderr, flush=True)


def sh(*args, check=True, capture=True, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=check, capture_output=capture, text=True, env=env,
                          input=input, timeout=timeout)


def kubectl(*args, check=True, timeout=60, input=None) -> subprocess.CompletedProcess:
    return sh(C.BIN / "kubectl", "--kubeconfig", C.KUBECONFIG, *args, check=check, timeout=timeout, input=input)


def ctr(*args, check=True, timeout=300, input=None):
    return sh("ctr", "-n", "k8s.io", "--address", C.CONTAINERD_SOCK, *args, check=check, timeout=timeout, input=input)


# -- processes -----------------------------------------------------------------

def _pidfile(name: str) -> pathlib.Path:
    return C.RUN / "pids" / f"{name}.pid"


def pid_of(name: str) -> int | None:
    try:
        pid = int(_pidfile(name).read_text())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except FileNotFoundError:
        return None
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        _reap(pid)
        return None
    # A recycled PID would not be running our binary ("" while it is still exec'ing).
    return pid if os.path.basename(cmd) in (name, "") or cmd.endswith("/python3") else None


def spawn(name: str, argv: list, env: dict | None = None) -> int:
    C.LOGS.mkdir(parents=True, exist_ok=True)
    _pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    log = open(C.LOGS / f"{name}.log", "ab")
    proc = subprocess.Popen([str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    log.close()
    _pidfile(name).write_text(str(proc.pid))
    return proc.pid


def stop(name: str, grace: float = 15.0) -> None:
    pid = pid_of(name)
    if pid is None:
        _pidfile(name).unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    _pidfile(name).unlink(missing_ok=True)


def _reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_for(component: str, check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if component in COMPONENTS and pid_of(component) is None:
            raise ClusterError(component, "the process exited")
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - a probe of a starting server
            last = exc
        time.sleep(0.2)
    raise ClusterError(component, f"not {what} after {timeout:.0f}s" + (f" (last error: {last})" if last else ""))


# -- host baseline ---------------------------------------------------------------

def _sysctl_read(key):
    try:
        return (pathlib.Path("/proc/sys") / key.replace(".", "/")).read_text().strip()
    except FileNotFoundError:
        return None


def _sysctl_write(key, value):
    try:
        (pathlib.Path("/proc/sys") / key.replace(".", "/")).write_text(value)
    except (FileNotFoundError, PermissionError, OSError):
        pass


def _nft_tables() -> list:
    out = sh("nft", "list", "tables", check=False).stdout
    return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")]


def take_baseline() -> dict:
    path = C.RUN / "baseline.json"
    if path.exists():
        return json.loads(path.read_text())
    base = {
        "sysctls": {k: _sysctl_read(k) for k in C.SYSCTLS},
        "nft_tables": _nft_tables(),
        "links": sorted(os.listdir("/sys/class/net")),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(base, indent=1))
    return base


# -- network -----------------------------------------------------------------------

def net_up():
    if not os.path.exists(f"/sys/class/net/{C.BRIDGE}"):
        sh("ip", "link", "add", C.BRIDGE, "type", "bridge")
    addrs = sh("ip", "-o", "-4", "addr", "show", "dev", C.BRIDGE).stdout
    if f"{C.GATEWAY}/" not in addrs:
        sh("ip", "addr", "add", f"{C.GATEWAY}/{C.POD_CIDR.split('/')[1]}", "dev", C.BRIDGE)
    sh("ip", "link", "set", C.BRIDGE, "up")
    # The guard: nothing forwarded from the bridge may leave through another interface.
    guard = f"""table inet {C.GUARD_TABLE} {{
  chain forward {{
    type filter hook forward priority -200; policy accept;
    iifname "{C.BRIDGE}" oifname != "{C.BRIDGE}" counter reject with icmpx admin-prohibited
  }}
}}
"""
    sh("nft", "delete", "table", "inet", C.GUARD_TABLE, check=False)
    sh("nft", "-f", "-", input=guard)


def guard_installed() -> bool:
    return f"inet {C.GUARD_TABLE}" in _nft_tables()


# -- configs -------------------------------------------------------------------------

def write_configs():
    d = C.RUN
    for sub in ("etc", "cni/net.d", "containerd", "kubelet", "pod-logs", "audit"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    server = f"https://{C.GATEWAY}:{C.API_PORT}"
    C.KUBECONFIG.write_text(pki.kubeconfig("admin", server))
    for user in ("controller-manager", "scheduler", "kube-proxy", "kubelet"):
        (d / "etc" / f"{user}.kubeconfig").write_text(pki.kubeconfig(user, server))
    (d / "etc" / "audit-policy.yaml").write_text("""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  # Writes only: tests count the operator's writes (idle means quiet).
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
""")
    (d / "cni/net.d/10-daemonpool.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "daemonpool",
        "plugins": [
            {"type": "bridge", "bridge": C.BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": C.POD_CIDR, "gateway": C.GATEWAY}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(d / "cni" / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=1))
    (d / "containerd" / "config.toml").write_text(f"""version = 2
root = "{C.CONTAINERD_ROOT}"
state = "{d / 'containerd' / 'state'}"
[grpc]
  address = "{C.CONTAINERD_SOCK}"
[ttrpc]
  address = "{C.CONTAINERD_SOCK}.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{C.PAUSE_IMAGE}"
  # The VM lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d / 'cni' / 'net.d'}"
""")
    p = C.PKI
    (d / "etc" / "kubelet.yaml").write_text(f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
# 1.36 refuses cgroup v1 by default; these VMs run hybrid v1+v2.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{C.CONTAINERD_SOCK}
podLogsDir: {d / 'pod-logs'}
authentication:
  x509:
    clientCAFile: {p / 'ca.crt'}
  webhook:
    enabled: false
  anonymous:
    enabled: false
authorization:
  mode: AlwaysAllow
tlsCertFile: {p / 'kubelet-serving.crt'}
tlsPrivateKeyFile: {p / 'kubelet-serving.key'}
rotateCertificates: false
serializeImagePulls: false
# Locally imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
""")
    (d / "etc" / "kube-proxy.yaml").write_text(f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {d / 'etc' / 'kube-proxy.kubeconfig'}
mode: nftables
hostnameOverride: {C.NODE_NAME}
clusterCIDR: {C.POD_CIDR}
detectLocalMode: ClusterCIDR
nodePortAddresses: ["primary"]
# The default -999 needs CAP_SYS_RESOURCE, which these VMs lack.
oomScoreAdj: 0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
# Zeros: leave the host's conntrack limits alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
""")


def node_ip() -> str:
    out = sh("ip", "-o", "-4", "route", "get", "192.0.2.255", check=False).stdout.split()
    if "src" in out:
        return out[out.index("src") + 1]
    out = sh("hostname", "-I", check=False).stdout.split()
    return out[0]


# -- up / down ---------------------------------------------------------------------

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


def is_up() -> bool:
    return all(pid_of(c) for c in COMPONENTS) and C.KUBECONFIG.exists() and _api_ready()


def up() -> None:
    t0 = time.monotonic()
    install.ensure_all()
    if all(pid_of(c) for c in COMPONENTS) and C.KUBECONFIG.exists():
        say("already up")
        print_env()
        return
    if any(pid_of(c) for c in COMPONENTS) or (C.RUN / "pids").exists() or (C.RUN / "etcd").exists():
        say("a partial cluster or the leftovers of one are here: taking it down first")
        down()
    if C.LOGS.exists():
        prev = C.RUN.parent / "cluster-logs.prev"
        shutil.rmtree(prev, ignore_errors=True)
        shutil.copytree(C.LOGS, prev)
        shutil.rmtree(C.LOGS)
    take_baseline()
    net_up()
    if not (C.PKI / "ca.crt").exists():
        say("making certificates")
        pki.make()
    write_configs()
    p, d, e = C.PKI, C.RUN, C.RUN / "etc"
    say("starting etcd")
    spawn("etcd", ["etcd", "--name", "daemonpool", "--data-dir", d / "etcd",
                   "--listen-client-urls", C.ETCD_CLIENT, "--advertise-client-urls", C.ETCD_CLIENT,
                   "--listen-peer-urls", C.ETCD_PEER, "--initial-advertise-peer-urls", C.ETCD_PEER,
                   "--initial-cluster", f"daemonpool={C.ETCD_PEER}", "--listen-metrics-urls", "http://127.0.0.1:23810"])
    wait_for("etcd", _etcd_ready, 30, "healthy")
    say("starting kube-apiserver")
    spawn("kube-apiserver", [
        C.BIN / "kube-apiserver", "--etcd-servers", C.ETCD_CLIENT,
        "--bind-address", C.GATEWAY, "--advertise-address", C.GATEWAY, "--secure-port", C.API_PORT,
        "--endpoint-reconciler-type", "lease",
        "--service-cluster-ip-range", C.SERVICE_CIDR,
        "--client-ca-file", p / "ca.crt", "--tls-cert-file", p / "apiserver.crt", "--tls-private-key-file", p / "apiserver.key",
        "--kubelet-client-certificate", p / "apiserver-kubelet-client.crt",
        "--kubelet-client-key", p / "apiserver-kubelet-client.key",
        "--kubelet-preferred-address-types", "Hostname,InternalIP",
        "--service-account-key-file", p / "sa.pub", "--service-account-signing-key-file", p / "sa.key",
        "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
        "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
        "--audit-policy-file", e / "audit-policy.yaml", "--audit-log-path", d / "audit" / "audit.log",
        "--audit-log-format", "json", "--audit-log-maxsize", "200", "--audit-log-maxbackup", "2",
        "--profiling=false",
        # As on most clusters: PodSecurity admission, not this flag, decides who may run privileged.
        "--allow-privileged=true",
    ])
    wait_for("kube-apiserver", _api_ready, 90, "ready")
    say("starting containerd")
    spawn("containerd", ["containerd", "--config", d / "containerd" / "config.toml"])
    wait_for("containerd", lambda: ctr("version", check=False, timeout=5).returncode == 0, 30, "answering")
    images.ensure_pause_loaded()
    say("starting kubelet")
    spawn("kubelet", [C.BIN / "kubelet", "--config", e / "kubelet.yaml", "--kubeconfig", e / "kubelet.kubeconfig",
                      "--hostname-override", C.NODE_NAME, "--node-ip", node_ip(), "--root-dir", d / "kubelet",
                      "--v", "1"])
    say("starting kube-proxy")
    spawn("kube-proxy", [C.BIN / "kube-proxy", "--config", e / "kube-proxy.yaml"])
    say("starting kube-controller-manager and kube-scheduler")
    spawn("kube-controller-manager", [
        C.BIN / "kube-controller-manager", "--kubeconfig", e / "controller-manager.kubeconfig",
        "--authentication-kubeconfig", e / "controller-manager.kubeconfig",
        "--authorization-kubeconfig", e / "controller-manager.kubeconfig",
        "--leader-elect=false", "--controllers", "*,-nodeipam", "--use-service-account-credentials=true",
        "--service-account-private-key-file", p / "sa.key", "--root-ca-file", p / "ca.crt",
        "--cluster-signing-cert-file", p / "ca.crt", "--cluster-signing-key-file", p / "ca.key",
        "--bind-address", "127.0.0.1", "--secure-port", "10257"])
    spawn("kube-scheduler", [
        C.BIN / "kube-scheduler", "--kubeconfig", e / "scheduler.kubeconfig",
        "--authentication-kubeconfig", e / "scheduler.kubeconfig",
        "--authorization-kubeconfig", e / "scheduler.kubeconfig",
        "--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "10259"])
    wait_for("kubelet", _node_ready, 120, "Ready (node Ready and untainted)")
    wait_for("kube-controller-manager", _default_sa, 60, "done creating the default ServiceAccount")
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
    _kill_matching(lambda cmd: b"containerd-shim" in cmd and str(C.CONTAINERD_SOCK).encode() in cmd)


def _kill_matching(match) -> int:
    """SIGKILL every process whose command line ``match``es; returns how many."""
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmd = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if match(cmd):
            try:
                os.kill(int(pid), signal.SIGKILL)
                n += 1
            except ProcessLookupError:
                pass
    return n


def _unmount_under(*roots):
    mounts = []
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if any(target == str(r) or target.startswith(str(r) + "/") for r in roots):
            mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        sh("umount", "-l", target, check=False)


def down() -> None:
    t0 = time.monotonic()
    base_path = C.RUN / "baseline.json"
    base = json.loads(base_path.read_text()) if base_path.exists() else None
    images.docker_down()
    for name in ("kube-scheduler", "kube-controller-manager", "kube-proxy", "kubelet"):
        stop(name)
    _kill_containers()
    for name in ("containerd", "kube-apiserver", "etcd"):
        stop(name, grace=20)
    # Anything of ours whose PID file is gone (an interrupted run): found by the folders it names.
    run = str(C.RUN).encode() + b"/"
    if _kill_matching(lambda cmd: run in cmd and not cmd.startswith(b"python")):
        time.sleep(0.5)
    if (C.BIN / "kube-proxy").exists():
        sh(C.BIN / "kube-proxy", "--cleanup", "--proxy-mode", "nftables", check=False, timeout=60)
    _unmount_under(C.RUN, C.CONTAINERD_ROOT, "/run/containerd/io.containerd.grpc.v1.cri")
    # Network namespaces the CNI made for our pods.
    if os.path.isdir("/run/netns"):
        keep = set(base["netns"]) if base else set()
        for ns in os.listdir("/run/netns"):
            if ns.startswith("cni-") and ns not in keep:
                sh("ip", "netns", "delete", ns, check=False)
    if os.path.exists(f"/sys/class/net/{C.BRIDGE}"):
        sh("ip", "link", "delete", C.BRIDGE, check=False)
    if base:
        for link in sorted(os.listdir("/sys/class/net")):
            if link not in base["links"] and link.startswith("veth"):
                sh("ip", "link", "delete", link, check=False)
        for table in _nft_tables():
            if table not in base["nft_tables"]:
                sh("nft", "delete", "table", *table.split(), check=False)
        for key, value in base["sysctls"].items():
            if value is not None and _sysctl_read(key) != value:
                _sysctl_write(key, value)
    else:
        sh("nft", "delete", "table", "inet", C.GUARD_TABLE, check=False)
    _remove_kubepods_cgroups()
    # The kubelet links each container's log here; ours point into our pod-logs folder.
    if os.path.isdir("/var/log/containers"):
        for entry in os.listdir("/var/log/containers"):
            link = os.path.join("/var/log/containers", entry)
            if os.path.islink(link) and os.readlink(link).startswith(str(C.RUN / "pod-logs")):
                os.unlink(link)
    for sub in ("etcd", "kubelet", "containerd", "cni", "pod-logs", "pids", "audit", "etc", "pki", "baseline.json",
                "admin.kubeconfig"):
        path = C.RUN / sub
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    say(f"down in {time.monotonic() - t0:.1f}s (logs kept in {C.LOGS})")


def _remove_kubepods_cgroups():
    for top in pathlib.Path("/sys/fs/cgroup").iterdir():
        kp = top / "kubepods"
        if not kp.is_dir():
            continue
        dirs = sorted((p for p in kp.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True) + [kp]
        for p in dirs:
            try:
                for pid in (p / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass
        for _ in range(20):
            left = False
            for p in dirs:
                try:
                    p.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    left = True
            if not left:
                break
            time.sleep(0.1)


def status() -> int:
    running = 0
    for c in COMPONENTS:
        pid = pid_of(c)
        running += bool(pid)
        print(f"{c:<26} {'running pid ' + str(pid) if pid else 'stopped'}")
    print(f"{'bridge ' + C.BRIDGE:<26} {'present' if os.path.exists('/sys/class/net/' + C.BRIDGE) else 'absent'}")
    print(f"{'guard (nft)':<26} {'installed' if guard_installed() else 'absent'}")
    if running == len(COMPONENTS) and C.KUBECONFIG.exists():
        r = kubectl("get", "nodes", check=False)
        print(r.stdout.strip() or r.stderr.strip())
        print(f"export KUBECONFIG={C.KUBECONFIG}")
        return 0
    return 1 if running else 3
