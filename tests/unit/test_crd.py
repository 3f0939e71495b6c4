"""The generated CRD, the chart's copy and the examples: one schema source."""

import pathlib

import pytest
import yaml

from daemonpool_operator import crd, model
from daemonpool_operator.model import parse_pool

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- schema source of truth ---------------------------------------------------


def test_generated_crd_equals_the_committed_file():
    assert (ROOT / "crds" / crd.FILENAME).read_text() == crd.render(), "run: python -m daemonpool_operator.crd"


def test_chart_crd_is_a_byte_copy():
    """files/, not crds/: templates/crd.yaml renders it (crds.install, crds.keep); a crds/ folder would make Helm
    create the CRD a second time, outside the release."""
    chart = ROOT / "helm" / "daemonpool-operator"
    assert (chart / "files" / crd.FILENAME).read_bytes() == (ROOT / "crds" / crd.FILENAME).read_bytes()
    assert not (chart / "crds").exists()
    assert '.Files.Get "files/' + crd.FILENAME + '"' in (chart / "templates" / "crd.yaml").read_text()


def _walk(node, path="$"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")


def test_crd_schema_is_structural_and_described():
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "$defs" not in node and "title" not in node, path
    spec = schema["properties"]["spec"]
    for name, prop in spec["properties"].items():
        assert prop.get("description"), f"spec.{name} needs a description"
    assert spec["properties"]["peers"]["default"] == 1
    assert spec["properties"]["timeoutSeconds"]["default"] == 30
    v = crd.build_crd()["spec"]["versions"][0]
    assert v["subresources"]["scale"] == {
        "specReplicasPath": ".spec.peers",
        "statusReplicasPath": ".status.peers",
        "labelSelectorPath": ".status.selector",
    }
    cols = v["additionalPrinterColumns"]
    assert [c["name"] for c in cols if not c.get("priority")] == [
        "Peers",
        "Desired",
        "Ready",
        "Timeout",
        "Status",
        "Problem",
        "Age",
    ]
    assert [c["name"] for c in cols if c.get("priority") == 1] == ["Up-to-date", "Restarts"]  # -o wide
    status_fields = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for c in cols:
        if c["jsonPath"].startswith(".status.") and "[" not in c["jsonPath"]:
            first = c["jsonPath"].split(".")[2]
            assert first in status_fields, f"column {c['name']} points at a field the schema lacks"
    assert all("_py" not in r for r in spec["x-kubernetes-validations"])


def _examples():
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == model.KIND:
                yield path.relative_to(ROOT), doc


@pytest.mark.parametrize("path,doc", list(_examples()), ids=lambda x: str(x) if isinstance(x, pathlib.Path) else "")
def test_every_example_loads_and_dumps_back_unchanged(path, doc):
    meta, spec = parse_pool(doc)
    dumped = spec.dump()
    again = model.parse_spec(dumped).dump()
    assert again == dumped

    # Everything the user wrote survives (defaults may be added, nothing dropped or changed).
    def subset(a, b):
        if isinstance(a, dict):
            return all(k in b and subset(v, b[k]) for k, v in a.items())
        if isinstance(a, list):
            return len(a) == len(b) and all(subset(x, y) for x, y in zip(a, b))
        return a == b

    assert subset(doc["spec"], dumped), path


def test_examples_exist():
    assert any(True for _ in _examples())
