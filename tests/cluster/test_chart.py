"""The Helm chart on a real cluster: lint, strict templates, least-privilege RBAC, upgrade, uninstall."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from .conftest import helm, install_operator
from testkit.cluster import ROOT, leader_pod, operator_metric, record, wait

pytestmark = pytest.mark.timeout(600)
CHART = ROOT / "helm" / "daemonpool-operator"

# What the operator's ServiceAccount may do beyond what every ServiceAccount may do.
# Widening the chart's RBAC fails this test; so does narrowing it.
EXPECTED_RBAC = {
    ("daemonpools.daemonpool.dev", ("get", "list", "patch", "watch")),
    ("daemonpools.daemonpool.dev/status", ("patch",)),
    ("deployments.apps", ("create", "get", "list", "patch", "watch")),
    ("pods", ("get", "list", "patch", "watch")),
    ("events", ("create",)),
    ("horizontalpodautoscalers.autoscaling", ("list",)),
    ("poddisruptionbudgets.policy", ("create", "delete", "get", "list", "patch")),
}


def test_helm_lint_strict(cluster):
    r = helm(cluster, "lint", "--strict", CHART)
    assert "0 chart(s) failed" in r.stdout


@pytest.mark.parametrize("values", sorted((CHART / "ci").glob("*-values.yaml")), ids=lambda p: p.name)
def test_templates_pass_strict_server_side_dry_run(cluster, operator, values):
    vals = yaml.safe_load(values.read_text()) or {}
    made = [ns for ns in vals.get("watchNamespaces", []) if cluster.get("namespace", ns, check=False) is None]
    try:
        for ns in made:
            cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        out = helm(cluster, "template", "dryrun", CHART, "-n", operator.namespace, "-f", values).stdout
        r = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=out)
        assert r.returncode == 0
    finally:
        for ns in made:  # only those this test made: a user's own team-a stays
            cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    # The leader's Lease Role, in the operator's namespace, is there either way.
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "Role"}
    leader_role = (operator.namespace, "dryrun-daemonpool-operator-leader")
    assert leader_role in roles
    if vals.get("watchNamespaces"):
        assert "ClusterRole" not in kinds and {ns for ns, _ in roles - {leader_role}} == set(vals["watchNamespaces"])
    else:
        assert "ClusterRole" in kinds and roles == {leader_role}


def test_mistyped_value_is_refused(cluster):
    r = helm(cluster, "template", "x", CHART, "--set", "imagee.tag=1", check=False)
    assert r.returncode != 0 and "imagee" in r.stderr


def _can_i(cluster, user, ns):
    out = cluster.kubectl("auth", "can-i", "--list", f"--as={user}", "-n", ns).stdout.splitlines()[1:]
    rules = set()
    for line in out:
        parts = line.split()
        if not parts or parts[0].startswith("/") or "[" not in line:
            continue
        verbs = line[line.rindex("[") + 1 : line.rindex("]")].split()
        rules.add((parts[0], tuple(sorted(verbs))))
    return rules


def test_the_lease_is_the_only_thing_granted_in_the_operators_namespace(cluster, operator):
    mine = _can_i(cluster, operator.username, operator.namespace)
    base = _can_i(cluster, f"system:serviceaccount:{operator.namespace}:default", operator.namespace)
    assert (mine - base) - EXPECTED_RBAC == {("leases.coordination.k8s.io", ("create", "get", "update"))}


def test_operator_rbac_is_exactly_what_it_uses(cluster, operator):
    ns = cluster.namespace("rbac")
    mine = _can_i(cluster, operator.username, ns)
    base = _can_i(cluster, f"system:serviceaccount:{ns}:default", ns)
    extra = mine - base
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
    assert extra == EXPECTED_RBAC, f"granted beyond the baseline: {sorted(extra)}"


def test_operator_runs_under_the_restricted_profile(cluster, operator):
    ns = cluster.get("namespace", operator.namespace)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pod = operator.pod()
    assert pod and pod["status"]["phase"] == "Running"
    ctx = pod["spec"]["containers"][0]["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]


def test_upgrade_keeps_pools_and_uninstall_leaves_them(cluster, operator, images):
    """Uninstalls the tests' operator and installs it again, in a finally: no order is assumed."""
    ns = cluster.namespace("chart", labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        _upgrade_and_uninstall(cluster, operator, images, ns)
    finally:
        if operator.pod() is None:
            install_operator(cluster, images)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def _upgrade_and_uninstall(cluster, operator, images, ns):
    cluster.apply(yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text()), ns=ns)

    def pool_ready():
        p = cluster.get("dp", "example", ns=ns)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", []))

    wait(pool_ready, 120, "the example pool Ready")
    dep = cluster.get("deployment", "example", ns=ns)
    pods_before = sorted(
        p["metadata"]["uid"] for p in cluster.get("pods", "-l", "daemonpool.dev/pool=example", ns=ns)["items"]
    )

    t0 = time.monotonic()
    install_operator(cluster, images, "--set", "logFormat=json", "--set", "resources.limits.memory=300Mi")
    wait(
        lambda: (
            (p := operator.pod())
            and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
            and p["spec"]["containers"][0]["resources"]["limits"]["memory"] == "300Mi"
        ),
        120,
        "the upgraded operator Ready",
    )
    upgrade_s = time.monotonic() - t0

    def json_logs():
        # Every replica's last lines; the new ones log JSON (an old one may still be going away).
        lines = [ln for ln in operator.logs().splitlines() if ln.startswith("{")]
        return bool(lines) and all(isinstance(json.loads(ln), dict) for ln in lines[-5:])

    wait(json_logs, 60, "JSON logs")

    def new_leader_caught_up():
        # The upgraded leader reconciles every pool it was told of when it starts leading; an empty queue
        # after that means it has had its chance to rewrite the Deployment.
        lp = leader_pod(cluster, operator)
        if lp is None or lp["spec"]["containers"][0]["resources"]["limits"]["memory"] != "300Mi":
            return False
        name = lp["metadata"]["name"]
        return (
            operator_metric(cluster, operator, name, "daemonpool_reconciles_total") >= 1
            and operator_metric(cluster, operator, name, "daemonpool_queue_depth") == 0
        )

    wait(new_leader_caught_up, 120, "the upgraded leader to reconcile every pool")
    after = cluster.get("deployment", "example", ns=ns)
    assert after["metadata"]["uid"] == dep["metadata"]["uid"]
    assert after["metadata"]["generation"] == dep["metadata"]["generation"], "the upgrade rewrote the pool's Deployment"
    assert (
        sorted(p["metadata"]["uid"] for p in cluster.get("pods", "-l", "daemonpool.dev/pool=example", ns=ns)["items"])
        == pods_before
    )
    assert pool_ready()

    helm(cluster, "uninstall", operator.release, "-n", operator.namespace, "--wait")
    wait(lambda: operator.pod() is None, 60, "the operator gone")
    assert cluster.get("crd", "daemonpools.daemonpool.dev", check=False), "Helm keeps CRDs on uninstall"
    assert cluster.get("dp", "example", ns=ns, check=False), "pools stay"
    assert cluster.get("deployment", "example", ns=ns, check=False), "their workers stay"

    t0 = time.monotonic()
    install_operator(cluster, images)
    record(
        "helm_seconds", {"install_to_ready": round(time.monotonic() - t0, 1), "upgrade_to_ready": round(upgrade_s, 1)}
    )
    wait(pool_ready, 120, "the pool Ready under the reinstalled operator")


def _render(cluster, *args) -> list:
    out = helm(cluster, "template", "t", CHART, "-n", "ns", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _one(docs, kind):
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_the_values_users_expect_do_what_they_say(cluster):
    """Before: nameOverride, image.digest, extraArgs, extraEnv, rbac.create, crds.* and the PDB and spread knobs
    were refused by the schema, and a user's affinity dropped the default anti-affinity."""
    docs = _render(cluster)
    crd = _one(docs, "CustomResourceDefinition")
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["spec"] == yaml.safe_load((ROOT / "crds" / "daemonpools.daemonpool.dev.yaml").read_text())["spec"]
    assert _one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    digest = "sha256:" + "0" * 64
    node_affinity = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}]}}  # fmt: skip
    docs = _render(
        cluster,
        "--set", "nameOverride=dpo", "--set", f"image.digest={digest}", "--set", "rbac.create=false",
        "--set", "crds.install=false", "--set", "podDisruptionBudget.minAvailable=50%",
        "--set-json", 'extraArgs=["--reconcile-threads=8"]',
        "--set-json", 'extraEnv=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]',
        "--set-json", f"affinity={json.dumps({'nodeAffinity': node_affinity})}",
        "--set-json", 'topologySpreadConstraints=[{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", '
        '"whenUnsatisfiable": "ScheduleAnyway"}]',
    )  # fmt: skip
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    dep = _one(docs, "Deployment")
    assert dep["metadata"]["name"] == "t-dpo"
    spec = dep["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == f"daemonpool/operator@{digest}"
    assert c["args"][-1] == "--reconcile-threads=8"
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in c["env"]
    selector = {"app.kubernetes.io/name": "dpo", "app.kubernetes.io/instance": "t"}
    assert dep["spec"]["selector"]["matchLabels"] == selector
    assert spec["affinity"]["nodeAffinity"] == node_affinity
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector  # the default, kept
    assert spec["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"] == selector
    assert _one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    # An affinity that says something about pods replaces the default one.
    own = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"x": "y"}}}]}}  # fmt: skip
    dep = _one(_render(cluster, "--set-json", f"affinity={json.dumps(own)}"), "Deployment")
    assert dep["spec"]["template"]["spec"]["affinity"] == own
    names = {
        d["metadata"]["name"]
        for d in _render(cluster, "--set", "fullnameOverride=ops")
        if d["kind"] != "CustomResourceDefinition"
    }
    assert all(n.startswith("ops") for n in names), names


def test_works_as_a_subchart_of_an_umbrella_chart(cluster, operator, tmp_path):
    """Before: Helm passes `global` to every subchart and the strict schema refused it."""
    umbrella = tmp_path / "platform"
    umbrella.mkdir()
    (umbrella / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "daemonpool-operator",
                        "version": yaml.safe_load((CHART / "Chart.yaml").read_text())["version"],
                        "repository": f"file://{CHART}",
                        "condition": "daemonpool-operator.enabled",
                    }
                ],
            }
        )
    )
    (umbrella / "values.yaml").write_text(
        yaml.safe_dump(
            {"global": {"imageRegistry": "registry.example.com"}, "daemonpool-operator": {"replicaCount": 1}}
        )
    )
    (umbrella / "templates").mkdir()
    (umbrella / "templates" / "configmap.yaml").write_text(  # the umbrella's own object, as real ones have
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-platform\ndata:\n"
        "  registry: {{ .Values.global.imageRegistry | quote }}\n"
    )
    helm(cluster, "dependency", "update", umbrella)
    helm(cluster, "lint", "--strict", umbrella)
    docs = [
        d for d in yaml.safe_load_all(helm(cluster, "template", "plat", umbrella, "-n", operator.namespace).stdout) if d
    ]
    dep = _one(docs, "Deployment")
    assert dep["metadata"]["name"] == "plat-daemonpool-operator" and dep["spec"]["replicas"] == 1
    # What it renders, the API server accepts.
    text = "\n---\n".join(json.dumps(d) for d in docs if d["kind"] != "CustomResourceDefinition")
    assert cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text).returncode == 0
    off = helm(cluster, "template", "plat", umbrella, "--set", "daemonpool-operator.enabled=false").stdout
    assert "kind: Deployment" not in off


def test_monitoring_objects_pass_prometheus_operators_own_crds(cluster, operator):
    """The ServiceMonitor, PodMonitor and PrometheusRule the chart renders, dry-run strictly against the CRDs
    from prometheus-operator's module (the CRDs are installed for this test and removed after)."""
    from localcluster import tools

    crds = tools.prometheus_operator_crds()
    names = [yaml.safe_load(p.read_text())["metadata"]["name"] for p in crds]
    had = {n for n in names if cluster.get("crd", n, check=False) is not None}
    try:
        for p in crds:
            cluster.kubectl("apply", "--server-side", "-f", p)
        for n in names:
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{n}", "--timeout=60s")
        docs = _render(
            cluster, "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
            "--set", "prometheusRule.enabled=true", "--set", "prometheusRule.labels.release=prom",
        )  # fmt: skip
        mon = [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
        assert sorted(d["kind"] for d in mon) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
        for d in mon:
            d["metadata"]["namespace"] = operator.namespace
        text = "\n---\n".join(json.dumps(d) for d in mon)
        r = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", "-", input=text, check=False)
        assert r.returncode == 0, r.stderr
        rule = _one(mon, "PrometheusRule")
        assert rule["metadata"]["labels"]["release"] == "prom"
        shipped = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
        assert rule["spec"] == shipped, "the PrometheusRule is the promtool-tested file, unchanged"
        assert _one(mon, "ServiceMonitor")["spec"]["endpoints"][0]["honorLabels"] is True
    finally:
        for n in names:
            if n not in had:
                cluster.kubectl("delete", "crd", n, "--wait=false", check=False)
