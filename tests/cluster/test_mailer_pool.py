"""A DaemonPool of mailers on the real cluster drains a real PostgreSQL outbox over real SMTP, through scaling and pod deletion."""

from __future__ import annotations

import time

import psycopg  # a test dependency: never skipped
import pytest

from testkit.cluster import ROOT, record, wait
from testkit.mail import fate, mailer_pool, outbox

pytestmark = pytest.mark.timeout(600)


def test_mailer_pool_drains_500_through_scale_and_pod_deletion(cluster, operator, images, backing):
    pg, smtp = backing
    n = 500
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        outbox.migrate(db)
        outbox.enqueue_many(db, [(f"customer{i}@example.com", f"Your order {i}", "Thank you.") for i in range(n)])
        ns = cluster.namespace("mailer", labels={"pod-security.kubernetes.io/enforce": "restricted"})
        smtp_at = f"{cluster.host_ip}:{smtp.port}"
        pool = mailer_pool("mailer", ns, images["mailer"], pg.dsn(cluster.host_ip), smtp_at, peers=3)
        t0 = time.monotonic()
        cluster.apply(pool)

        def sent_at_least(k):
            return lambda: outbox.stats(db)["sent"] >= k

        wait(sent_at_least(100), 180, "100 mails sent")
        cluster.kubectl("scale", "dp", "mailer", "--replicas=1", "-n", ns)
        wait(lambda: cluster.get("deployment", "mailer", ns=ns)["spec"]["replicas"] == 1, 30, "scaled to 1")
        wait(sent_at_least(200), 180, "200 mails sent")
        cluster.kubectl("scale", "dp", "mailer", "--replicas=3", "-n", ns)
        wait(sent_at_least(300), 180, "300 mails sent")
        pods = [
            p
            for p in cluster.get("pods", "-l", "daemonpool.dev/pool=mailer", ns=ns)["items"]
            if not p["metadata"].get("deletionTimestamp")
        ]
        cluster.kubectl("delete", "pod", pods[0]["metadata"]["name"], "-n", ns, "--wait=false")

        def drained():
            s = outbox.stats(db)
            return s["pending"] == 0 and s["sending"] == 0 and s

        stats = wait(drained, 300, "the outbox to drain")
        took = time.monotonic() - t0
        result = fate(db, smtp)
    record("mailer_pool", {**result, "lost": len(result["lost"]), "drain_seconds": round(took, 1), "stats": stats})
    assert result["messages"] == n
    assert result["lost"] == []
    assert result["dead"] == [], "no failure was injected: a dead message is a failure, not 'not lost'"
    assert stats["sent"] == n
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


def test_the_mailer_pool_sizes_itself_on_its_outbox_from_zero(cluster, operator, images, backing):
    """examples/mailer/pool.yaml's autoscaling (issue 24): at zero while the outbox is empty, woken by the due mail
    the operator counts in PostgreSQL (the DSN from the pool's Secret, read where the chart allows it), back to
    zero once it is sent; nothing lost, nothing sent twice."""
    import yaml

    from .conftest import install_operator

    pg, smtp = backing
    ns = cluster.namespace("mailer-auto", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    install_operator(cluster, images, "--set", f"autoscale.secretNamespaces={{{ns}}}")
    pool = yaml.safe_load((ROOT / "examples" / "mailer" / "pool.yaml").read_text())
    pool["metadata"]["namespace"] = ns
    spec = pool["spec"]
    spec["timeoutSeconds"], spec["gracePeriodSeconds"] = 6, 20
    spec["autoscale"].update(idleSeconds=3, stableSeconds=10, maxPeers=3)
    spec["autoscale"]["backlog"].update(itemsPerWorker=50, periodSeconds=1)
    c = spec["template"]["spec"]["containers"][0]
    c["image"] = images["mailer"]
    c["env"] = [
        {"name": "MAILER_SMTP", "value": f"{cluster.host_ip}:{smtp.port}"},
        {"name": "MAILER_RATE", "value": "50/s"},
        {"name": "MAILER_BATCH", "value": "5"},
    ]
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mailer", "namespace": ns},
            "stringData": {"MAILER_DSN": pg.dsn(cluster.host_ip)},
        }
    )
    n = 150
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        outbox.migrate(db)
        db.execute("TRUNCATE mailer_outbox RESTART IDENTITY")
        cluster.apply(pool)
        wait(
            lambda: (
                (cluster.get("deployment", "mailer", ns=ns, check=False) or {}).get("spec", {}).get("replicas") == 0
            ),
            60,
            "the pool at zero",
        )
        t0 = time.monotonic()
        outbox.enqueue_many(db, [(f"auto{i}@example.com", f"Order {i}", "Thanks.") for i in range(n)])
        woke = wait(
            lambda: (
                (cluster.get("deployment", "mailer", ns=ns)["spec"].get("replicas") or 0) > 0 and time.monotonic() - t0
            ),
            30,
            "woken by the outbox",
        )
        wait(lambda: outbox.stats(db)["sent"] == n, 240, f"{n} mails sent")
        drained = time.monotonic() - t0
        wait(lambda: cluster.get("deployment", "mailer", ns=ns)["spec"].get("replicas") == 0, 120, "back to zero")
    ids = smtp.ids()
    record("mailer_autoscaled", {"messages": n, "woken_s": round(woke, 1), "drained_s": round(drained, 1)})
    assert len(set(ids)) == n, "a mail was lost"
    assert len(ids) == n, "a mail was sent twice"
    status = cluster.get("daemonpool", "mailer", ns=ns)["status"]["autoscale"]
    assert status["desired"] == 0 and "backlog 0" in status["reason"]
    install_operator(cluster, images)  # the chart's values as every other test expects them
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
