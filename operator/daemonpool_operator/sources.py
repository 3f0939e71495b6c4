"""Backlog sources outside the workers that need more than HTTP: PostgreSQL. The autoscaler asks them.

A query is anybody's SQL: it runs in a read-only session (``default_transaction_read_only``) with a
statement timeout, on a connection made for it and closed after (one every periodSeconds per pool), and its
answer must be one whole number. Any failure is None ("backlog unknown"), logged with the reason; the
DSN never reaches a log line.
"""

from __future__ import annotations

import decimal
import logging
import math

log = logging.getLogger("daemonpool.autoscaler")

# Milliseconds a backlog query may run: a count on an index is quick; a slow one must not stall the pass.
STATEMENT_TIMEOUT_MS = 1000
# Seconds to connect: the autoscaler asks every few seconds, and waits on nothing longer.
CONNECT_TIMEOUT = 2


def postgres_count(dsn: str, query: str) -> int | None:
    """The one whole number ``query`` returns, or None (logged: no driver, no connection, an error, not a number)."""
    try:
        import psycopg  # noqa: PLC0415 - only pools with a postgres backlog need the driver
    except ImportError:
        log.warning("backlog source postgres: the psycopg driver is not installed (pip install psycopg[binary])")
        return None
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    try:
        with psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, options=options, autocommit=True) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning("backlog source postgres: %s: %s", type(exc).__name__, why)
        return None
    except Exception as exc:  # noqa: BLE001 - a bad DSN raises ProgrammingError or ValueError-like errors
        log.warning("backlog source postgres: %s", type(exc).__name__)
        return None
    value = row[0] if row else None
    # A count is an integer; numeric and double precision are taken when whole. True is not a number here.
    whole = isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool)
    if not whole or not (math.isfinite(value) and value >= 0 and value == int(value)):  # type: ignore[arg-type,operator]
        log.warning("backlog source postgres: the query did not return one whole number >= 0")
        return None
    return int(value)
