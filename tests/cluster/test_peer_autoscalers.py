"""What users run today, on a DaemonPool (issue 25): an HPA on CPU (metrics-server) and a KEDA ScaledObject
(its PostgreSQL scaler) both size a pool through its scale subresource, and the operator's idle-first
scale-in still decides *which* workers go when they lower it.

Both peers are the real ones, built from their Go modules (hack/local-cluster addons metrics-server keda);
on the local cluster this module installs them, on another cluster it needs them there already.
"""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import time

import psycopg  # a test dependency: never skipped
import pytest

from .test_autoscaled_pools import RESTRICTED, q, start_queue
from testkit.cluster import ROOT, daemonpool, live_pods, record, wait, worker_spec
from testkit.cluster import worker_state as state
from testkit.keda import scaled_object
from testkit.mail import outbox
from testkit.skips import unavailable

# The first test on a fresh machine builds KEDA and metrics-server (about 10 minutes on 2 cores, once).
pytestmark = pytest.mark.timeout(1800)
USAGE = pathlib.Path(ROOT, "docs", "usage.md")


def _addon(cluster, name: str, api: str) -> None:
    """Running on the cluster: installed here on the local cluster; on another, it must be there already."""
    if cluster.local:
        from localcluster import addons

        addons.install([name])
    elif cluster.get("apiservice", api, check=False) is None:
        unavailable(f"this cluster has no {api}: install {name} (or use the local cluster, which installs it)")


@pytest.fixture(scope="module")
def metrics_server(cluster):
    _addon(cluster, "metrics-server", "v1beta1.metrics.k8s.io")


@pytest.fixture(scope="module")
def keda(cluster):
    _addon(cluster, "keda", "v1beta1.external.metrics.k8s.io")


@pytest.fixture
def ns(cluster, operator):
    name = cluster.namespace("peers", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def documented_autoscale_line() -> list[str]:
    (line,) = [x for x in USAGE.read_text().splitlines() if x.startswith("kubectl autoscale daemonpool")]
    return shlex.split(line.split("#", 1)[0])


def test_the_documented_kubectl_autoscale_line_makes_a_working_cpu_utilization_hpa_on_the_pool(
    cluster, images, ns, metrics_server
):
    """kubectl 1.36 reads a unitless --cpu as millicores: the documented line must say a percentage, and the HPA
    it makes must be able to scale the pool and read its pods' CPU."""
    argv = documented_autoscale_line()
    assert argv[:3] == ["kubectl", "autoscale", "daemonpool"]
    name = argv[3]
    spec = worker_spec(images["example-worker"], peers=2)
    spec["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "20m"
    cluster.apply(
        {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )
    hpa = json.loads(cluster.kubectl(*argv[1:], "-n", ns, "--dry-run=client", "-o", "json").stdout)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "name": name,
    }
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    percent = int(re.search(r"--cpu=(\d+)%", " ".join(argv)).group(1))
    assert cpu[0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": percent}
    cluster.kubectl(*argv[1:], "-n", ns)

    def active():
        conds = {c["type"]: c["status"] for c in hpa_status(cluster, ns, name).get("conditions", [])}
        return conds.get("AbleToScale") == "True" and conds.get("ScalingActive") == "True"

    wait(active, 180, f"the HPA able to scale and reading CPU (status: {hpa_status(cluster, ns, name)})")


def hpa_status(cluster, ns, name) -> dict:
    return (cluster.get("hpa", name, ns=ns, check=False) or {}).get("status", {})


def replicas(cluster, ns, name) -> int | None:
    d = cluster.get("deployment", name, ns=ns, check=False)
    return None if not d else d["spec"].get("replicas")


def test_an_hpa_on_cpu_scales_a_pool_up_under_load_and_down_removing_idle_workers_first(
    cluster, images, ns, metrics_server
):
    url = start_queue(cluster, ns, images["example-worker"])
    name = "cpu"
    spec = worker_spec(images["example-worker"], peers=1, env=[{"name": "QUEUE_URL", "value": url}])
    spec["gracePeriodSeconds"] = 30
    spec["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m", "memory": "24Mi"},
        "limits": {"cpu": "200m", "memory": "64Mi"},
    }
    cluster.apply(
        {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }
    )
    wait(
        lambda: (p := live_pods(cluster, ns, f"daemonpool.dev/pool={name}")) and all(state(x) for x in p.values()),
        180,
        "1 worker answering",
    )
    # The documented line, with this test's numbers.
    argv = documented_autoscale_line()
    argv = [a for a in argv[1:] if not a.startswith(("--min", "--max"))]
    argv[2] = name
    cluster.kubectl(*argv, "--min=1", "--max=3", "-n", ns)
    # kubectl autoscale cannot set behavior: a short scale-down window (the default is 5 minutes).
    cluster.kubectl(
        "patch",
        "hpa",
        name,
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}}}),
    )
    # Computing items push the CPU up; one long *sleeping* item keeps a worker busy while the CPU falls, so
    # the HPA's scale-in meets one busy worker and idle ones.
    items = ["cpu:15"] * 2 + ["240"] + ["cpu:15"] * 10
    t0 = time.monotonic()
    q(url, "/put?items=" + ",".join(items), "POST")
    seen, last = [], 1
    long_worker = None
    while time.monotonic() - t0 < 600:
        r = replicas(cluster, ns, name) or 0
        if r != last:
            seen.append((round(time.monotonic() - t0, 1), r))
            last = r
        stats = q(url, "/stats")
        if long_worker is None:
            taken = [w for w, seconds in stats["inflight_items"] if seconds == 240.0]
            long_worker = taken[0] if taken else None
        if (
            seen
            and max(x for _, x in seen) > 1
            and r == 1
            and len(live_pods(cluster, ns, f"daemonpool.dev/pool={name}")) == 1
        ):
            break
        time.sleep(1)
    record("hpa_cpu_replica_changes", seen)
    assert seen and max(x for _, x in seen) >= 2, (
        f"the HPA never scaled up: {seen}; status {hpa_status(cluster, ns, name)}"
    )
    assert replicas(cluster, ns, name) == 1, f"the HPA never scaled back to 1: {seen}"
    left = live_pods(cluster, ns, f"daemonpool.dev/pool={name}")
    stats = q(url, "/stats")
    if stats["inflight"]:
        assert list(left) == [long_worker], f"the busy worker ({long_worker}) was removed; left: {list(left)}"
    assert stats["stopped_busy"] == [], f"workers got SIGTERM in the middle of an item: {stats['stopped_busy']}"
    events = [e["message"] for e in cluster.events(ns, name) if e["reason"] == "IdleFirst"]
    assert any("idle worker(s) go first" in m for m in events), events


def test_a_keda_scaled_object_scales_a_pool_from_zero_on_a_postgres_backlog_and_back_idle_first(
    cluster, images, ns, backing, keda
):
    pg, smtp = backing
    name = "mailer"
    dsn = pg.dsn(cluster.host_ip)
    cluster.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "outbox", "namespace": ns},
                "stringData": {"connection": dsn + "?sslmode=disable"},
            },
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "TriggerAuthentication",
                "metadata": {"name": "outbox", "namespace": ns},
                "spec": {"secretTargetRef": [{"parameter": "connection", "name": "outbox", "key": "connection"}]},
            },
        ]
    )
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        outbox.migrate(db)
        container = {
            "name": "mailer",
            "image": images["mailer"],
            "imagePullPolicy": "IfNotPresent",
            "env": [
                {"name": "MAILER_DSN", "value": dsn},
                {"name": "MAILER_SMTP", "value": f"{cluster.host_ip}:{smtp.port}"},
                {"name": "MAILER_RATE", "value": "10/s"},
                {"name": "MAILER_BATCH", "value": "5"},
            ],
            "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
            "securityContext": RESTRICTED,
        }
        spec = {"peers": 0, "timeoutSeconds": 10, "gracePeriodSeconds": 20}
        cluster.apply(daemonpool(name, ns, {**spec, "template": {"spec": {"containers": [container]}}}))
        # What a KEDA user writes, with the pool as the target (pollingInterval and cooldown short for a test).
        target = {"apiVersion": "daemonpool.dev/v1alpha1", "kind": "DaemonPool", "name": name}
        timings = {"polling_seconds": 5, "cooldown_seconds": 20, "scale_down_window": 10}
        cluster.apply(scaled_object(ns, name, target, outbox.BACKLOG_SQL, 40, "outbox", 3, **timings))
        wait(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (cluster.get("scaledobject", name, ns=ns) or {}).get("status", {}).get("conditions", [])
            ),
            120,
            "the ScaledObject Ready",
        )
        assert replicas(cluster, ns, name) == 0
        n = 300
        t0 = time.monotonic()
        outbox.enqueue_many(db, [(f"customer{i}@example.com", f"Your order {i}", "Thank you.") for i in range(n)])
        seen, last = [], 0
        while time.monotonic() - t0 < 420:
            r = replicas(cluster, ns, name) or 0
            if r != last:
                seen.append((round(time.monotonic() - t0, 1), r))
                last = r
            done = outbox.stats(db)["sent"] >= n
            if done and r == 0 and not live_pods(cluster, ns, f"daemonpool.dev/pool={name}"):
                break
            time.sleep(1)
        record("keda_on_pool_replica_changes", seen)
        stats = outbox.stats(db)
    assert seen and seen[0][1] >= 1, f"KEDA never woke the pool: {seen}"
    assert max(x for _, x in seen) >= 2, f"KEDA's HPA never grew the pool: {seen}"
    assert stats["sent"] == n, stats
    assert len(smtp.ids()) == len(set(smtp.ids())) == n, "a mail was lost or sent twice"
    assert replicas(cluster, ns, name) == 0, f"not back to zero: {seen}"
    events = [e["message"] for e in cluster.events(ns, name) if e["reason"] == "IdleFirst"]
    assert events, "the operator's idle-first pass did not run when KEDA lowered the pool"
