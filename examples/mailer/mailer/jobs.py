"""Timed jobs in PostgreSQL: the workload bench/autoscale.py gives every autoscaler it compares (issue 25).

    JOBS_DSN=postgresql://... JOBS_TABLE=jobs_a python -m mailer jobs

A job is a number of seconds of work: the worker computes for ``JOBS_CPU_SHARE`` of it (default 0.1: an
I/O-bound worker that still shows on a CPU graph) and sleeps the rest, beating meanwhile. One job at a time,
claimed with ``FOR UPDATE SKIP LOCKED`` under a lease; a worker killed mid-job leaves it to be taken again
after the lease (``runs`` > 1: interrupted). A stop (SIGTERM) never cuts a job short: the worker finishes it,
records that the stop came while it was busy (``sigterm_at``), and exits.

The table is the queue and the record: when each job was put, taken and done, by whom, and how many times it
was started. ``BACKLOG`` is what every scaler is given as its query.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time

import psycopg

from worker_runtime import Daemon

log = logging.getLogger("jobs")
LEASE_SECONDS = 90  # longer than any job the bench puts (30 s) plus a grace period: only a dead worker's expires
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def table(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"JOBS_TABLE={name!r}: a lowercase SQL name (letters, digits, _), e.g. jobs_a")
    return name


def schema(t: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {t} ("
        " id bigserial PRIMARY KEY, seconds real NOT NULL, put_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
        " taken_at timestamptz, done_at timestamptz, worker text, runs integer NOT NULL DEFAULT 0,"
        " lease_until timestamptz, sigterm_at timestamptz)"
    )


def backlog_sql(t: str) -> str:
    """Jobs waiting: not done, and not held by a live lease."""
    return f"SELECT count(*) FROM {t} WHERE done_at IS NULL AND (lease_until IS NULL OR lease_until < now())"


def busy_sql(t: str) -> str:
    return f"SELECT count(*) FROM {t} WHERE done_at IS NULL AND lease_until >= now()"


def put(conn, t: str, seconds: list[float]) -> None:
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {t} (seconds) VALUES (%s)", [(s,) for s in seconds])


def claim(conn, t: str, worker: str):
    return conn.execute(
        f"UPDATE {t} SET taken_at = clock_timestamp(), worker = %s, runs = runs + 1,"
        f" lease_until = clock_timestamp() + interval '{LEASE_SECONDS} seconds'"
        f" WHERE id = (SELECT id FROM {t} WHERE done_at IS NULL AND (lease_until IS NULL OR lease_until < now())"
        " ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, seconds",
        (worker,),
    ).fetchone()


def finish(conn, t: str, job_id: int, worker: str, sigterm_at: float | None) -> None:
    conn.execute(
        f"UPDATE {t} SET done_at = clock_timestamp(), lease_until = NULL,"
        " sigterm_at = COALESCE(sigterm_at, to_timestamp(%s)) WHERE id = %s AND worker = %s",
        (sigterm_at, job_id, worker),
    )


def work(d: Daemon, seconds: float, cpu_share: float) -> float | None:
    """One job, whole: returns when a stop reached the worker during it (wall-clock seconds), else None."""
    sigterm_at = None
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        step = min(left, 0.5)
        until = time.monotonic() + step * cpu_share
        while time.monotonic() < until:
            sum(i * i for i in range(500))
        time.sleep(max(0.0, step * (1 - cpu_share)))
        if not d.heartbeat() and sigterm_at is None and d.stop_signal is not None:
            sigterm_at = time.time()
    return sigterm_at


def run(d: Daemon) -> int:
    dsn = os.environ.get("JOBS_DSN", "")
    if not dsn:
        print("jobs: JOBS_DSN is not set (postgresql://user@host:port/db)", flush=True)
        return 2
    t = table(os.environ.get("JOBS_TABLE", "jobs"))
    cpu_share = float(os.environ.get("JOBS_CPU_SHARE", "0.1"))
    if not 0 <= cpu_share <= 1:
        print(f"jobs: JOBS_CPU_SHARE={cpu_share}: a fraction from 0 to 1", flush=True)
        return 2
    me = os.environ.get("HOSTNAME") or socket.gethostname()
    conn = None
    done = 0
    for _ in d.loop():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
                conn.execute(schema(t))
            job = claim(conn, t, me)
        except psycopg.Error as exc:
            log.warning("PostgreSQL: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            conn = None
            d.sleep(1)
            continue
        if job is None:
            d.sleep(0.5)  # idle: beats while it waits; a stop or a drain ends the wait
            continue
        job_id, seconds = job
        with d.busy():
            sigterm_at = work(d, seconds, cpu_share)
        for attempt in range(10):  # the job is done: record it, even while stopping
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
                finish(conn, t, job_id, me, sigterm_at)
                break
            except psycopg.Error:
                conn = None
                time.sleep(0.5 * (attempt + 1))
        done += 1
    log.info("stopped: %s; %d job(s)", d.stop_reason or "no free slot", done)
    return 0
