"""The model: invalid pools name the field and the fix; builders import no I/O."""

import ast
import pathlib

import pytest

from daemonpool_operator import model
from daemonpool_operator.model import InvalidPool, parse_pool

from cases import INVALID

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_pools_name_the_field_and_the_fix(case):
    _id, spec, name, needle = case
    obj = {"metadata": {"name": name}, "spec": spec}
    with pytest.raises(InvalidPool) as err:
        parse_pool(obj)
    assert needle in str(err.value), str(err.value)


def test_there_are_at_least_thirty_invalid_pools():
    assert len(INVALID) >= 30


def test_cel_rules_have_python_twins_or_model_checks():
    # Every CEL rule's message is produced by the model for the matching case above.
    messages = " ".join(r["message"] for r in model.CEL_RULES)
    for case in (
        "unknown-worker-container",
        "timeout-too-short-for-probes",
        "reserved-label",
        "strategy-recreate-with-rolling",
    ):
        _id, spec, name, _ = next(c for c in INVALID if c[0] == case)
        with pytest.raises(InvalidPool) as err:
            parse_pool({"metadata": {"name": name}, "spec": spec})
        assert str(err.value) in messages, case


# -- import boundaries ---------------------------------------------------------------


@pytest.mark.parametrize("module", ["model.py", "desired.py", "status.py", "crd.py"])
def test_builders_import_no_io(module):
    tree = ast.parse((ROOT / "operator" / "daemonpool_operator" / module).read_text())
    mods = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    assert not mods & {"kopf", "kubernetes", "requests", "urllib3", "aiohttp", "socket", "subprocess"}, mods
