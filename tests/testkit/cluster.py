"""What cluster tests use: a handle on the cluster under test, kubectl, waiting."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import subprocess
import sys
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]  # tests/testkit/cluster.py
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import config as C  # noqa: E402

from testkit.measure import record  # noqa: E402,F401  (re-exported for the cluster tests)


class Cluster:
    """The cluster the tests run against: the local one, or the one in KUBECONFIG."""

    def __init__(self, kubeconfig: str, local: bool, host_ip: str, audit_log: pathlib.Path | None = None):
        self.kubeconfig = kubeconfig
        self.local = local
        # The API server's audit log (who wrote what, when), where this machine can read it: the local cluster's,
        # or the tests' kind cluster's (testkit/kind.py); None on any other cluster.
        self._audit_log = C.RUN / "audit" / "audit.log" if local else audit_log
        # Where pods reach servers the tests start on this machine (PostgreSQL, SMTP).
        self.host_ip = host_ip
        self.kind = None  # a pytest-kind-ng KindCluster when the tests made one
        self.kubectl_bin = str(C.BIN / "kubectl") if (C.BIN / "kubectl").exists() else "kubectl"
        self.made_namespaces: list = []  # removed at the end of the session whatever the tests' outcome

    @property
    def audit_log(self) -> pathlib.Path | None:
        p = self._audit_log
        return p if p is not None and os.access(p, os.R_OK) else None

    def env(self) -> dict:
        return dict(os.environ, KUBECONFIG=self.kubeconfig, PATH=f"{C.BIN}:{C.TOOLS}:{os.environ.get('PATH', '')}")

    def kubectl(self, *args, check=True, input=None, timeout=120) -> subprocess.CompletedProcess:
        r = subprocess.run(
            [self.kubectl_bin, *map(str, args)],
            capture_output=True,
            text=True,
            env=self.env(),
            input=input,
            timeout=timeout,
        )
        if check and r.returncode:
            raise AssertionError(f"kubectl {' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}{r.stdout}")
        return r

    def get(self, *args, ns=None, check=True):
        a = list(args) + (["-n", ns] if ns else []) + ["-o", "json"]
        r = self.kubectl("get", *a, check=check)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def apply(self, obj: dict | list, ns=None, server_side=False, dry_run=False, check=True):
        docs = obj if isinstance(obj, list) else [obj]
        text = "\n---\n".join(json.dumps(d, ensure_ascii=False) for d in docs)  # YAML parsers refuse \\ud83d pairs
        args = ["apply", "-f", "-"] + (["-n", ns] if ns else [])
        if server_side:
            args += ["--server-side", "--force-conflicts", "--field-manager", "daemonpool-tests"]
        if dry_run:
            args += ["--dry-run=server"]
        return self.kubectl(*args, input=text, check=check)

    def namespace(self, prefix: str, labels: dict | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
        self.apply(ns)
        self.made_namespaces.append(name)
        # The ServiceAccount controller creates "default"; pods cannot be created before it.
        wait(
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            60,
            f"default ServiceAccount in {name}",
        )
        return name

    def events(self, ns: str, name: str | None = None) -> list:
        items = self.get("events", ns=ns)["items"]
        return [e for e in items if name is None or e["involvedObject"].get("name") == name]


def wait(check, timeout: float, what: str, interval: float = 0.5):
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f"; last error: {last}" if last else "")
    )


# -- what the operator tests share ---------------------------------------------------------------

WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def worker_spec(image, peers=2, timeout=10, work_seconds="0.5", **spec):
    """A pool's spec running the example worker: small requests, WORK_SECONDS per unit (0: idle until a job)."""
    env = spec.pop("env", [{"name": "WORK_SECONDS", "value": work_seconds}])
    container = {
        "name": "worker",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": {"requests": {"cpu": "5m", "memory": "24Mi"}, "limits": {"memory": "64Mi"}},
    }
    return {"peers": peers, "timeoutSeconds": timeout, **spec, "template": {"spec": {"containers": [container]}}}


def daemonpool(name: str, ns: str, spec: dict) -> dict:
    """A DaemonPool object around ``spec``."""
    return {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def worker_pool(name, ns, image, **kw):
    return daemonpool(name, ns, worker_spec(image, **kw))


def _is_write(ev: dict, username: str) -> bool:
    """An audit event of a write by ``username`` that is not a Lease renewal."""
    return (
        ev.get("stage") == "ResponseComplete"
        and ev["user"]["username"] == username
        and ev["verb"] in WRITES
        and "/leases/" not in ev["requestURI"]
    )


def _writes(cluster, username, since_line):
    """The audit events of the writes by ``username`` since ``since_line``, without Lease renewals."""
    for line in cluster.audit_log.read_text().splitlines()[since_line:]:
        ev = json.loads(line)
        if _is_write(ev, username):
            yield ev


def _shown(ev: dict) -> str:
    """A write as the tests show and filter it: "verb requestURI"."""
    return f"{ev['verb']} {ev['requestURI']}"


def _pod_of(ev: dict) -> str:
    """The pod that made a request (a ServiceAccount token names its pod), or "?"."""
    return (ev["user"].get("extra") or {}).get("authentication.kubernetes.io/pod-name", ["?"])[0]


def writes_by(cluster, username, since_line) -> list:
    """Writes in the audit log by ``username`` since ``since_line``, without the leader's Lease renewals."""
    return [_shown(ev) for ev in _writes(cluster, username, since_line)]


def wait_quiet(cluster, username, quiet=5.0, timeout=120.0, ignore=lambda write: False) -> float:
    """Wait until ``username`` has written nothing (Lease renewals and ``ignore``d writes, "verb URI" as
    writes_by shows them, aside) for ``quiet`` seconds: "the last status patches and Events have landed"
    as an observation. Returns the wait."""
    with open(cluster.audit_log, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos, t0 = f.tell(), time.monotonic()
        last = t0
        while True:
            time.sleep(0.5)
            f.seek(pos)
            chunk = f.read()
            cut = chunk.rfind(b"\n") + 1  # a line still being written is read next time
            pos += cut
            for line in chunk[:cut].splitlines():
                ev = json.loads(line)
                if _is_write(ev, username) and not ignore(_shown(ev)):
                    last = time.monotonic()
            now = time.monotonic()
            if now - last >= quiet:
                return round(now - t0, 1)
            if now - t0 > timeout:
                raise AssertionError(
                    f"{username} still writing after {timeout:.0f}s (last write {now - last:.1f}s ago)"
                )


# -- the operator's leader -------------------------------------------------------------------------

LEASE = "daemonpool-operator"


def holder(cluster, operator) -> str | None:
    lease = cluster.get("lease", LEASE, ns=operator.namespace, check=False)
    return (lease or {}).get("spec", {}).get("holderIdentity")


def leader_pod(cluster, operator) -> dict | None:
    h = holder(cluster, operator) or ""
    return next((p for p in operator.pods() if h.startswith(p["metadata"]["name"] + "_")), None)


def writer_pods(cluster, username: str, since_line: int) -> dict:
    """{pod name: [request URIs]} of the writes (not Lease renewals) made by ``username`` after ``since_line``
    of the audit log, by the pod that made them (a ServiceAccount token names its pod)."""
    writers: dict = {}
    for ev in _writes(cluster, username, since_line):
        writers.setdefault(_pod_of(ev), []).append(ev["requestURI"])
    return writers


def _when(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))


def writes_outside_terms(cluster, operator, since_line: int) -> list:
    """The operator's writes (after ``since_line``) made by a pod that did not hold the Lease both when the
    API server received the write and when it answered. Terms come from the Lease writes in the audit log
    (the policy logs this Lease's bodies): a successful create or update names the holder, or none
    after a release. Lease renewals themselves are not counted."""
    lease_uri = f"/namespaces/{operator.namespace}/leases/{LEASE}"
    terms: list = []  # (when, holder pod or None), in order
    writes = []
    for i, line in enumerate(cluster.audit_log.read_text().splitlines()):
        if operator.username not in line:  # most of the log: parse only the operator's lines
            continue
        ev = json.loads(line)
        if ev.get("stage") != "ResponseComplete" or ev["user"]["username"] != operator.username:
            continue
        pod = _pod_of(ev)
        if ev["verb"] in ("create", "update") and "/leases" in ev["requestURI"]:
            ref = ev.get("objectRef") or {}
            if ref.get("namespace") != operator.namespace or ev.get("responseStatus", {}).get("code", 0) >= 300:
                continue
            if ev["verb"] == "create":
                terms.append((_when(ev["stageTimestamp"]), pod))
            elif lease_uri in ev["requestURI"]:
                who = ((ev.get("requestObject") or {}).get("spec") or {}).get("holderIdentity")
                terms.append((_when(ev["stageTimestamp"]), who.split("_", 1)[0] if who else None))
        elif i >= since_line and _is_write(ev, operator.username):
            writes.append((pod, _when(ev["requestReceivedTimestamp"]), _when(ev["stageTimestamp"]), ev["requestURI"]))

    def holder_at(t):
        before = [who for when, who in terms if when <= t]
        return before[-1] if before else None

    return [
        f"{pod} {verb_uri} (holder {holder_at(t0)} when received, {holder_at(t1)} when answered)"
        for pod, t0, t1, verb_uri in writes
        if holder_at(t0) != pod or holder_at(t1) != pod
    ]


def kill_container(cluster, pod: dict) -> None:
    """SIGKILL a pod's first container from its node (PID 1 ignores a SIGKILL sent from inside): through the
    local cluster's containerd, or the kind node's own (`docker exec`); not on other clusters."""
    cid = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    kill = ["tasks", "kill", "-s", "SIGKILL", cid]
    if cluster.local:
        from localcluster.procs import ctr

        ctr(*kill, check=False, timeout=30)
    elif cluster.kind is not None:
        node = pod["spec"]["nodeName"]
        subprocess.run(["docker", "exec", node, "ctr", "-n", "k8s.io", *kill], capture_output=True, timeout=30)
    else:
        raise AssertionError("killing a container needs its node: the local cluster's, or a kind node")


def kill_leader(cluster, operator, leader: dict, i: int) -> None:
    """The i-th of a series of leader kills: its container SIGKILLed from the node (even i), or its pod deleted
    at once (odd i), the two ways a leader vanishes without stepping down."""
    if i % 2 == 0:
        kill_container(cluster, leader)
    else:
        name = leader["metadata"]["name"]
        cluster.kubectl("delete", "pod", "-n", operator.namespace, name, "--grace-period=0", "--force", check=False)


def operator_metric(cluster, operator, pod_name: str, name: str, labels: str = "") -> float:
    """The sum of one metric's samples (those whose labels contain ``labels``) from one replica's /metrics."""
    text = cluster.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{operator.namespace}/pods/{pod_name}:8081/proxy/metrics"
    ).stdout
    total = 0.0
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if (metric == name or metric.startswith(name + "{")) and labels in metric:
            total += float(value)
    return total


def reconciled_again(cluster, operator, ns: str, pool: str) -> None:
    """Make the operator look at a pool once more (an annotation is a pool event) and wait until its leader
    has reconciled a pool since: "nothing happened" is then an observation, not a sleep."""
    leader = wait(lambda: leader_pod(cluster, operator), 60, "a leader")["metadata"]["name"]
    before = operator_metric(cluster, operator, leader, "daemonpool_reconciles_total", 'trigger="pool"')
    cluster.kubectl("annotate", "dp", pool, "-n", ns, f"test.daemonpool.dev/poke={uuid.uuid4().hex[:8]}", "--overwrite")
    wait(
        lambda: operator_metric(cluster, operator, leader, "daemonpool_reconciles_total", 'trigger="pool"') > before,
        60,
        f"the operator to reconcile {pool} again",
    )


def live_pods(cluster, ns: str, selector: str) -> dict:
    """{name: pod} of the pods matching ``selector`` that are not being deleted."""
    items = cluster.get("pods", "-l", selector, ns=ns)["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def worker_state(pod: dict, port: int = 9309) -> dict | None:
    """A worker's own ``GET /state`` (the runtime's answer), or None when it does not answer."""
    import json
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/state", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, KeyError, ValueError):
        return None
