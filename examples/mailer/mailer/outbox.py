"""The outbox in PostgreSQL: migrations, enqueue, claim with a lease, mark, and the pool-wide throttle.

States: pending -> sending (claimed, leased) -> sent | pending (retry later) | dead (with reason).
A message whose lease ran out (its worker died) is claimable again. Nothing is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

MIGRATIONS = [
    (
        1,
        """
CREATE TABLE IF NOT EXISTS mailer_outbox (
    id              bigserial PRIMARY KEY,
    recipient       text NOT NULL,
    sender          text,
    subject         text NOT NULL,
    body            text NOT NULL,
    state           text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'sent', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    claims          integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX IF NOT EXISTS mailer_outbox_claimable ON mailer_outbox (next_attempt_at, id)
    WHERE state IN ('pending', 'sending');
CREATE TABLE IF NOT EXISTS mailer_throttle (
    id        integer PRIMARY KEY CHECK (id = 1),
    next_slot timestamptz NOT NULL
);
INSERT INTO mailer_throttle VALUES (1, now()) ON CONFLICT (id) DO NOTHING;
""",
    ),
]
# Any constant: serializes migrations of workers starting together.
MIGRATION_LOCK = 0x6D61696C
# The channel enqueue() notifies: idle workers LISTEN on it and wake at once instead of polling.
CHANNEL = "mailer_outbox"
# What is due now: the autoscaler's backlog (spec.autoscale.backlog.query in examples/mailer/pool.yaml).
BACKLOG_SQL = (
    "SELECT count(*) FROM mailer_outbox WHERE (state = 'pending' AND next_attempt_at <= now())"
    " OR (state = 'sending' AND lease_until < now())"
)


@dataclass
class Message:
    id: int
    recipient: str
    sender: str | None
    subject: str
    body: str
    attempts: int


def migrate(conn) -> int:
    """Apply what is missing, idempotently, one migrator at a time. Returns the schema version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS mailer_schema (version integer PRIMARY KEY)")
        done = {r[0] for r in conn.execute("SELECT version FROM mailer_schema")}
        for version, sql in MIGRATIONS:
            if version not in done:
                conn.execute(sql)
                conn.execute("INSERT INTO mailer_schema VALUES (%s)", (version,))
    return max(v for v, _ in MIGRATIONS)


def enqueue(conn, to: str, subject: str, body: str, sender: str | None = None) -> int:
    """The application side: record a message to send. Returns its outbox id."""
    row = conn.execute(
        "INSERT INTO mailer_outbox (recipient, sender, subject, body) VALUES (%s, %s, %s, %s) RETURNING id",
        (to, sender, subject, body),
    ).fetchone()
    conn.execute(f"NOTIFY {CHANNEL}")  # delivered at commit: a worker never wakes before the row is visible
    return row[0]


def enqueue_many(conn, messages) -> int:
    """Bulk enqueue of (to, subject, body) tuples in one transaction. Returns how many."""
    rows = list(messages)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("INSERT INTO mailer_outbox (recipient, subject, body) VALUES (%s, %s, %s)", rows)
        cur.execute(f"NOTIFY {CHANNEL}")
    return len(rows)


def backlog(conn) -> int:
    """Messages due now (pending and due, or leased by a worker that died)."""
    return conn.execute(BACKLOG_SQL).fetchone()[0]


def claim(conn, owner: str, batch: int, lease_seconds: float, max_claims: int = 5) -> list:
    """Lease up to ``batch`` due messages. A message whose sending was started ``max_claims`` times with no
    outcome recorded (its workers died while sending it: a crash, not an exception) goes dead instead of being
    claimed again forever, taking a worker down each time. ``claims`` counts sends started (``renew``), not
    claims: a lease that ran out while the message waited in a batch's tail behind the throttle is no crash."""
    conn.execute(
        """
        UPDATE mailer_outbox SET state = 'dead', lease_owner = NULL, lease_until = NULL,
               last_error = 'worker died while sending (started ' || claims || ' times without an outcome)'
         WHERE state = 'sending' AND lease_until < now() AND claims - attempts >= %(max)s""",
        {"max": max_claims},
    )
    rows = conn.execute(
        """
        UPDATE mailer_outbox SET state = 'sending', lease_owner = %(owner)s,
               lease_until = now() + %(lease)s * interval '1 second'
         WHERE id IN (SELECT id FROM mailer_outbox
                       WHERE (state = 'pending' AND next_attempt_at <= now())
                          OR (state = 'sending' AND lease_until < now())
                       ORDER BY next_attempt_at, id
                       LIMIT %(batch)s
                       FOR UPDATE SKIP LOCKED)
        RETURNING id, recipient, sender, subject, body, attempts""",
        {"owner": owner, "lease": lease_seconds, "batch": batch},
    ).fetchall()
    return [Message(*r) for r in sorted(rows)]


def _owned(sql: str) -> str:
    # Only while we still hold the lease: a worker that lost it must not overwrite the new owner's work.
    return sql + " WHERE id = %(id)s AND state = 'sending' AND lease_owner = %(owner)s"


def renew(conn, msg_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend our lease on one row just before sending it, and count the send as started (``claims``); False
    when a peer claimed it meanwhile."""
    return (
        conn.execute(
            _owned(
                "UPDATE mailer_outbox SET lease_until = now() + %(lease)s * interval '1 second', claims = claims + 1"
            ),
            {"id": msg_id, "owner": owner, "lease": lease_seconds},
        ).rowcount
        == 1
    )


def mark_sent(conn, msg_id: int, owner: str) -> bool:
    return (
        conn.execute(
            _owned(
                "UPDATE mailer_outbox SET state = 'sent', sent_at = now(), lease_owner = NULL, "
                "lease_until = NULL, attempts = attempts + 1"
            ),
            {"id": msg_id, "owner": owner},
        ).rowcount
        == 1
    )


def mark_retry(conn, msg_id: int, owner: str, error: str, delay: float) -> bool:
    return (
        conn.execute(
            _owned(
                "UPDATE mailer_outbox SET state = 'pending', attempts = attempts + 1, last_error = %(err)s, "
                "next_attempt_at = now() + %(delay)s * interval '1 second', lease_owner = NULL, "
                "lease_until = NULL"
            ),
            {"id": msg_id, "owner": owner, "err": error[:2000], "delay": delay},
        ).rowcount
        == 1
    )


def mark_dead(conn, msg_id: int, owner: str, reason: str) -> bool:
    return (
        conn.execute(
            _owned(
                "UPDATE mailer_outbox SET state = 'dead', attempts = attempts + 1, last_error = %(err)s, "
                "lease_owner = NULL, lease_until = NULL"
            ),
            {"id": msg_id, "owner": owner, "err": reason[:2000]},
        ).rowcount
        == 1
    )


def release(conn, ids, owner: str) -> int:
    """Give back claimed messages we will not send (stopping): no lease wait for them."""
    if not ids:
        return 0
    return conn.execute(
        # Never started (renew counts starts), so nothing to take back from max_claims.
        "UPDATE mailer_outbox SET state = 'pending', lease_owner = NULL, lease_until = NULL "
        "WHERE id = ANY(%s) AND state = 'sending' AND lease_owner = %s",
        (list(ids), owner),
    ).rowcount


def take_slot(conn, rate: float) -> float:
    """Take the pool-wide send slot if it is due: 0.0 means "send now", else seconds to wait.

    One row holds when the next send is allowed; taking it moves that time on by
    1/rate. A slot is taken only when due, so a worker killed while waiting wastes
    nothing. Up to 5 slots (at most 1 s) are made up after a lull, so a late wake-up
    keeps the cadence without letting an idle pool burst.
    """
    gap = 1.0 / rate
    params = {"gap": gap, "burst": min(1.0, 5 * gap)}
    row = conn.execute(
        """
        UPDATE mailer_throttle
           SET next_slot = GREATEST(next_slot, clock_timestamp() - %(burst)s * interval '1 second')
                           + %(gap)s * interval '1 second'
         WHERE id = 1 AND next_slot <= clock_timestamp()
     RETURNING 1""",
        params,
    ).fetchone()
    if row:
        return 0.0
    wait = conn.execute(
        "SELECT EXTRACT(EPOCH FROM (next_slot - clock_timestamp())) FROM mailer_throttle WHERE id = 1"
    ).fetchone()[0]
    return max(0.0005, float(wait))


def stats(conn) -> dict:
    rows = conn.execute("SELECT state, count(*) FROM mailer_outbox GROUP BY state").fetchall()
    out = {"pending": 0, "sending": 0, "sent": 0, "dead": 0}
    out.update({state: n for state, n in rows})
    return out
