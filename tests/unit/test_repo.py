"""Facts written in more than one place agree: versions, image lists, pins."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _versions():
    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", (ROOT / "hack" / "versions.env").read_text(), re.M))


def test_kind_node_image_follows_versions_env():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert {n["image"] for n in cfg["nodes"]} == {f"kindest/node:v{_versions()['K8S_VERSION']}"}


def test_hack_readme_exists_where_it_is_cited():
    for cited_in in ("hack/versions.env", "hack/localcluster/__init__.py"):
        assert "hack/README.md" in (ROOT / cited_in).read_text()
    assert (ROOT / "hack" / "README.md").is_file()


def test_no_module_is_too_long_to_read():
    """~400 lines: past that a module mixes concerns (the harness's cluster.py was 569)."""
    long = {
        str(p.relative_to(ROOT)): n
        for p in list(ROOT.glob("operator/**/*.py"))
        + list(ROOT.glob("worker_runtime/*.py"))
        + list(ROOT.glob("hack/**/*.py"))
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}


def test_chart_values_table_and_schema_follow_values_yaml():
    """One source, values.yaml: its comments make the README's table; the schema has exactly its keys."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chart_docs", ROOT / "hack" / "chart_docs.py")
    chart_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chart_docs)
    assert chart_docs.problems() == []


def test_one_version_for_the_package_the_images_and_the_chart():
    """worker_runtime.__version__ is the version (pyproject.toml reads it); the chart says the same."""
    import worker_runtime

    chart = yaml.safe_load((ROOT / "helm" / "daemonpool-operator" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == worker_runtime.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "worker_runtime.__version__"' in pyproject
    assert not re.search(r'^version = "', pyproject, re.M), "a second version in pyproject.toml"
    for page in ("README.md", "docs/operations.md"):
        shown = set(re.findall(r"--version (\S+)", (ROOT / page).read_text()))
        assert shown == {worker_runtime.__version__}, f"{page} installs {shown}"


def test_the_previous_release_chart_is_the_one_before_this_version():
    """tests/cluster/test_release.py upgrades from it; a new release moves it along (hack/README.md says how)."""
    import tarfile

    import worker_runtime

    (old,) = (ROOT / "tests" / "cluster" / "data").glob("daemonpool-operator-*.tgz")
    with tarfile.open(old) as t:
        chart = yaml.safe_load(t.extractfile("daemonpool-operator/Chart.yaml"))
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(chart["version"]) < as_tuple(worker_runtime.__version__)
    assert old.name == f"daemonpool-operator-{chart['version']}.tgz"


def test_crd_command_checks_every_copy(tmp_path):
    from daemonpool_operator import crd

    stale = tmp_path / "stale.yaml"
    stale.write_text("old")
    assert crd.main(["--check", str(stale)]) == 1
    assert crd.main(["--check"]) == 0, "crds/ and the chart's copy are current"


def test_each_tier_and_the_helpers_are_packages():
    """Two test_x.py in two tiers stopped the whole run at collection ("import file mismatch"), as
    tests/cluster/test_autoscale.py beside tests/unit/test_autoscale.py did: as packages (unit.test_x,
    process.test_x) they cannot, and the shared helpers are one package (testkit), not loose modules."""
    for folder in ("unit", "process", "cluster", "testkit"):
        assert (ROOT / "tests" / folder / "__init__.py").is_file(), f"tests/{folder} is not a package"
    loose = sorted(p.name for p in (ROOT / "tests").glob("*.py") if p.name != "conftest.py")
    assert loose == [], f"helpers belong in tests/testkit/: {loose}"
    for tier in ("unit", "process", "cluster"):
        helpers = [
            p.name for p in (ROOT / "tests" / tier).glob("*.py") if not p.name.startswith(("test_", "conftest", "__"))
        ]
        assert helpers in ([], ["worker_prog.py"]), f"helpers belong in tests/testkit/: {tier}/{helpers}"


# Source modules with logic that have no test module of their own name, and where they are tested instead.
TESTED_ELSEWHERE = {
    "daemonpool_operator/apierrors.py": "unit/test_kube.py (the API's answers as our errors, Retry-After)",
    "daemonpool_operator/cli.py": "unit/test_config.py (flags over the environment over defaults)",
    "daemonpool_operator/handlers.py": "unit/test_controller.py (the kopf glue calls the controller)",
    "daemonpool_operator/idlefirst.py": "unit/test_controller.py (idle-first scale-in through a reconcile)",
    "daemonpool_operator/model_autoscale.py": "unit/test_autoscale.py (spec.autoscale with its decisions)",
    "daemonpool_operator/model_policies.py": "unit/test_model.py (strategy, recycle and disruption in a spec)",
    "worker_runtime/_core.py": "unit/test_daemon.py (Daemon's own steps)",
    "worker_runtime/_files.py": "unit/test_daemon.py, unit/test_probe.py (the files the probes read)",
    "worker_runtime/_notify.py": "unit/test_http.py (sd_notify over a real AF_UNIX socket)",
    "worker_runtime/_run.py": "process/test_run_modes.py (worker-runtime run, real processes)",
    "worker_runtime/_signals.py": "unit/test_items.py, process/test_slots_and_signals.py",
    "worker_runtime/_slots.py": "process/test_slots_and_signals.py (50 processes racing for 3 slots)",
    "worker_runtime/_waits.py": "unit/test_items.py (waits a stop ends at once)",
    "worker_runtime/cli.py": "process/test_probes_and_cli.py",
    "worker_runtime/httpserver.py": "unit/test_http.py, unit/test_workers.py (hostile clients)",
}
NO_LOGIC = {"__init__.py", "__main__.py", "settings.py"}  # re-exports, an entry point, constants


def test_each_source_module_with_logic_has_its_test_module():
    """One test module per source module with logic, named for it (test_cache.py for cache.py), or a line
    above saying where it is tested; a listed place must exist, and a module that gains its own test module
    leaves the list."""
    tests = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    missing, stale = [], []
    for src in sorted([*(ROOT / "operator").glob("daemonpool_operator/*.py"), *ROOT.glob("worker_runtime/*.py")]):
        rel = str(src.relative_to(ROOT)).removeprefix("operator/")
        if src.name in NO_LOGIC:
            continue
        own = f"test_{src.stem.lstrip('_')}.py"
        if own in tests:
            if rel in TESTED_ELSEWHERE:
                stale.append(rel)
        elif rel not in TESTED_ELSEWHERE:
            missing.append(rel)
    assert missing == [], f"no tests/*/test_<module>.py and no line in TESTED_ELSEWHERE: {missing}"
    assert stale == [], f"these have their own test module now; drop their TESTED_ELSEWHERE line: {stale}"
    for rel, where in TESTED_ELSEWHERE.items():
        for place in where.split(" (")[0].split(", "):
            assert (ROOT / "tests" / place).is_file(), f"{rel}: {place} does not exist"
