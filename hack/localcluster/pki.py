"""A throw-away PKI for the local cluster, made with the openssl command."""

import subprocess

from . import config as C


def _run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _cert(name, cn, org=None, sans=(), server=False, client=True, ca="ca"):
    d = C.PKI
    subj = f"/CN={cn}" + (f"/O={org}" if org else "")
    _run("genrsa", "-out", f"{name}.key", "2048", cwd=d)
    _run("req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr", cwd=d)
    usages = ",".join(u for u, on in (("serverAuth", server), ("clientAuth", client)) if on)
    ext = [
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usages}",
        "basicConstraints=critical,CA:FALSE",
    ]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    (d / f"{name}.ext").write_text("\n".join(ext) + "\n")
    _run(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.crt",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=d,
    )


def _ca(name, cn):
    _run("genrsa", "-out", f"{name}.key", "2048", cwd=C.PKI)
    _run(
        "req",
        "-x509",
        "-new",
        "-nodes",
        "-key",
        f"{name}.key",
        "-subj",
        f"/CN={cn}",
        "-days",
        "30",
        "-out",
        f"{name}.crt",
        cwd=C.PKI,
    )


def make():
    d = C.PKI
    d.mkdir(parents=True, exist_ok=True)
    _ca("ca", "daemonpool-local-ca")
    # The aggregation layer (metrics-server, KEDA's metrics API): the API server proxies to them with a
    # client certificate of a CA of its own, so no other client certificate can assert a user in headers.
    _ca("front-proxy-ca", "daemonpool-front-proxy-ca")
    _cert("front-proxy-client", "front-proxy-client", ca="front-proxy-ca")
    sans = [
        "IP:127.0.0.1",
        f"IP:{C.GATEWAY}",
        f"IP:{C.SERVICE_IP}",
        "DNS:localhost",
        f"DNS:{C.NODE_NAME}",
        "DNS:kubernetes",
        "DNS:kubernetes.default",
        "DNS:kubernetes.default.svc",
        "DNS:kubernetes.default.svc.cluster.local",
    ]
    _cert("apiserver", "kube-apiserver", sans=sans, server=True, client=False)
    _cert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", org="system:masters")
    _cert("admin", "daemonpool-admin", org="system:masters")
    _cert("controller-manager", "system:kube-controller-manager")
    _cert("scheduler", "system:kube-scheduler")
    _cert("kube-proxy", "system:kube-proxy")
    _cert("kubelet", f"system:node:{C.NODE_NAME}", org="system:nodes")
    _cert("kubelet-serving", C.NODE_NAME, sans=["IP:127.0.0.1", "DNS:localhost"], server=True, client=False)
    # metrics-server's serving certificate: the API server checks it against the Service's name.
    _cert("metrics-server", "metrics-server", sans=["DNS:metrics-server.kube-system.svc"], server=True, client=False)
    _run("genrsa", "-out", "sa.key", "2048", cwd=d)
    _run("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def kubeconfig(user: str, server: str) -> str:
    d = C.PKI
    return f"""apiVersion: v1
kind: Config
clusters:
- name: daemonpool-local
  cluster:
    certificate-authority: {d / "ca.crt"}
    server: {server}
users:
- name: {user}
  user:
    client-certificate: {d / (user + ".crt")}
    client-key: {d / (user + ".key")}
contexts:
- name: daemonpool-local
  context:
    cluster: daemonpool-local
    user: {user}
current-context: daemonpool-local
"""
