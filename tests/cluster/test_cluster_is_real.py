"""The cluster is real: probes restart containers, pods reach the API, PodSecurity admits or refuses."""

import pytest

from testkit.cluster import wait

pytestmark = pytest.mark.timeout(300)

RESTRICTED_CTX = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_CTX = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def script_container(images, script):
    """A restricted container of the worker base image running a Python ``script``."""
    return {
        "name": "c",
        "image": images["worker-base"],
        "imagePullPolicy": "IfNotPresent",
        "command": ["python3", "-c", script],
        "securityContext": CONTAINER_CTX,
    }


def test_node_is_ready_and_guard_keeps_pod_traffic_local(cluster):
    nodes = cluster.get("nodes")["items"]
    assert len(nodes) >= 1
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes)
    if cluster.local:
        import subprocess

        from localcluster import config as C

        rules = subprocess.run(["nft", "list", "table", "inet", C.GUARD_TABLE], capture_output=True, text=True).stdout
        assert f'iifname "{C.BRIDGE}" oifname != "{C.BRIDGE}"' in rules and "reject" in rules


def test_kubelet_restarts_a_container_whose_liveness_probe_fails(cluster, images):
    ns = cluster.namespace("liveness")
    # Touches a file for 4 s, then stops (but stays alive): only the probe can notice.
    script = (
        "import os, time, pathlib\n"
        "p = pathlib.Path('/work/alive')\n"
        "end = time.time() + 4\n"
        "while time.time() < end:\n    p.touch(); time.sleep(0.5)\n"
        "time.sleep(3600)\n"
    )
    probe = "import os, sys, time; sys.exit(time.time() - os.stat('/work/alive').st_mtime > 3)"
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "hangs", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "hangs"}},
            "template": {
                "metadata": {"labels": {"app": "hangs"}},
                "spec": {
                    "securityContext": RESTRICTED_CTX,
                    "terminationGracePeriodSeconds": 2,
                    "volumes": [{"name": "work", "emptyDir": {}}],
                    "containers": [
                        {
                            **script_container(images, script),
                            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
                            "livenessProbe": {
                                "exec": {"command": ["python3", "-c", probe]},
                                "periodSeconds": 2,
                                "failureThreshold": 2,
                                "initialDelaySeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    cluster.apply(dep)

    def restarted():
        pods = cluster.get("pods", "-l", "app=hangs", ns=ns)["items"]
        return pods and any(cs.get("restartCount", 0) >= 1 for cs in pods[0]["status"].get("containerStatuses", []))

    wait(restarted, 120, "the kubelet to restart the container")
    events = cluster.events(ns)
    assert any(e["reason"] == "Killing" and "failed liveness probe" in e["message"] for e in events), [
        (e["reason"], e["message"]) for e in events
    ]
    assert any(e["reason"] == "Unhealthy" and "Liveness probe failed" in e["message"] for e in events)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_pod_reaches_the_api_server_through_the_kubernetes_service(cluster, images):
    ns = cluster.namespace("apiaccess")
    script = (
        "import os, ssl, time, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "url = f\"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}/api\"\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "req = urllib.request.Request(url, headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})\n"
        "for i in range(30):\n"
        "    try:\n"
        "        r = urllib.request.urlopen(req, context=ctx, timeout=3); print('STATUS', r.status, url); break\n"
        "    except Exception as e:\n"
        "        print('retry', e); time.sleep(1)\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "caller", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": RESTRICTED_CTX,
            "containers": [script_container(images, script)],
        },
    }
    cluster.apply(pod)
    wait(
        lambda: cluster.get("pod", "caller", ns=ns)["status"].get("phase") in ("Succeeded", "Failed"),
        120,
        "the pod to finish",
    )
    logs = cluster.kubectl("logs", "caller", "-n", ns).stdout
    assert "STATUS 200" in logs, logs
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_restricted_pod_security_rejects_a_privileged_pod(cluster, images):
    ns = cluster.namespace("restricted", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    bad = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": images["worker-base"], "securityContext": {"runAsUser": 0}}]},
    }
    r = cluster.apply(bad, check=False)
    assert r.returncode != 0 and "violates PodSecurity" in r.stderr and "restricted" in r.stderr, r.stderr
    good = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ok", "namespace": ns},
        "spec": {
            "securityContext": RESTRICTED_CTX,
            "containers": [
                {
                    "name": "c",
                    "image": images["worker-base"],
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", "print('fine')"],
                    "securityContext": CONTAINER_CTX,
                }
            ],
            "restartPolicy": "Never",
        },
    }
    cluster.apply(good)
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
