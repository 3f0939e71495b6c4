"""The operator's per-pool series (operator/daemonpool_operator/metrics.py), read as Prometheus reads them:
the exposition text, parsed by prometheus-client's own parser."""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from daemonpool_operator import metrics


def _pool(ns, name, degraded=None, peers=3, ready=2, updated=3, restarts=4, autoscale=None):
    conds = [{"type": "Ready", "status": "False", "reason": "WorkersNotReady"}]
    conds.append(
        {"type": "Degraded", "status": "True", "reason": degraded}
        if degraded
        else {"type": "Degraded", "status": "False", "reason": "AsExpected"}
    )
    st = {"peers": peers, "readyPeers": ready, "updatedPeers": updated, "restarts": restarts, "conditions": conds}
    if autoscale:
        st["autoscale"] = autoscale
    return {"metadata": {"namespace": ns, "name": name}, "spec": {"peers": peers}, "status": st}


def _scrape(collector) -> dict:
    reg = CollectorRegistry()
    reg.register(collector)
    out: dict = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_per_pool_series_name_the_pool():
    """Before: daemonpool_pools had no namespace/name labels: no alert could say which pool."""
    pools = [_pool("shop", "mail", degraded="ImagePullFailed"), _pool("ops", "sync", autoscale={"desired": 7})]
    got = _scrape(metrics.PoolConditions(lambda: pools))
    cond = got["daemonpool_pool_condition"]
    key = (("condition", "Degraded"), ("name", "mail"), ("namespace", "shop"), ("reason", "ImagePullFailed"))
    assert cond[key] == 1
    assert cond[(("condition", "Degraded"), ("name", "sync"), ("namespace", "ops"), ("reason", "AsExpected"))] == 0
    w = got["daemonpool_pool_workers"]
    assert w[(("name", "mail"), ("namespace", "shop"), ("state", "desired"))] == 3
    assert w[(("name", "sync"), ("namespace", "ops"), ("state", "desired"))] == 7  # the autoscaler's count
    assert w[(("name", "mail"), ("namespace", "shop"), ("state", "ready"))] == 2
    assert w[(("name", "mail"), ("namespace", "shop"), ("state", "updated"))] == 3
    assert w[(("name", "mail"), ("namespace", "shop"), ("state", "existing"))] == 3
    assert got["daemonpool_pool_restarts"][(("name", "mail"), ("namespace", "shop"))] == 4
    agg = got["daemonpool_pools"]
    assert agg[(("condition", "Degraded"), ("reason", "ImagePullFailed"), ("status", "True"))] == 1
    assert agg[(("condition", "Ready"), ("reason", "WorkersNotReady"), ("status", "False"))] == 2


def test_only_the_leader_exports_the_pools():
    """Before: both replicas exported daemonpool_pools, so sum() counted every pool twice."""
    pools = [_pool("shop", "mail")]
    assert _scrape(metrics.PoolConditions(lambda: pools, leading=lambda: False)) == {}
    assert "daemonpool_pool_condition" in _scrape(metrics.PoolConditions(lambda: pools, leading=lambda: True))


def test_build_info():
    metrics.build_info("9.9.9", "1.45.0", "3.11.7")
    reg_text = generate_latest().decode()
    assert 'daemonpool_build_info{kopf="1.45.0",python="3.11.7",version="9.9.9"} 1.0' in reg_text
