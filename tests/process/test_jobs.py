"""The timed-jobs worker (examples/mailer/mailer/jobs.py; bench/autoscale.py's workload) with a real PostgreSQL
and real worker processes: every job done once, a SIGTERM mid-job finishes the job and is recorded, a SIGKILL
mid-job leaves it to be taken again after its lease (counted as interrupted)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from testkit.proc import ROOT, until

sys.path.insert(0, os.path.join(ROOT, "examples", "mailer"))
from mailer import jobs  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def db(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS jobs_t")
        conn.execute(jobs.schema("jobs_t"))
        yield conn


def worker(tmp_path, pg, name, **env):
    base = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(ROOT), os.path.join(ROOT, "examples", "mailer")]),
        JOBS_DSN=pg.dsn(),
        JOBS_TABLE="jobs_t",
        HOSTNAME=name,
        DAEMONPOOL_RUN_DIR=str(tmp_path / name),
        DAEMONPOOL_TIMEOUT_SECONDS="5",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "mailer", "jobs"],
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def rows(db):
    return db.execute(
        "SELECT id, worker, runs, done_at IS NOT NULL, sigterm_at IS NOT NULL FROM jobs_t ORDER BY id"
    ).fetchall()


def test_two_workers_do_every_job_once_and_the_backlog_counts_what_waits(tmp_path, pg, db):
    jobs.put(db, "jobs_t", [0.2] * 10)
    assert db.execute(jobs.backlog_sql("jobs_t")).fetchone()[0] == 10
    ws = [worker(tmp_path, pg, f"w{i}") for i in range(2)]
    try:
        until("10 jobs done", lambda: all(r[3] for r in rows(db)), 60)
    finally:
        for w in ws:
            w.send_signal(signal.SIGTERM)
        for w in ws:
            w.wait(20)
    done = rows(db)
    assert [r[2] for r in done] == [1] * 10, "a job ran twice"
    assert {r[1] for r in done} == {"w0", "w1"}, "both workers took jobs"
    assert not any(r[4] for r in done), "no stop came while busy"
    assert db.execute(jobs.backlog_sql("jobs_t")).fetchone()[0] == 0
    assert all(w.returncode == 0 for w in ws)


def test_a_sigterm_mid_job_finishes_the_job_and_is_recorded(tmp_path, pg, db):
    jobs.put(db, "jobs_t", [3])
    w = worker(tmp_path, pg, "w0")
    until("the job taken", lambda: db.execute(jobs.busy_sql("jobs_t")).fetchone()[0] == 1, 30)
    t0 = time.monotonic()
    w.send_signal(signal.SIGTERM)
    assert w.wait(20) == 0
    assert time.monotonic() - t0 > 1.5, "the worker exited before its job was done"
    (row,) = rows(db)
    assert row[2:] == (1, True, True), row  # once, done, the stop recorded


def test_a_sigkill_mid_job_leaves_it_to_be_taken_again_after_its_lease(tmp_path, pg, db):
    jobs.put(db, "jobs_t", [30])
    w = worker(tmp_path, pg, "w0")
    until("the job taken", lambda: db.execute(jobs.busy_sql("jobs_t")).fetchone()[0] == 1, 30)
    w.kill()
    w.wait(10)
    assert db.execute(jobs.backlog_sql("jobs_t")).fetchone()[0] == 0, "held by its lease"
    db.execute("UPDATE jobs_t SET lease_until = now() - interval '1 second', seconds = 0.2")  # the lease ran out
    w2 = worker(tmp_path, pg, "w1")
    try:
        until("the job done by another worker", lambda: rows(db)[0][3], 30)
    finally:
        w2.send_signal(signal.SIGTERM)
        w2.wait(20)
    (row,) = rows(db)
    assert row[1:4] == ("w1", 2, True), row  # started twice: interrupted once


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"JOBS_DSN": ""}, "JOBS_DSN is not set"),
        ({"JOBS_TABLE": "Jobs; DROP"}, "JOBS_TABLE='Jobs; DROP': a lowercase SQL name"),
        ({"JOBS_CPU_SHARE": "2"}, "JOBS_CPU_SHARE=2.0: a fraction from 0 to 1"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(tmp_path, pg, env, says):
    w = worker(tmp_path, pg, "w0", **env)
    out = w.communicate(timeout=30)[0].decode()
    assert w.returncode == 2 and says in out, out
