"""kind's node image, built here from nothing but the registries we have (hack/local-cluster kind node-image).

    hack/local-cluster kind node-image     build kindest/node:vK8S in the harness's dockerd (cached; minutes once)

Why not `kind build node-image`: its builder fetches every image it did not build (`ctr content fetch`: etcd,
CoreDNS, pause, kindnetd, local-path-provisioner) from public registries, which this machine cannot reach, and
its base image downloads containerd, runc, crictl and the CNI plugins from release pages. So the same node
is assembled here, in kind's own order (`pkg/build/nodeimage/buildcontext.go`):

1. a root filesystem from Debian packages (debootstrap): systemd, containerd, runc, the CNI plugins, iptables;
2. kind's own files from its Go module (the entrypoint, the systemd units, the kubelet drop-ins), our
   Kubernetes binaries (kubeadm, kubelet, kubectl) and crictl, built from the Go module proxy;
3. every image kubeadm asks for (`kubeadm config images list`), built here under those names: the control
   plane from our binaries, etcd and CoreDNS from their Go modules, the pause program, plus the pod network;
4. those images imported into the node's containerd in a build container, which is committed.

The pod network: kind's kindnetd needs containerd's NRI (containerd 1.7+; Debian's is 1.6), so the node image
ships its own `/kind/manifests/default-cni.yaml` (kind applies whatever the image holds): a DaemonSet that
gives each node a bridge on its podCIDR, routes to the other nodes' podCIDRs, and SNAT for what leaves the
pod network. Nothing in it reaches past the kind network; the guard (kind.py) keeps it so.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from . import config as C
from . import images, tools
from .procs import say

KIND_VERSION = C.VERSIONS["KIND_VERSION"]
NODE_IMAGE = f"kindest/node:v{C.K8S_VERSION}"
NODE_ROOTFS_PACKAGES = [
    "systemd",
    "containerd",
    "runc",
    "containernetworking-plugins",
    "conntrack",
    "iptables",
    "nftables",
    "iproute2",
    "ethtool",
    "util-linux",
    "mount",
    "kmod",
    "libseccomp2",
    "pigz",
    "bash",
    "ca-certificates",
    "procps",
    "jq",
]
# kube-proxy and the pod network program the node's netfilter: they need iptables and nft in their image.
NET_ROOTFS_PACKAGES = ["iptables", "nftables", "iproute2", "conntrack", "kmod", "procps"]
CNI_IMAGE = "daemonpool/kind-cni:1"
# What kubeadm v1.36 asks for (`kubeadm config images list`), checked against it at build time.
ETCD_IMAGE = f"registry.k8s.io/etcd:{C.VERSIONS['KIND_ETCD_VERSION']}-0"
COREDNS_IMAGE = f"registry.k8s.io/coredns/coredns:v{C.VERSIONS['KIND_COREDNS_VERSION']}"
PAUSE_IMAGE = f"registry.k8s.io/pause:{C.VERSIONS['KIND_PAUSE_VERSION']}"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


TEMPLATES = C.HACK / "localcluster" / "templates" / "kind"


def template(name: str) -> str:
    """A file of the node image, from templates/kind/ (each says there why it differs from kind's)."""
    return (TEMPLATES / name).read_text().replace("@CNI_IMAGE@", CNI_IMAGE)


def kind_module() -> pathlib.Path:
    return tools.module_dir("sigs.k8s.io/kind", KIND_VERSION)


def containerd_config() -> str:
    """kind's own containerd config, with what this machine needs: no fuse-overlayfs proxy (rootless only),
    the pause image kubeadm names, and restrict_oom_score_adj (runc cannot lower oom_score_adj here)."""
    text = (kind_module() / "images/base/files/etc/containerd/config.toml").read_text()
    start = text.index("[proxy_plugins]")
    end = text.index("[plugins.")
    text = text[:start] + text[end:]
    text = text.replace('sandbox_image = "registry.k8s.io/pause:3.10"', f'sandbox_image = "{PAUSE_IMAGE}"')
    text = text.replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
    assert PAUSE_IMAGE in text and "restrict_oom_score_adj = true" in text, "kind's containerd config changed"
    return text


def _rootfs(name: str, packages: list[str]) -> pathlib.Path:
    out = C.IMAGES / f"kind-{name}-rootfs-bookworm.tar"
    key = ",".join(packages)
    stamp = out.with_suffix(".packages")
    if not (out.exists() and stamp.exists() and stamp.read_text() == key):
        images.debootstrap_tar(out, packages, f"kind {name}")
        stamp.write_text(key)
    return out


def _docker_import(tar: pathlib.Path, tag: str) -> None:
    if images.docker("image", "inspect", tag, check=False).returncode != 0:
        images.docker(
            "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", tar, tag
        )


def _etcd() -> pathlib.Path:
    """etcd's server from its Go module. Its go.mod replaces its sibling modules with local folders, which
    `go install pkg@version` refuses, so a small module of ours requires it (as build-k8s.sh does for k8s)."""
    version = C.VERSIONS["KIND_ETCD_VERSION"]
    target = C.TOOLS / f"etcd-{version}" / "etcd"
    if target.exists():
        return target
    say(f"building etcd v{version} from the Go module proxy (once, a minute or two)")
    t0 = time.monotonic()
    mod = C.TOOLS / f"etcd-{version}" / "mod"
    mod.mkdir(parents=True, exist_ok=True)
    (mod / "go.mod").write_text(
        f"module daemonpool.dev/etcdbuild\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v{version}\n"
    )
    (mod / "tools.go").write_text('package main\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n\nfunc main() {}\n')
    env = dict(os.environ, GOFLAGS="-mod=mod", CGO_ENABLED="0")
    subprocess.run(["go", "mod", "tidy"], cwd=mod, env=env, check=True, stdout=sys.stderr)
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(target) + ".tmp", "go.etcd.io/etcd/server/v3"],
        cwd=mod,
        env=env,
        check=True,
        stdout=sys.stderr,
    )
    os.replace(str(target) + ".tmp", target)
    say(f"etcd built in {time.monotonic() - t0:.0f}s")
    return target


def _recipe() -> str:
    """What the node image is made of; a change rebuilds it."""
    parts = [
        json.dumps({k: v for k, v in sorted(C.VERSIONS.items()) if k.startswith(("K8S", "KIND"))}),
        json.dumps(NODE_ROOTFS_PACKAGES + NET_ROOTFS_PACKAGES),
        *(template(p.name) for p in sorted(TEMPLATES.iterdir())),
        "recipe-1",
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _binary_image(
    ctx: pathlib.Path, tag: str, binary: pathlib.Path, base: str = "scratch", entrypoint: list | None = None
) -> None:
    d = ctx / tag.replace("/", "_").replace(":", "_")
    d.mkdir()
    shutil.copy2(binary, d / binary.name)
    lines = [f"FROM {base}", f"COPY {binary.name} /usr/local/bin/{binary.name}"]
    if base == "scratch":
        lines.append("ENV PATH=/usr/local/bin:/usr/bin:/bin")
    if entrypoint:
        lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
    (d / "Dockerfile").write_text("\n".join(lines) + "\n")
    images.docker("build", "--network", "none", "-t", tag, str(d), env=dict(os.environ, DOCKER_BUILDKIT="0"))


def node_image() -> str:
    """kindest/node:vK8S in the harness's dockerd; built when missing or when its recipe changed."""
    images.docker_up()
    recipe = _recipe()
    have = images.docker(
        "image", "inspect", "-f", '{{index .Config.Labels "dev.daemonpool.recipe"}}', NODE_IMAGE, check=False
    )
    if have.returncode == 0 and have.stdout.strip() == recipe:
        return NODE_IMAGE
    t0 = time.monotonic()
    say(f"building the kind node image {NODE_IMAGE} (several minutes, once)")
    bin_dir = C.BIN
    if not (bin_dir / "kubeadm").exists():
        subprocess.run(["bash", str(C.HACK / "build-k8s.sh")], check=True, stdout=sys.stderr)
    crictl = pathlib.Path(tools.ensure("crictl"))
    coredns = pathlib.Path(tools.ensure("coredns"))
    etcd = _etcd()
    _docker_import(_rootfs("node", NODE_ROOTFS_PACKAGES), "daemonpool/kind-node-base:bookworm")
    _docker_import(_rootfs("net", NET_ROOTFS_PACKAGES), "daemonpool/kind-net-base:bookworm")
    kmod = kind_module()
    with tempfile.TemporaryDirectory(dir=C.CACHE) as tmp:
        ctx = pathlib.Path(tmp)
        # The images the node holds, each under the name kubeadm (or our manifest) asks for.
        wanted = subprocess.run(
            [str(bin_dir / "kubeadm"), "config", "images", "list", "--kubernetes-version", f"v{C.K8S_VERSION}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        built = {f"registry.k8s.io/{c}:v{C.K8S_VERSION}" for c in CONTROL_PLANE + ("kube-proxy",)}
        built |= {ETCD_IMAGE, COREDNS_IMAGE, PAUSE_IMAGE}
        if set(wanted) - built:
            raise SystemExit(
                f"kubeadm v{C.K8S_VERSION} asks for {sorted(set(wanted) - built)}, which the node image does not build: "
                "set KIND_ETCD_VERSION, KIND_COREDNS_VERSION and KIND_PAUSE_VERSION in hack/versions.env to its list"
            )
        imgs = ctx / "images"
        imgs.mkdir()
        for c in CONTROL_PLANE:
            _binary_image(imgs, f"registry.k8s.io/{c}:v{C.K8S_VERSION}", bin_dir / c)
        _binary_image(
            imgs,
            f"registry.k8s.io/kube-proxy:v{C.K8S_VERSION}",
            bin_dir / "kube-proxy",
            "daemonpool/kind-net-base:bookworm",
        )
        _binary_image(imgs, ETCD_IMAGE, etcd)
        _binary_image(imgs, COREDNS_IMAGE, coredns, entrypoint=["/usr/local/bin/coredns"])
        cni = imgs / "cni"
        cni.mkdir()
        (cni / "cni.sh").write_text(template("cni.sh"))
        (cni / "cni.sh").chmod(0o755)
        shutil.copy2(bin_dir / "kubectl", cni / "kubectl")
        (cni / "Dockerfile").write_text(
            "FROM daemonpool/kind-net-base:bookworm\nCOPY kubectl /usr/local/bin/kubectl\nCOPY cni.sh /cni.sh\n"
        )
        images.docker(
            "build", "--network", "none", "-t", CNI_IMAGE, str(cni), env=dict(os.environ, DOCKER_BUILDKIT="0")
        )
        pause = images.pause_archive()  # an OCI layout; imported on its own and tagged with kubeadm's name
        tags = sorted(built - {PAUSE_IMAGE}) + [CNI_IMAGE]
        saved = ctx / "images.tar"
        images.docker("save", "-o", saved, *tags)
        # The node's files.
        node = ctx / "node"
        shutil.copytree(
            kmod / "images/base/files", node / "kind", ignore=shutil.ignore_patterns("LICENSES", "containerd")
        )
        for p in (node / "kind").rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        (node / "etc/containerd").mkdir(parents=True)
        (node / "etc/containerd/config.toml").write_text(containerd_config())
        (node / "etc/systemd/system").mkdir(parents=True)
        (node / "etc/systemd/system/containerd.service").write_text(template("containerd.service"))
        (node / "bin").mkdir()
        for b in ("kubeadm", "kubelet", "kubectl"):
            shutil.copy2(bin_dir / b, node / "bin" / b)
        shutil.copy2(crictl, node / "bin" / "crictl")
        (node / "manifests").mkdir()
        (node / "manifests/default-cni.yaml").write_text(template("default-cni.yaml"))
        (node / "manifests/default-storage.yaml").write_text(template("default-storage.yaml"))
        (node / "kind/kind/version").write_text(f"v{C.K8S_VERSION}\n")
        (node / "Dockerfile").write_text(template("Dockerfile"))
        images.docker(
            "build",
            "--network",
            "none",
            "-t",
            "daemonpool/kind-node-files:build",
            str(node),
            env=dict(os.environ, DOCKER_BUILDKIT="0"),
        )
        # Import the images into the node's containerd in a build container, then commit it (kind's way).
        name = "daemonpool-kind-build"
        images.docker("rm", "-f", "-v", name, check=False)
        images.docker(
            "run",
            "-d",
            "--privileged",
            "--network",
            "none",
            "--name",
            name,
            "--entrypoint",
            "sleep",
            "daemonpool/kind-node-files:build",
            "infinity",
        )
        try:
            images.docker(
                "exec", name, "sh", "-c", "mkdir -p /run/containerd && (containerd >/tmp/containerd.log 2>&1 &)"
            )
            for _ in range(100):
                if images.docker("exec", name, "ctr", "version", check=False).returncode == 0:
                    break
                time.sleep(0.2)
            imp = [
                "ctr",
                "--namespace=k8s.io",
                "images",
                "import",
                "--label=io.cri-containerd.pinned=pinned",
                "--all-platforms",
                "--no-unpack",
                "--digests",
                "-",
            ]
            for archive in (saved, pause):
                with open(archive, "rb") as f:
                    r = subprocess.run(
                        [images.DOCKER, "-H", f"unix://{images.DOCKER_SOCK}", "exec", "-i", name, *imp],
                        stdin=f,
                        capture_output=True,
                        text=True,
                    )
                if r.returncode:
                    raise RuntimeError(
                        f"importing {archive.name} into the node's containerd failed: {r.stderr[-2000:]}"
                    )
            images.docker(
                "exec", name, "ctr", "--namespace=k8s.io", "images", "tag", "--force", C.PAUSE_IMAGE, PAUSE_IMAGE
            )
            listed = images.docker("exec", name, "ctr", "--namespace=k8s.io", "images", "list", "-q").stdout.split()
            missing = [t for t in [*wanted, CNI_IMAGE] if t not in listed and f"docker.io/{t}" not in listed]
            if missing:
                raise RuntimeError(f"the node's containerd lacks {missing}; it has {listed}")
            images.docker("exec", name, "sh", "-c", "pkill containerd; sleep 1; rm -rf /run/containerd /tmp/*")
            images.docker(
                "commit",
                "--change",
                'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
                "--change",
                "CMD []",  # the build container ran `sleep infinity`; STOPSIGNAL stays the image's
                "--change",
                f"LABEL dev.daemonpool.recipe={recipe}",
                name,
                NODE_IMAGE,
            )
        finally:
            images.docker("rm", "-f", "-v", name, check=False)
            images.docker("rmi", "daemonpool/kind-node-files:build", check=False)
    size = images.image_size(NODE_IMAGE)
    say(f"{NODE_IMAGE} built in {time.monotonic() - t0:.0f}s ({size >> 20} MiB)")
    return NODE_IMAGE
