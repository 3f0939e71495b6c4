"""Pools people really write, and pools an attacker would: a seeded generator over the CRD-valid space and a
hand list of hostile-but-admitted cases. Pure: builds dicts, talks to nothing.

Images that are not on the node use imagePullPolicy Never (or an invalid name), so nothing is ever pulled.
"""

from __future__ import annotations

import random

WORKER = "daemonpool/example-worker:dev"
BASE = "daemonpool/worker-base:dev"


def _pool(name, ns, containers, peers=1, **spec):
    pod = spec.pop("pod", {})
    meta = spec.pop("template_meta", {})
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "peers": peers,
            "timeoutSeconds": spec.pop("timeoutSeconds", 10),
            **spec,
            "template": {"metadata": meta, "spec": {"containers": containers, **pod}},
        },
    }


def _worker(image=WORKER, policy="IfNotPresent", **extra):
    c = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": policy,
        "env": [{"name": "WORK_SECONDS", "value": "1"}],
        "resources": {"requests": {"cpu": "5m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}},
    }
    c.update(extra)
    return c


def _quantity(rng, kind):
    if kind == "cpu":
        return rng.choice([0.001, 0.005, 0.01, "1m", "5m", "10m", 0.002])
    return rng.choice([16777216, 33554432, "16Mi", "32Mi", "33554432", 3.3e7])


def generated(ns: str, n: int = 300, seed: int = 1) -> list:
    """n CRD-valid pools, mostly peers 0 (the API and the builder are what is tested), some with real pods."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = f"g{i:03d}-" + "".join(
            rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(1, 41))
        )
        name = name[:47].rstrip("-")
        peers = 1 if rng.random() < 0.12 else 0
        timeout = rng.choice([3, 4, 10, 30, 120, 3600, 86400])
        spec = {"timeoutSeconds": timeout}
        if rng.random() < 0.4:
            spec["probePeriodSeconds"] = rng.choice([1, max(1, min(300, timeout - 2))])
        if rng.random() < 0.3:
            spec["startupTimeoutSeconds"] = rng.choice([5, 60, 3600])
        if rng.random() < 0.3:
            spec["gracePeriodSeconds"] = rng.choice([1, 30, 86400])
        r = rng.random()
        if r < 0.2:
            spec["strategy"] = {"type": "Recreate"}
        elif r < 0.5:
            surge = rng.choice([0, 1, 3, "25%", "100%", "0%"])
            unavail = rng.choice([1, 2, "50%", "10%"]) if surge in (0, "0%") else rng.choice([0, 1, "0%", "25%"])
            spec["strategy"] = {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail},
            }
        present = rng.random() < 0.5
        worker = _worker(WORKER if present else f"daemonpool/absent-{i}:v1", "IfNotPresent" if present else "Never")
        worker["resources"] = {
            "requests": {"cpu": _quantity(rng, "cpu"), "memory": _quantity(rng, "memory")},
            "limits": {"memory": rng.choice([67108864, "64Mi", "96Mi"])},
        }
        if rng.random() < 0.3:
            worker["env"].append(
                {
                    "name": rng.choice(["my.var-1", "lower", "X_Y", "with space", "semi;colon"]),
                    "value": rng.choice(["", "ü-ñ-✓", "a=b", "1"]),
                }
            )
        containers = [worker]
        for j in range(rng.choice([0, 0, 1, 2])):
            containers.append(
                {
                    "name": f"side{j}",
                    "image": f"daemonpool/absent-side-{j}:v1",
                    "imagePullPolicy": "Never",
                    "resources": {"requests": {"cpu": _quantity(rng, "cpu")}},
                }
            )
        pod = {}
        if rng.random() < 0.3:
            pod["initContainers"] = [
                {"name": "init", "image": BASE, "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c", "pass"]}
            ]
            if rng.random() < 0.5:  # a native sidecar
                pod["initContainers"][0].update(
                    restartPolicy="Always", command=["python3", "-c", "import time; time.sleep(3600)"]
                )
        if rng.random() < 0.3:
            pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": rng.choice([1048576, "1Mi", "2M"])}}]
            worker["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
        if rng.random() < 0.2:
            pod["tolerations"] = [{"key": "example.com/odd", "operator": "Exists", "effect": "NoSchedule"}]
        if rng.random() < 0.2:
            pod["affinity"] = {
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        }
                    ]
                }
            }
        meta = {}
        if rng.random() < 0.3:
            meta["annotations"] = {
                "note.example.com/text": rng.choice(["日本語", "emoji 🚀", "x" * 2000, "é\nnewline"])
            }
        if rng.random() < 0.2:
            meta["labels"] = {"team": rng.choice(["a", "b-c", "d.e"])}
        if len(containers) > 1 and rng.random() < 0.3:
            containers.reverse()
            spec["workerContainer"] = "worker"
        out.append(_pool(name, ns, containers, peers=peers, pod=pod, template_meta=meta, **spec))
    return out


def hand(ns: str, restricted: str, quota: str, limited: str) -> list:
    """(pool, what it probes) for the hostile-but-admitted cases; ``restricted`` enforces PodSecurity restricted,
    ``quota`` has a ResourceQuota of one pod, ``limited`` a LimitRange of 16Mi per container."""
    w = _worker
    cases = [
        (
            _pool(
                "numbers",
                ns,
                [
                    w(
                        resources={
                            "requests": {"cpu": 0.05, "memory": 33554432},
                            "limits": {"cpu": 1, "memory": 1073741824},
                        }
                    )
                ],
            ),
            "quantities as numbers",
        ),
        (
            _pool("cpu-one", ns, [w(resources={"requests": {"cpu": 0.01, "memory": 33554432}, "limits": {"cpu": 1}})]),
            "cpu: 1",
        ),
        (_pool("privileged", ns, [w(securityContext={"privileged": True})]), "privileged: true"),
        (_pool("sys-admin", ns, [w(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}})]), "CAP_SYS_ADMIN"),
        (_pool("as-root", ns, [w(securityContext={"runAsUser": 0})]), "runAsUser: 0"),
        (_pool("pod-root", ns, [w()], pod={"securityContext": {"runAsUser": 0}}), "pod runAsUser: 0"),
        (_pool("never-there", ns, [w(image="daemonpool/not-here:1", imagePullPolicy="Never")]), "absent image, Never"),
        (_pool("bad-image-name", ns, [w(image="UPPER/Case:Tag")]), "invalid image name"),
        (_pool("no-secret", ns, [w(envFrom=[{"secretRef": {"name": "missing"}}])]), "missing Secret in envFrom"),
        (
            _pool(
                "no-configmap",
                ns,
                [w(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}])],
            ),
            "missing ConfigMap key",
        ),
        (_pool("no-node", ns, [w()], pod={"nodeSelector": {"disk": "unobtainium"}}), "nodeSelector no node has"),
        (_pool("huge-cpu", ns, [w(resources={"requests": {"cpu": 1000}})]), "huge CPU request"),
        (_pool("huge-mem", ns, [w(resources={"requests": {"memory": "10Ti"}})]), "huge memory request"),
        (
            _pool(
                "affinity",
                ns,
                [w()],
                pod={
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [{"key": "nope", "operator": "Exists"}]}]
                            }
                        }
                    }
                },
            ),
            "required affinity nobody meets",
        ),
        (_pool("crash", ns, [w(command=["false"])]), "a worker that exits at once"),
        (
            _pool(
                "init-absent",
                ns,
                [w()],
                pod={"initContainers": [{"name": "i", "image": "daemonpool/no-init:1", "imagePullPolicy": "Never"}]},
            ),
            "absent init image",
        ),
        (
            _pool(
                "sidecar",
                ns,
                [w()],
                pod={
                    "initContainers": [
                        {
                            "name": "s",
                            "image": BASE,
                            "restartPolicy": "Always",
                            "command": ["python3", "-c", "import time; time.sleep(9999)"],
                        }
                    ]
                },
            ),
            "native sidecar",
        ),
        (
            _pool(
                "host-path",
                ns,
                [w(volumeMounts=[{"name": "h", "mountPath": "/h"}])],
                pod={"volumes": [{"name": "h", "hostPath": {"path": "/tmp", "type": "Directory"}}]},
            ),
            "hostPath",
        ),
        (_pool("host-pid", ns, [w()], pod={"hostPID": True}), "hostPID"),
        (_pool("no-sa", ns, [w()], pod={"serviceAccountName": "does-not-exist"}), "missing ServiceAccount"),
        (_pool("no-priority", ns, [w()], pod={"priorityClassName": "does-not-exist"}), "missing PriorityClass"),
        (_pool("no-runtime", ns, [w()], pod={"runtimeClassName": "does-not-exist"}), "missing RuntimeClass"),
        (_pool("pull-secret", ns, [w()], pod={"imagePullSecrets": [{"name": "absent"}]}), "missing imagePullSecret"),
        (_pool("port-range", ns, [w(ports=[{"containerPort": 70000}])]), "containerPort out of range"),
        (_pool("bad-mount", ns, [w(volumeMounts=[{"name": "nope", "mountPath": "/x"}])]), "mount of no volume"),
        (
            _pool("limit-lt-req", ns, [w(resources={"requests": {"memory": "64Mi"}, "limits": {"memory": "32Mi"}})]),
            "limit below request",
        ),
        (_pool("bad-quantity", ns, [w(resources={"requests": {"cpu": "lots"}})]), "not a quantity"),
        (
            _pool("bad-label", ns, [w()], template_meta={"labels": {"team": "not a valid value!"}}),
            "invalid label value",
        ),
        (
            _pool("field-ref", ns, [w(env=[{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nope"}}}])]),
            "bad fieldRef",
        ),
        (
            _pool(
                "dup-volume", ns, [w()], pod={"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}
            ),
            "duplicate volume",
        ),
        (_pool("x" * 47, ns, [w()], peers=0), "longest name"),
        (_pool("unicode", ns, [w()], template_meta={"annotations": {"ü": "x"}}), "a non-ASCII annotation key"),
        (_pool("unicode-value", ns, [w()], template_meta={"annotations": {"note": "日本語 🚀"}}), "unicode annotation"),
        (_pool("edge-fast", ns, [w()], timeoutSeconds=3, probePeriodSeconds=1), "shortest probe timings"),
        (_pool("edge-slow", ns, [w()], timeoutSeconds=302, probePeriodSeconds=300), "longest probe period"),
        (_pool("startup-1", ns, [w()], startupTimeoutSeconds=1), "startupTimeoutSeconds 1"),
        (_pool("recreate", ns, [w()], strategy={"type": "Recreate"}), "Recreate"),
        (
            _pool(
                "percent",
                ns,
                [w()],
                strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "0%"}},
            ),
            "percent strategy",
        ),
        (
            _pool(
                "second-worker",
                ns,
                [{"name": "side", "image": BASE, "command": ["python3", "-c", "import time; time.sleep(9999)"]}, w()],
                workerContainer="worker",
            ),
            "worker is the second container",
        ),
        (_pool("zero", ns, [w()], peers=0), "peers 0"),
        (_pool("oom", ns, [w(resources={"requests": {"memory": "4Mi"}, "limits": {"memory": "4Mi"}})]), "OOM loop"),
        (_pool("rs-privileged", restricted, [w(securityContext={"privileged": True})]), "PodSecurity: privileged"),
        (
            _pool(
                "rs-hostpath",
                restricted,
                [w(volumeMounts=[{"name": "h", "mountPath": "/h"}])],
                pod={"volumes": [{"name": "h", "hostPath": {"path": "/tmp"}}]},
            ),
            "PodSecurity: hostPath",
        ),
        (_pool("rs-hostpid", restricted, [w()], pod={"hostPID": True}), "PodSecurity: hostPID"),
        (_pool("rs-root", restricted, [w(securityContext={"runAsUser": 0})]), "PodSecurity: root"),
        (_pool("rs-ok", restricted, [w()]), "restricted namespace, compliant"),
        (_pool("quota", quota, [w()], peers=3), "a quota of one pod"),
        (_pool("limit-range", limited, [w()]), "LimitRange max below the request"),
    ]
    return cases


# Cases whose world keeps changing on its own (crash loops): their restarts are real changes.
CHURNING = {"crash", "oom", "startup-1"}
