"""Third-party validators on what users deploy: the chart as rendered (defaults and every ci/ values file) and
the Deployments the operator builds from the examples. Each runs for real, and only the exceptions below, each
with its reason, may fail; a new finding fails the test, and so does an exception nothing triggers any more.

- kubeconform -strict, against schemas made from this cluster's own OpenAPI (testkit/schemas.py);
- kube-score (built from its Go module), checkov and yamllint (from PyPI, in a venv of their own).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import venv

import pytest
import yaml

from .conftest import helm
from testkit import schemas
from testkit.cluster import ROOT, C

pytestmark = pytest.mark.timeout(900)
CHART = ROOT / "helm" / "daemonpool-operator"
NS = "daemonpool-system"
GROUPS = [
    "api/v1",
    "apis/apps/v1",
    "apis/rbac.authorization.k8s.io/v1",
    "apis/policy/v1",
    "apis/admissionregistration.k8s.io/v1",
    "apis/apiextensions.k8s.io/v1",
    "apis/networking.k8s.io/v1",
    "apis/daemonpool.dev/v1alpha1",
]
# Pinned like the Go tools: what these checks were clean with (documented exceptions aside).
PYPI = ["checkov==3.3.30", "yamllint==1.38.0"]

# (check, object kind/name) -> why it is accepted. "operator" is the chart's Deployment, "example" the one the
# operator builds from examples/pool.yaml.
KUBE_SCORE_EXCEPTIONS = {
    ("container-resources", "operator"): "no CPU limit on purpose: CFS throttling would stall Lease renewals",
    ("container-resources", "example"): "no CPU limit on purpose (the example); workers' limits are the template's",
    ("container-image-pull-policy", "operator"): "IfNotPresent: images loaded on nodes work; image.digest pins",
    ("container-image-pull-policy", "example"): "IfNotPresent: the example image is loaded, not pulled",
    ("pod-networkpolicy", "operator"): "networkPolicy.enabled renders one; off by default (needs an enforcing CNI)",
    ("pod-networkpolicy", "example"): "a pool's network policy is its owner's, like any workload's",
    ("pod-probes-identical", "operator"): "liveness and readiness are both kopf's /healthz: a standby is ready to lead",
    ("deployment-has-poddisruptionbudget", "example"): "a pool's PDB is opt-in (spec.disruption); the example has none",
    ("deployment-has-host-podantiaffinity", "example"): (
        "workers spread by a soft topology spread (desired.spread_over_nodes), which this check does not read"
    ),
}
CHECKOV_EXCEPTIONS = {
    ("CKV_K8S_11", "operator"): "no CPU limit on purpose: CFS throttling would stall Lease renewals",
    ("CKV_K8S_11", "example"): "no CPU limit on purpose (the example)",
    ("CKV_K8S_43", "operator"): "by tag by default; image.digest pulls by digest",
    ("CKV_K8S_43", "example"): "the example image is built locally and has no registry digest",
    ("CKV_K8S_15", "operator"): "IfNotPresent: images loaded on nodes work; image.digest pins",
    ("CKV_K8S_15", "example"): "IfNotPresent: the example image is loaded, not pulled",
    ("CKV_K8S_38", "operator"): "the operator talks to the API server: it needs its token",
    ("CKV2_K8S_6", "example"): "a pool's network policy is its owner's, like any workload's",
}


@pytest.fixture(scope="module")
def manifests(cluster, tmp_path_factory) -> dict[str, pathlib.Path]:
    """{label: file}: the chart rendered per values file, and the operator's Deployment per example pool."""
    from daemonpool_operator import desired

    out = tmp_path_factory.mktemp("manifests")
    files = {}
    for values in [None, *sorted((CHART / "ci").glob("*-values.yaml"))]:
        name = "chart-default" if values is None else f"chart-{values.stem}"
        args = ["template", "daemonpool-operator", CHART, "-n", NS] + (["-f", values] if values else [])
        docs = [d for d in yaml.safe_load_all(helm(cluster, *args).stdout) if d]
        files[name] = out / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump_all(docs, sort_keys=False))
    pool = yaml.safe_load((ROOT / "examples" / "pool.yaml").read_text())
    pool["metadata"].update(namespace="shop", uid="00000000-0000-0000-0000-000000000001")
    files["operator-built"] = out / "operator-built.yaml"
    files["operator-built"].write_text(yaml.safe_dump(desired.build_deployment(pool), sort_keys=False))
    return files


def _who(name: str) -> str:
    """An object as the exceptions name it, from a validator's name for it ("Deployment/apps/v1/shop/example")."""
    name = name.rsplit("/", 1)[-1]
    return "operator" if name == "daemonpool-operator" else name


def test_kubeconform_strict(cluster, manifests, tmp_path):
    from localcluster import tools

    n = schemas.write(cluster, tmp_path / "schemas", GROUPS)
    assert n > 50
    r = subprocess.run(
        [tools.ensure("kubeconform"), "-strict", "-summary", "-output", "json",
         "-schema-location", str(tmp_path / "schemas" / schemas.LOCATION),
         *manifests.values(), *(ROOT / "examples").glob("*.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(r.stdout)
    bad = [x for x in report["resources"] if x["status"] != "statusValid"]
    assert r.returncode == 0 and bad == [], bad
    assert report["summary"]["valid"] >= 20
    # The oracle is not asleep: a mistyped field is refused.
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(manifests["operator-built"].read_text().replace("containers:", "containerz:", 1))
    r = subprocess.run(
        [tools.ensure("kubeconform"), "-strict", "-schema-location", str(tmp_path / "schemas" / schemas.LOCATION),
         wrong], capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode != 0 and "containerz" in r.stdout


def test_kube_score(manifests):
    from localcluster import tools

    r = subprocess.run(
        [tools.ensure("kube-score"), "score", "--output-format", "json", *manifests.values()],
        capture_output=True, text=True,
    )  # fmt: skip
    found = set()
    for obj in json.loads(r.stdout):
        for check in obj["checks"]:
            if check["grade"] < 10 and not check.get("skipped"):  # 1 critical, 5 warning, 10 ok
                found.add((check["check"]["id"], _who(obj["object_name"])))
    assert found - set(KUBE_SCORE_EXCEPTIONS) == set(), "new kube-score findings"
    assert set(KUBE_SCORE_EXCEPTIONS) - found == set(), "exceptions nothing triggers any more: drop them"


@pytest.fixture(scope="module")
def pytools(tmp_path_factory) -> pathlib.Path:
    """checkov and yamllint in a venv of their own (checkov pins libraries the operator's venv does not want)."""
    cached = C.CACHE / "validators-venv"
    stamp = cached / ".pins"
    if not (stamp.exists() and stamp.read_text() == " ".join(PYPI)):
        venv.create(cached, with_pip=True, clear=True)
        subprocess.run([cached / "bin" / "pip", "install", "-q", *PYPI], check=True, timeout=900)
        stamp.write_text(" ".join(PYPI))
    return cached / "bin"


def test_checkov(manifests, pytools):
    r = subprocess.run(
        [pytools / "checkov", "--framework", "kubernetes", "--output", "json", "--quiet", "--compact",
         *[a for f in manifests.values() for a in ("-f", str(f))]],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    reports = json.loads(r.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    found = set()
    for rep in reports:
        for fail in rep.get("results", {}).get("failed_checks", []):
            name = fail["resource"].split(".")[2] if fail["resource"].count(".") >= 2 else fail["resource"]
            found.add((fail["check_id"], _who(name)))
    assert found - set(CHECKOV_EXCEPTIONS) == set(), "new checkov findings"
    assert set(CHECKOV_EXCEPTIONS) - found == set(), "exceptions nothing triggers any more: drop them"


def test_yamllint(manifests, pytools):
    """The chart's own YAML (values, Chart.yaml, the alerts), the examples, the CRD and what the chart renders."""
    config = ROOT / ".yamllint.yaml"
    targets = [CHART / "values.yaml", CHART / "Chart.yaml", CHART / "files", ROOT / "crds", ROOT / "examples",
               *manifests.values()]  # fmt: skip
    r = subprocess.run(
        [pytools / "yamllint", "-c", config, "-f", "parsable", *map(str, targets)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
