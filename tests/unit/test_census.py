"""The census of the pools' watch (operator/daemonpool_operator/census.py): when the API server and what the
watch delivered disagree, when that restarts the watches, and when it fails the health check."""

import pytest

from daemonpool_operator import census


@pytest.mark.parametrize(
    "listed, cached, why",
    [
        ((0, None), {}, None),
        ((2, ("ns", "a", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, None),
        ((2, ("ns", "a", "10")), {("ns", "a"): "12", ("ns", "b"): "3"}, None),  # the watch is ahead: fine
        ((3, ("ns", "a", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, "the API server has 3 pool(s), the watch"),
        ((1, None), {("ns", "a"): "1"}, None),  # count agrees, nothing to compare
        ((2, ("ns", "c", "10")), {("ns", "a"): "10", ("ns", "b"): "3"}, "pool ns/c exists, the watch never"),
        ((2, ("ns", "a", "11")), {("ns", "a"): "10", ("ns", "b"): "3"}, "pool ns/a is at resourceVersion 11"),
        ((1, ("ns", "a", "11")), {("ns", "a"): "opaque"}, "pool ns/a is at resourceVersion 11"),
    ],
)
def test_disagreement(listed, cached, why):
    got = census.disagreement(listed, cached)
    assert (got is None) if why is None else got.startswith(why)


def test_the_second_disagreement_in_a_row_restarts_the_watches_and_the_fifth_fails_health():
    restarts = []
    c = census.Census(lambda: restarts.append(1))
    stale, fine = (1, None), {}
    c.check(stale, fine)
    assert restarts == [] and c.health() is None, "one disagreement may be an event in flight"
    c.check((0, None), {})
    c.check(stale, fine)
    assert restarts == [], "agreement in between starts the count again"
    for _ in range(census.UNHEALTHY_CHECKS - 2):  # the 2nd .. (UNHEALTHY - 1)th in a row
        c.check(stale, fine)
        assert c.health() is None
    assert len(restarts) == census.UNHEALTHY_CHECKS - 2
    c.check(stale, fine)
    assert len(restarts) == census.UNHEALTHY_CHECKS - 1
    assert c.health().startswith(f"watches stale for {census.UNHEALTHY_CHECKS} checks despite restarts")
    c.check((0, None), {})
    assert c.health() is None


def test_an_opaque_version_counts_as_older_than_any_number():
    assert census._rv("12") == 12 and census._rv(None) == -1 and census._rv("x") == -1
    # a cached "0" against a listed opaque one: -1 < 0, no disagreement; the other way round, one
    assert census.disagreement((1, ("ns", "a", "opaque")), {("ns", "a"): "0"}) is None
    assert census.disagreement((1, ("ns", "a", "0")), {("ns", "a"): "opaque"}) == (
        "pool ns/a is at resourceVersion 0, the watch delivered opaque"
    )


def test_the_census_words_and_what_it_remembers(caplog):
    import logging

    c = census.Census()
    assert (c.disagreements, c.last, c.restart()) == (0, None, None)
    with caplog.at_level(logging.WARNING, logger="daemonpool"):
        c.check((1, None), {})
        assert c.last == "the API server has 1 pool(s), the watch delivered 0" and caplog.records == []
        c.check((2, None), {})
    assert [r.getMessage() for r in caplog.records] == [
        "the pools' watch looks stale (the API server has 2 pool(s), the watch delivered 0, at 2 checks in a row):"
        " restarting every watch"
    ]
    for _ in range(3):
        c.check((2, None), {})
    assert c.health() == (
        "watches stale for 5 checks despite restarts: the API server has 2 pool(s), the watch delivered 0"
    )
    c.check((0, None), {})
    assert (c.disagreements, c.last) == (0, None)
