"""The postgres backlog source (operator/daemonpool_operator/sources.py) against a real PostgreSQL: one number,
read-only, bounded in time, and None (never an exception) for anything else."""

from __future__ import annotations

import time

import psycopg  # noqa: E402
import pytest

from daemonpool_operator import sources  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def jobs(pg):
    """42 pending jobs for the queries to count."""
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        db.execute("CREATE TABLE IF NOT EXISTS jobs (id serial PRIMARY KEY, state text)")
        db.execute("TRUNCATE jobs")
        db.execute("INSERT INTO jobs (state) SELECT 'pending' FROM generate_series(1, 42)")


def test_the_count_a_query_returns(pg):
    assert sources.postgres_count(pg.dsn(), "SELECT count(*) FROM jobs WHERE state = 'pending'") == 42
    assert sources.postgres_count(pg.dsn(), "SELECT 7::numeric") == 7


def test_a_query_that_writes_is_refused_by_the_read_only_session(pg):
    assert sources.postgres_count(pg.dsn(), "DELETE FROM jobs RETURNING 1") is None
    with psycopg.connect(pg.dsn(), autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 42


def test_a_slow_query_ends_at_the_statement_timeout(pg):
    t0 = time.monotonic()
    assert sources.postgres_count(pg.dsn(), "SELECT count(*) FROM jobs, pg_sleep(10)") is None
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    "query", ["SELECT true", "SELECT 'many'", "SELECT -1", "SELECT 1.5", "SELECT NULL", "SELECT FROM jobs WHERE false"]
)
def test_anything_but_one_whole_number_is_unknown(pg, query):
    assert sources.postgres_count(pg.dsn(), query) is None


def test_an_unreachable_database_is_unknown_within_the_connect_timeout():
    t0 = time.monotonic()
    assert sources.postgres_count("postgresql://nobody@127.0.0.1:1/none", "SELECT 1") is None
    assert time.monotonic() - t0 < sources.CONNECT_TIMEOUT + 2
