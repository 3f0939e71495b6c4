"""The model's refusals word for word, and its edges, against the mutants `hack/mutation` found surviving."""

import pytest

from daemonpool_operator import model
from daemonpool_operator.model import InvalidPool

from cases import pool

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
