"""Configuration from the environment: every setting has a default and a reason; bad values name the variable."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_UNIT = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names the variable and the expected form."""


def parse_rate(raw: str, var: str = "MAILER_RATE") -> float:
    """'120/min' -> 2.0 messages per second."""
    m = _RATE.match(raw or "")
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{var}={raw!r} is not a rate; expected N/s, N/min or N/h with N > 0, e.g. 120/min")
    return float(m.group(1)) / _UNIT[m.group(2)]


def parse_hostport(raw: str, var: str, default_port: int) -> tuple[str, int]:
    host, _, port = (raw or "").rpartition(":") if ":" in (raw or "") else (raw, "", str(default_port))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{var}={raw!r} is not HOST:PORT, e.g. smtp.example.com:587")
    return host, int(port)


def parse_dsn(raw: str | None, var: str = "MAILER_DSN") -> str:
    if not raw:
        raise ConfigError(
            f"{var} is not set; expected a PostgreSQL connection string, "
            "e.g. postgresql://mailer:secret@db.example.com:5432/mailer"
        )
    try:
        from psycopg import conninfo  # noqa: PLC0415 - config parsing must not need the driver loaded

        conninfo.conninfo_to_dict(raw)
    except Exception as exc:  # noqa: BLE001 - psycopg.ProgrammingError and friends: the parser's message follows
        raise ConfigError(
            f"{var} is not a valid PostgreSQL connection string ({exc}); "
            "expected e.g. postgresql://mailer:secret@db.example.com:5432/mailer"
        ) from None
    return raw


def _number(var: str, default: float, kind=float, minimum: float = 0, maximum: float = float("inf")) -> float:
    raw = os.environ.get(var)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a {'whole ' if kind is int else ''}number") from None
    if not minimum <= value <= maximum:  # nan fails both
        bounds = f"at least {minimum:g}" + (f" and at most {maximum:g}" if maximum != float("inf") else "")
        raise ConfigError(f"{var}={raw!r} must be {bounds}")
    return value


@dataclass(frozen=True)
class Config:
    dsn: str
    smtp_host: str
    smtp_port: int
    sender: str
    rate: float  # messages per second, pool-wide
    batch: int
    lease_seconds: float
    max_attempts: int
    backoff_base: float
    backoff_max: float
    smtp_timeout: float
    domain: str
    idle_poll_seconds: float
    max_claims: int
    send_deadline: float
    statement_timeout: float

    @classmethod
    def from_env(cls) -> "Config":
        env = os.environ
        timeout = _number("DAEMONPOOL_TIMEOUT_SECONDS", 30.0, minimum=1)
        host, port = parse_hostport(env.get("MAILER_SMTP", "localhost:25"), "MAILER_SMTP", 25)
        return cls(
            dsn=parse_dsn(env.get("MAILER_DSN")),
            smtp_host=host,
            smtp_port=port,
            # The envelope sender and From: header.
            sender=env.get("MAILER_FROM", "noreply@example.com"),
            # Pool-wide, not per worker: what the mail provider allows.
            rate=parse_rate(env.get("MAILER_RATE", "120/min")),
            # Small batches: a killed worker strands few messages until their lease ends.
            batch=int(_number("MAILER_BATCH", 10, int, 1)),
            # A few heartbeat timeouts: a dead worker's messages are sent again soon, not in an hour.
            lease_seconds=_number("MAILER_LEASE_SECONDS", 3 * timeout, minimum=1),
            # Then the message is dead, with the last error as its reason.
            max_attempts=int(_number("MAILER_MAX_ATTEMPTS", 8, int, 1, 1000)),
            # Exponential backoff with jitter between attempts: base * 2^(n-1), at most max (a day at most).
            backoff_base=_number("MAILER_BACKOFF_BASE", 2.0, minimum=0, maximum=86400),
            backoff_max=_number("MAILER_BACKOFF_MAX", 300.0, minimum=0, maximum=86400),
            # Below the lease, so a slow server cannot make two workers send one message.
            smtp_timeout=_number("MAILER_SMTP_TIMEOUT", min(10.0, timeout), minimum=0.1),
            # Right side of every Message-ID: <outbox-ID@DOMAIN>.
            domain=env.get("MAILER_DOMAIN", "mailer.daemonpool.dev"),
            # An idle worker wakes on enqueue()'s NOTIFY at once; it also looks this often, for retries that
            # fell due and messages whose worker died (no notification says so). MAILER_POLL_SECONDS, its
            # name before LISTEN/NOTIFY, still works.
            idle_poll_seconds=_number(
                "MAILER_IDLE_POLL_SECONDS",
                _number("MAILER_POLL_SECONDS", 10.0, minimum=0.01),
                minimum=0.01,
                maximum=3600,
            ),
            # Sends started without an outcome (the worker died while sending, e.g. this message crashes it): then
            # the message is dead, "worker died while sending", instead of killing every worker in turn.
            max_claims=int(_number("MAILER_MAX_CLAIMS", 5, int, 1, 1000)),
            # One send, start to end, however slowly the server answers (a per-read timeout is renewed by
            # every reply): below the lease, so no other worker takes the message meanwhile.
            send_deadline=_number("MAILER_SEND_DEADLINE", min(60.0, 1.5 * timeout), minimum=0.1),
            # Every SQL statement: shorter than the heartbeat limit, so a stuck query is an error, not a hang.
            statement_timeout=_number("MAILER_STATEMENT_TIMEOUT", min(10.0, timeout / 2), minimum=0.1),
        )
