"""Facts written in more than one place agree: versions, image lists, pins."""

import pathlib
import re

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _versions():
    return dict(re.findall(r"^([A-Z0-9_]+)=(\S+)", (ROOT / "hack" / "versions.env").read_text(), re.M))


def test_kind_node_image_follows_versions_env():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["nodes"][0]["image"] == f"kindest/node:v{_versions()['K8S_VERSION']}"


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


def test_crd_command_checks_every_copy(tmp_path):
    from daemonpool_operator import crd

    stale = tmp_path / "stale.yaml"
    stale.write_text("old")
    assert crd.main(["--check", str(stale)]) == 1
    assert crd.main(["--check"]) == 0, "crds/ and the chart's copy are current"


def test_test_modules_have_unique_names_across_tiers():
    """The tiers share one rootdir and no packages: two test_x.py in two tiers stop the whole run at collection
    ("import file mismatch"), as tests/cluster/test_autoscale.py beside tests/unit/test_autoscale.py did."""
    names: dict = {}
    for p in (ROOT / "tests").rglob("test_*.py"):
        names.setdefault(p.name, []).append(str(p.relative_to(ROOT)))
    assert {n: ps for n, ps in names.items() if len(ps) > 1} == {}
