"""The model (operator/daemonpool_operator/model.py): invalid pools name the field and the fix, its refusals word
for word and its edges (written against the mutants `hack/mutation` found surviving), builders import no I/O."""

import ast
import pathlib

import pytest

from daemonpool_operator import model
from daemonpool_operator.model import InvalidPool, parse_pool

from testkit.cases import INVALID, pool

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


BOTH_ZERO = (
    "spec.strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0 (no rollout could progress); "
    "set maxSurge to 1"
)


def refusal(spec) -> str:
    with pytest.raises(InvalidPool) as e:
        model.parse_spec(spec)
    return str(e.value)


def with_strategy(**ru) -> dict:
    return {**pool()["spec"], "strategy": {"rollingUpdate": ru}}


@pytest.mark.parametrize("surge, unavailable", [(0, 0), ("0", 0), (0, "0%"), ("0%", "0%"), ("0", "0")])
def test_both_zero_in_every_spelling_is_refused(surge, unavailable):
    assert refusal(with_strategy(maxSurge=surge, maxUnavailable=unavailable)) == BOTH_ZERO


@pytest.mark.parametrize("surge, unavailable", [(1, 0), (0, "1%"), ("00%", 1), ("25%", "0"), (0, 1)])
def test_one_non_zero_is_accepted(surge, unavailable):
    model.parse_spec(with_strategy(maxSurge=surge, maxUnavailable=unavailable))


def test_name_length_edge_and_words():
    model.check_name("a" * model.MAX_NAME_LENGTH)
    for bad in ("a" * (model.MAX_NAME_LENGTH + 1), "", "Upper", "-lead", "a_b"):
        with pytest.raises(InvalidPool) as e:
            model.check_name(bad)
        assert str(e.value) == (
            f"metadata.name {bad!r} must be a DNS label of at most 47 characters "
            "(lower case letters, digits, '-'); choose a shorter or simpler name"
        )


def test_a_pool_without_a_name_is_refused_by_name():
    with pytest.raises(InvalidPool) as e:
        model.parse_pool({"metadata": {}, "spec": pool()["spec"]})
    assert str(e.value).startswith("metadata.name '' must be a DNS label")
    meta, spec = model.parse_pool(pool())
    assert meta["name"] == "mail" and spec.peers == 1


def test_an_absent_spec_is_an_empty_one():
    assert refusal(None) == refusal({})
    assert "spec.template: Field required" in refusal(None)


def test_error_words():
    assert refusal({**pool()["spec"], "replicas": 3}) == (
        "spec.replicas: unknown field; check the spelling (see `kubectl explain daemonpool.spec`)"
    )
    assert refusal(with_strategy(maxSurge="abc")) == (
        "spec.strategy.rollingUpdate.maxSurge: must be a whole number or a percentage such as '25%'"
    )
    # Two errors: both said, once each, joined by "; "
    two = refusal({**pool()["spec"], "peers": -1, "replicas": 3})
    assert two == (
        "spec.peers: Input should be greater than or equal to 0; "
        "spec.replicas: unknown field; check the spelling (see `kubectl explain daemonpool.spec`)"
    )
    # A message that already names its field is not prefixed again.
    assert refusal(with_strategy(maxSurge=0, maxUnavailable=0)).count("spec.") == 1


def test_dump_is_json_ready():
    spec = model.parse_spec({**pool()["spec"], "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}})
    d = spec.dump()
    assert d["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}}
    assert "workerContainer" not in d, "no nulls"
    import json

    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(
    "recycle, field",
    [({"maxItems": 0}, "maxItems"), ({"maxRssMiB": 8}, "maxRssMiB"), ({"maxRSS": 5}, "maxRSS")],
)
def test_recycle_limits_are_checked_by_name(recycle, field):
    assert f"spec.recycle.{field}" in refusal(dict(pool()["spec"], recycle=recycle))
