"""The generated CRD on a real API server: it applies, it refuses bad pools with the field named, it explains."""

from __future__ import annotations

import json

import pytest
import yaml

from testkit.cases import INVALID  # the same table the model is tested with
from testkit.cluster import ROOT, wait

pytestmark = pytest.mark.timeout(300)
CRD = ROOT / "crds" / "daemonpools.daemonpool.dev.yaml"
# Refused by the model only: the schema allows each value, the pair makes no rollout possible.
MODEL_ONLY = {"strategy-both-zero"}


@pytest.fixture(scope="module")
def crd_ns(cluster, operator):
    # `operator` installs the chart, which installs the CRD from the chart's byte copy.
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/daemonpools.daemonpool.dev", "--timeout=60s")
    ns = cluster.namespace("crd")
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_crd_applies_with_server_side_dry_run(cluster, crd_ns):
    r = cluster.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", CRD)
    assert "serverside-applied" in r.stdout or "configured" in r.stdout or "unchanged" in r.stdout, r.stdout
    crd = cluster.get("crd", "daemonpools.daemonpool.dev")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"


@pytest.mark.parametrize("case", [c for c in INVALID if c[0] not in MODEL_ONLY], ids=lambda c: c[0])
def test_api_server_rejects_invalid_pool_naming_the_field(cluster, crd_ns, case):
    _id, spec, name, needle = case
    obj = {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": name if name != "ok" else _id, "namespace": crd_ns},
        "spec": spec,
    }
    r = cluster.kubectl("create", "-f", "-", "--dry-run=server", input=json.dumps(obj), check=False)
    assert r.returncode != 0, f"{_id} was accepted"
    assert needle in r.stderr, r.stderr


def test_model_only_cases_pass_the_api_server(cluster, crd_ns):
    # They reach the operator, which reports them as Degraded/InvalidSpec (tested in test_operator).
    for _id, spec, _name, _ in (c for c in INVALID if c[0] in MODEL_ONLY):
        obj = {
            "apiVersion": "daemonpool.dev/v1alpha1",
            "kind": "DaemonPool",
            "metadata": {"name": _id, "namespace": crd_ns},
            "spec": spec,
        }
        cluster.kubectl("create", "-f", "-", "--dry-run=server", input=json.dumps(obj))


def test_examples_are_accepted(cluster, crd_ns):
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "DaemonPool":
                cluster.kubectl("create", "-f", "-", "--dry-run=server", "-n", crd_ns, input=json.dumps(doc))


def test_kubectl_explain_prints_descriptions(cluster, crd_ns):
    out = cluster.kubectl("explain", "daemonpool.spec.peers").stdout
    assert "How many workers run" in out
    out = cluster.kubectl("explain", "dp.spec.timeoutSeconds").stdout
    assert "heartbeat is older than this many seconds" in out


def test_printer_columns(cluster, crd_ns, images):
    obj = {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": "cols", "namespace": crd_ns},
        "spec": {"peers": 0, "template": {"spec": {"containers": [{"name": "w", "image": images["example-worker"]}]}}},
    }
    cluster.apply(obj)
    header = cluster.kubectl("get", "dp", "-n", crd_ns).stdout.splitlines()[0].split()
    assert header == ["NAME", "PEERS", "DESIRED", "READY", "TIMEOUT", "STATUS", "PROBLEM", "AGE"]
    wide = cluster.kubectl("get", "dp", "-n", crd_ns, "-o", "wide").stdout.splitlines()[0].split()
    assert wide == [
        "NAME",
        "PEERS",
        "DESIRED",
        "READY",
        "TIMEOUT",
        "STATUS",
        "PROBLEM",
        "UP-TO-DATE",
        "RESTARTS",
        "AGE",
    ]


def _table(text: str) -> dict:
    """`kubectl get` output -> {name: {COLUMN: cell}}, cut at the header's column starts (cells may be blank)."""
    lines = text.splitlines()
    head = lines[0]
    starts = [i for i, ch in enumerate(head) if ch != " " and (i == 0 or head[i - 1] == " ")]
    names = head.split()
    rows = {}
    for line in lines[1:]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [len(line) + 1])]
        rows[cells[0]] = dict(zip(names, cells))
    return rows


def test_get_dp_shows_the_cause(cluster, crd_ns):
    """Before: a pool whose image cannot be pulled showed STATUS WorkersNotReady and nothing else."""
    obj = {
        "apiVersion": "daemonpool.dev/v1alpha1",
        "kind": "DaemonPool",
        "metadata": {"name": "no-image", "namespace": crd_ns},
        "spec": {
            "peers": 1,
            "template": {"spec": {"containers": [{"name": "w", "image": "daemonpool.local/never-built:1"}]}},
        },
    }
    cluster.apply(obj)
    got: dict = {}

    def shows():
        got.update(_table(cluster.kubectl("get", "dp", "-n", crd_ns, "-o", "wide").stdout).get("no-image", {}))
        return got.get("PROBLEM") == "ImagePullFailed"

    wait(shows, 120, "kubectl get dp shows PROBLEM ImagePullFailed")
    assert got["STATUS"] == "WorkersNotReady" and got["UP-TO-DATE"] == "1" and got["RESTARTS"] == "0", got
    conds = {c["type"]: c for c in cluster.get("dp", "no-image", ns=crd_ns)["status"]["conditions"]}
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("False", "ImagePullFailed")
    assert conds["Ready"]["message"] == "0/1 workers ready"  # once, not "0/1 workers ready; 0/1 workers ready"
