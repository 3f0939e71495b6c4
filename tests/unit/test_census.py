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
