"""The mailer example with real PostgreSQL, a real SMTP server, real worker processes and SIGKILL chaos."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from testkit.proc import ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "mailer"))

import psycopg  # noqa: E402  (a test dependency: never skipped)

from mailer import outbox  # noqa: E402
from mailer.config import ConfigError, parse_dsn, parse_rate  # noqa: E402

from testkit import services  # noqa: E402
from testkit.measure import record  # noqa: E402

pytestmark = pytest.mark.timeout(400)


@pytest.fixture
def db(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        outbox.migrate(conn)
        conn.execute("TRUNCATE mailer_outbox RESTART IDENTITY")
        conn.execute("UPDATE mailer_throttle SET next_slot = now()")
        yield conn


@pytest.fixture
def smtp():
    s = services.MailSink().start()
    yield s
    s.stop()


class Pool:
    """Mailer worker processes, started and killed like a kubelet would."""

    def __init__(self, tmp_path, pg, smtp, **env):
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "examples", "mailer")]),
            MAILER_DSN=pg.dsn(),
            MAILER_SMTP=f"127.0.0.1:{smtp.port}",
            DAEMONPOOL_NAME="mailer",
            DAEMONPOOL_RUN_DIR=str(tmp_path / "run"),
            DAEMONPOOL_TIMEOUT_SECONDS="2",
            MAILER_LOG_LEVEL="WARNING",
            **{k: str(v) for k, v in env.items()},
        )
        self.procs = []
        self.log = open(tmp_path / "workers.log", "ab")

    def start(self):
        p = subprocess.Popen(
            [sys.executable, "-m", "mailer", "worker"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.procs.append(p)
        return p

    def live(self):
        return [p for p in self.procs if p.poll() is None]

    def stop(self):
        for p in self.live():
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_drained(db, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = outbox.stats(db)
        if s["pending"] == 0 and s["sending"] == 0:
            return s
        time.sleep(0.2)
    raise AssertionError(f"not drained after {timeout}s: {outbox.stats(db)}")


# The full run of the review (issue 11, R2): DAEMONPOOL_FULL=1 sends 5,000 under chaos; CI runs 2,000.
CHAOS_MESSAGES = 5000 if os.environ.get("DAEMONPOOL_FULL") == "1" else 2000


def test_chaos_three_workers_nothing_lost(tmp_path, pg, db, smtp):
    n, rate = CHAOS_MESSAGES, 50.0
    outbox.enqueue_many(db, [(f"user{i}@example.com", f"order {i}", f"Thanks for order {i}.") for i in range(n)])
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE=f"{rate:g}/s", DAEMONPOOL_MAX_PEERS=3, MAILER_BATCH=5)
    for _ in range(3):
        pool.start()
    kills, t0 = 0, time.monotonic()
    rng = random.Random(7)
    try:
        # Chaos for a bounded time: SIGKILL a random worker every ~0.5 s and restart it, as the kubelet would.
        while time.monotonic() - t0 < (n / rate) * 0.6:  # SIGKILLs through most of the run
            time.sleep(rng.uniform(0.3, 0.7))
            live = pool.live()
            if live:
                victim = rng.choice(live)
                victim.kill()
                victim.wait()
                kills += 1
            pool.start()
            while len(pool.live()) > 3:
                time.sleep(0.05)
        stats = wait_drained(db, 240 + n / rate)
        drained = time.monotonic() - t0
    finally:
        pool.stop()
    rows = db.execute("SELECT id, state, last_error FROM mailer_outbox").fetchall()
    ids = smtp.ids()
    received = {int(mid.split("-")[1].split("@")[0]) for mid in ids}
    sent = {r[0] for r in rows if r[1] == "sent"}
    dead = [r for r in rows if r[1] == "dead"]
    lost = [r[0] for r in rows if r[0] not in received and r[1] != "dead"]
    assert len(rows) == n
    assert all(r[2] for r in dead), "every dead message carries its reason"
    assert lost == [], f"{len(lost)} messages lost"
    assert dead == [], "no failure was injected: nothing may go dead (dead is not 'not lost')"
    assert sent == set(range(1, n + 1)) and received == sent, "every message sent and marked sent"
    counts = {}
    for mid in ids:
        counts[mid] = counts.get(mid, 0) + 1
    duplicated = sorted(mid for mid, c in counts.items() if c > 1)
    duplicates = len(ids) - len(set(ids))
    times = sorted(t for t, _, _ in smtp.received)
    lo, hi = times[len(times) // 20], times[len(times) * 19 // 20]
    measured = (len(times) * 18 // 20) / (hi - lo)
    record(
        f"mailer_chaos_{n}",
        {
            "messages": n,
            "kills": kills,
            "lost": len(lost),
            "duplicates": duplicates,
            "duplicated_message_ids": duplicated[:20],
            "dead": len(dead),
            "rate_limit_per_s": rate,
            "measured_rate_per_s": round(measured, 2),
            "rate_ratio": round(measured / rate, 3),
            "drain_seconds": round(drained, 1),
            "stats": stats,
        },
    )
    assert kills >= 30
    assert abs(measured / rate - 1) <= 0.02, f"send rate {measured:.2f}/s vs limit {rate}/s"


def test_a_poison_message_goes_dead_and_the_queue_moves_on(tmp_path, pg, db, smtp):
    """Before: a CR/LF in a header raised ValueError out of run(); the row went back first in the
    queue and every peer crash-looped on it while nothing else was sent."""
    poison = [
        outbox.enqueue(db, "a@example.com", "hi\r\nBcc: everyone@example.com", "body"),
        outbox.enqueue(db, "b@example.com\nBcc: x@example.com", "hi", "body"),
        outbox.enqueue(db, "c@example.com", "hi", "body", sender="evil@example.com\r\nX-Injected: 1"),
    ]
    good = [outbox.enqueue(db, f"u{i}@example.com", "fine", "body") for i in range(10)]
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s")
    p = pool.start()
    try:
        wait_drained(db, 30)
        assert p.poll() is None, "the worker survived the poison messages"
    finally:
        pool.stop()
    assert p.returncode == 0
    rows = {r[0]: r for r in db.execute("SELECT id, state, last_error FROM mailer_outbox")}
    for i in poison:
        assert rows[i][1] == "dead" and "malformed message" in rows[i][2], rows[i]
    assert all(rows[i][1] == "sent" for i in good)
    assert len(smtp.ids()) == len(good)


def test_every_message_is_sent_once_when_batches_outwait_their_lease(tmp_path, pg, db, smtp):
    """Before: the lease was set once per batch; behind a slow pool-wide throttle the batch's tail waited
    longer than the lease, a peer claimed and sent it, and then the first worker sent it too."""
    n = 60
    outbox.enqueue_many(db, [(f"u{i}@example.com", f"m{i}", "body") for i in range(n)])
    # 3 peers x batch 10 / 4 per s = 7.5 s of waiting for a batch's tail, against a 1 s lease.
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="4/s", MAILER_BATCH=10, MAILER_LEASE_SECONDS=1, DAEMONPOOL_MAX_PEERS=3)
    for _ in range(3):
        pool.start()
    try:
        stats = wait_drained(db, 120)
    finally:
        pool.stop()
    ids = smtp.ids()
    twice = sorted({mid for mid in ids if ids.count(mid) > 1})
    assert twice == [], f"{len(twice)} messages sent more than once: {twice[:10]}"
    dead = db.execute("SELECT id, claims, attempts, last_error FROM mailer_outbox WHERE state = 'dead'").fetchall()
    assert dead == [], f"messages gone dead: {dead}"
    assert len(ids) == n and stats["sent"] == n


def test_451_is_retried_and_delivered_550_is_dead_with_reason(tmp_path, pg, db, smtp):
    smtp.tempfail_until = time.monotonic() + 3
    ok = [outbox.enqueue(db, f"u{i}@example.com", "hi", "body") for i in range(5)]
    bounce = outbox.enqueue(db, "bounce@example.com", "hi", "body")
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s", MAILER_BACKOFF_BASE="0.5", MAILER_BACKOFF_MAX="2")
    pool.start()
    try:
        wait_drained(db, 60)
    finally:
        pool.stop()
    rows = {r[0]: r for r in db.execute("SELECT id, state, attempts, last_error FROM mailer_outbox")}
    assert smtp.tempfailed >= 1
    for i in ok:
        assert rows[i][1] == "sent"
    assert any(rows[i][2] > 1 and "451" in rows[i][3] for i in ok), "some message was retried after a 451"
    assert rows[bounce][1] == "dead" and "550" in rows[bounce][3] and "permanent" in rows[bounce][3]


def test_exhausted_retries_go_dead_with_the_last_error(tmp_path, pg, db, smtp):
    smtp.tempfail_until = time.monotonic() + 60
    i = outbox.enqueue(db, "x@example.com", "hi", "body")
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s", MAILER_BACKOFF_BASE="0.05", MAILER_MAX_ATTEMPTS=3)
    pool.start()
    try:
        wait_drained(db, 30)
    finally:
        pool.stop()
    state, attempts, err = db.execute(
        "SELECT state, attempts, last_error FROM mailer_outbox WHERE id = %s", (i,)
    ).fetchone()
    assert (state, attempts) == ("dead", 3) and "gave up after 3 attempts" in err and "451" in err


def test_smtp_outage_fails_readiness_not_liveness_and_recovers(tmp_path, pg, db):
    port = services.free_port()
    pool = Pool(
        tmp_path,
        pg,
        type("S", (), {"port": port}),
        MAILER_RATE="100/s",
        MAILER_BACKOFF_BASE="0.2",
        MAILER_BACKOFF_MAX="0.5",
    )
    pool.start()
    run = str(tmp_path / "run")
    probe = [sys.executable, "-m", "worker_runtime", "probe", "--name", "mailer", "--run-dir", run, "--timeout", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and subprocess.run(probe + ["liveness"], env=env).returncode != 0:
            time.sleep(0.2)
        time.sleep(1.5)
        live = subprocess.run(probe + ["liveness"], env=env, capture_output=True, text=True)
        ready = subprocess.run(probe + ["readiness"], env=env, capture_output=True, text=True)
        assert live.returncode == 0, live.stdout
        assert ready.returncode == 1 and "not ready" in ready.stdout
        i = outbox.enqueue(db, "a@example.com", "during outage", "body")
        time.sleep(1)
        assert db.execute("SELECT attempts FROM mailer_outbox WHERE id = %s", (i,)).fetchone()[0] == 0, (
            "no attempts are burnt while the server is known to be down"
        )
        smtp = services.MailSink(port=port).start()
        try:
            wait_drained(db, 20)
            assert subprocess.run(probe + ["readiness"], env=env).returncode == 0
            assert len(smtp.ids()) == 1
        finally:
            smtp.stop()
    finally:
        pool.stop()


def test_sigterm_finishes_the_current_message_and_exits(tmp_path, pg, db, smtp):
    outbox.enqueue_many(db, [(f"u{i}@example.com", "s", "b") for i in range(200)])
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="20/s", MAILER_BATCH=10)
    p = pool.start()
    deadline = time.monotonic() + 30
    while len(smtp.ids()) < 5 and time.monotonic() < deadline:  # mid-batch, sending: the case that matters
        time.sleep(0.05)
    assert len(smtp.ids()) >= 5, "the worker never started sending"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 0
    assert time.monotonic() - t0 < 3
    s = outbox.stats(db)
    assert s["sending"] == 0, "claimed but unsent messages are given back at once"
    assert s["sent"] == len(set(smtp.ids())) >= 5


@pytest.mark.parametrize(
    "env,needle",
    [
        ({"MAILER_RATE": "fast"}, "MAILER_RATE='fast' is not a rate; expected N/s, N/min or N/h"),
        ({"MAILER_DSN": "host='unterminated"}, "MAILER_DSN is not a valid PostgreSQL connection string"),
        ({"MAILER_DSN": ""}, "MAILER_DSN is not set"),
        ({"MAILER_SMTP": "host:99999"}, "MAILER_SMTP='host:99999' is not HOST:PORT"),
        ({"MAILER_BATCH": "ten"}, "MAILER_BATCH='ten' is not a whole number"),
        # Before: ~1,000 or more overflowed the backoff (OverflowError) and left the row 'sending'.
        ({"MAILER_MAX_ATTEMPTS": "5000"}, "MAILER_MAX_ATTEMPTS='5000' must be at least 1 and at most 1000"),
        ({"MAILER_BACKOFF_MAX": "nan"}, "MAILER_BACKOFF_MAX='nan' must be at least 0 and at most 86400"),
    ],
)
def test_bad_configuration_names_the_variable(tmp_path, env, needle):
    full = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "examples", "mailer")]),
        MAILER_DSN="postgresql://u@localhost/db",
        DAEMONPOOL_RUN_DIR=str(tmp_path),
    )
    full.update(env)
    r = subprocess.run([sys.executable, "-m", "mailer", "worker"], env=full, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_rate_parsing():
    assert parse_rate("120/min") == 2.0 and parse_rate("5/s") == 5.0 and parse_rate("3600/h") == 1.0
    with pytest.raises(ConfigError):
        parse_rate("0/s")
    with pytest.raises(ConfigError):
        parse_dsn("host='unterminated")


def test_a_message_claimed_again_and_again_without_an_outcome_goes_dead(tmp_path, pg, db, smtp):
    """Before: a message that killed its worker (a crash, not an exception) was claimed again forever."""
    killer = outbox.enqueue(db, "crash@example.com", "kills its worker", "body")
    survivor = outbox.enqueue(db, "ok@example.com", "claimed 4 times", "body")
    for i, claims in ((killer, 5), (survivor, 4)):
        db.execute(
            "UPDATE mailer_outbox SET state = 'sending', claims = %s, lease_owner = 'dead-worker', "
            "lease_until = now() - interval '1 second' WHERE id = %s",
            (claims, i),
        )
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s")
    pool.start()
    try:
        wait_drained(db, 30)
    finally:
        pool.stop()
    rows = dict(db.execute("SELECT id, state || ': ' || coalesce(last_error, '') FROM mailer_outbox").fetchall())
    assert rows[killer] == "dead: worker died while sending (started 5 times without an outcome)"
    assert rows[survivor] == "sent: "


def test_a_slow_smtp_server_neither_hangs_the_worker_nor_outlasts_the_deadline(tmp_path, pg, db, smtp):
    """Before: a server that delayed each reply made one send last 36 s without a heartbeat."""
    smtp.reply_delay = 0.8  # MAIL, RCPT, DATA: 2.4 s per message, more than the 2 s heartbeat limit
    outbox.enqueue(db, "slow@example.com", "slow", "body")
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s", MAILER_SEND_DEADLINE="3.5")
    pool.start()
    run = str(tmp_path / "run")
    probe = [sys.executable, "-m", "worker_runtime", "probe", "liveness", "--name", "mailer", "--run-dir", run]
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        failures, checks = [], 0
        deadline = time.monotonic() + 20
        while not smtp.ids() and time.monotonic() < deadline:
            r = subprocess.run(probe + ["--timeout", "2"], env=env, capture_output=True, text=True)
            checks += 1
            if r.returncode != 0 and "no live holder" not in r.stdout and "no heartbeat" not in r.stdout:
                failures.append(r.stdout.strip())
        assert smtp.ids(), "the slow server got the message"
        assert failures == [] and checks >= 3, failures
        # Now each reply comes within the 2 s socket timeout, but the three of them outlast the deadline:
        # a per-read timeout alone would wait 4.5 s (and 6 replies of 1.9 s, 11 s) without complaint.
        smtp.reply_delay = 1.5
        i = outbox.enqueue(db, "slower@example.com", "slower", "body")
        deadline = time.monotonic() + 20
        err = None
        while time.monotonic() < deadline and not err:
            err = db.execute("SELECT last_error FROM mailer_outbox WHERE id = %s", (i,)).fetchone()[0]
            time.sleep(0.2)
        assert err and "send deadline (3.5s)" in err, err
    finally:
        smtp.reply_delay = 0.0
        pool.stop()


def test_a_database_error_that_is_not_an_outage_turns_readiness_off_and_is_retried(tmp_path, pg, db, smtp):
    """Before: a missing table (or a read-only transaction) raised out of run(): a crash loop."""
    port = services.free_port()
    pool = Pool(
        tmp_path,
        pg,
        smtp,
        MAILER_RATE="100/s",
        MAILER_BACKOFF_BASE="0.2",
        MAILER_BACKOFF_MAX="0.5",
        DAEMONPOOL_PORT=port,
    )
    p = pool.start()
    run = str(tmp_path / "run")
    probe = [sys.executable, "-m", "worker_runtime", "probe", "--name", "mailer", "--run-dir", run, "--timeout", "2"]
    env = dict(os.environ, PYTHONPATH=ROOT)

    def ready():
        return subprocess.run(probe + ["readiness"], env=env).returncode == 0

    try:
        deadline = time.monotonic() + 15
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready()
        db.execute("ALTER TABLE mailer_outbox RENAME TO mailer_outbox_away")
        deadline = time.monotonic() + 10
        while ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ready() and p.poll() is None, "not ready, and still running"
        import json
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/state", timeout=2) as r:
            state = json.loads(r.read())
        assert 'relation "mailer_outbox" does not exist' in state.get("status", ""), state
        assert subprocess.run(probe + ["liveness"], env=env).returncode == 0, "readiness, not liveness"
        db.execute("ALTER TABLE mailer_outbox_away RENAME TO mailer_outbox")
        deadline = time.monotonic() + 15
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready() and p.poll() is None, "ready again once the table is back"
    finally:
        db.execute("ALTER TABLE IF EXISTS mailer_outbox_away RENAME TO mailer_outbox")
        pool.stop()


def _commits(conn) -> int:
    """Transactions committed in the outbox's database so far (every autocommit statement is one)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()[0]


def test_idle_workers_wait_on_notify_not_on_the_database_and_wake_at_once(tmp_path, pg, db, smtp):
    """Issue 24: an idle pool polled every second ("you could really peg your database"); now idle workers LISTEN
    and look only every MAILER_IDLE_POLL_SECONDS, and enqueue()'s NOTIFY wakes one at once."""
    pool = Pool(tmp_path, pg, smtp, MAILER_RATE="100/s", DAEMONPOOL_MAX_PEERS=5, MAILER_IDLE_POLL_SECONDS=10)
    try:
        for _ in range(5):
            pool.start()
        time.sleep(4)  # started, migrated, listening
        before, t0 = _commits(db), time.monotonic()
        time.sleep(30)
        time.sleep(1.5)  # the statistics of the last statements reach pg_stat_database within a second
        idle = (_commits(db) - before - 1) * 60 / (time.monotonic() - t0 - 1.5)
        latencies = []
        for i in range(5):
            t = time.monotonic()
            outbox.enqueue(db, f"now{i}@example.com", "wake up", "at once")
            deadline = t + 10
            while len(smtp.received) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
            latencies.append(time.monotonic() - t)
            time.sleep(2)
    finally:
        pool.stop()
    record("mailer_idle_queries_per_minute_5_workers", round(idle))
    record("mailer_enqueue_to_send_s", [round(x, 3) for x in latencies])
    # Each look is two statements (dead-marking, then the claim); in 30 s a worker looks 3 or 4 times: 5 workers
    # x 4 x 2 = 40 per 30 s, 80 a minute, plus this test's few; polling every second made it 600.
    assert idle <= 100, f"{idle:.0f} statements per idle minute"
    assert max(latencies) < 1.0, f"enqueue to send took {latencies}: woken by NOTIFY, not by the next look"
