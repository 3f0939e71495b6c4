"""Config files of the components, from the templates in templates/ (string.Template, ${name} placeholders)."""

from __future__ import annotations

import json
import pathlib
import string

from . import config as C
from . import pki

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"


def template(name: str, **values) -> str:
    return string.Template((TEMPLATES / name).read_text()).substitute(values)


def write_configs() -> None:
    d = C.RUN
    for sub in ("etc", "cni/net.d", "containerd", "kubelet", "pod-logs", "audit"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    server = f"https://{C.GATEWAY}:{C.API_PORT}"
    C.KUBECONFIG.write_text(pki.kubeconfig("admin", server))
    for user in ("controller-manager", "scheduler", "kube-proxy", "kubelet"):
        (d / "etc" / f"{user}.kubeconfig").write_text(pki.kubeconfig(user, server))
    values = {
        "run": d,
        "pki": C.PKI,
        "sock": C.CONTAINERD_SOCK,
        "containerd_root": C.CONTAINERD_ROOT,
        "pause_image": C.PAUSE_IMAGE,
        "node_name": C.NODE_NAME,
        "pod_cidr": C.POD_CIDR,
    }
    (d / "etc" / "audit-policy.yaml").write_text(template("audit-policy.yaml"))
    (d / "containerd" / "config.toml").write_text(template("containerd.toml", **values))
    hosts = d / "containerd" / "certs.d" / C.REGISTRY_ADDR / "hosts.toml"
    hosts.parent.mkdir(parents=True, exist_ok=True)
    # The local registry (registry.py) speaks plain HTTP on the loopback only; containerd would try HTTPS first.
    hosts.write_text(
        f'server = "http://{C.REGISTRY_ADDR}"\n[host."http://{C.REGISTRY_ADDR}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    (d / "etc" / "kubelet.yaml").write_text(template("kubelet.yaml", **values))
    (d / "etc" / "kube-proxy.yaml").write_text(template("kube-proxy.yaml", **values))
    (d / "cni/net.d/10-daemonpool.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "daemonpool",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": C.BRIDGE,
                        "isGateway": True,
                        "ipMasq": False,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": C.POD_CIDR, "gateway": C.GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(d / "cni" / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            },
            indent=1,
        )
    )
