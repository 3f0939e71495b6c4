"""The worker loop on the daemon contract: start -> (claim, throttle, send, mark; heartbeat)* -> stop."""

from __future__ import annotations

import logging
import os
import random
import smtplib
import socket
import threading
import time
import uuid
from email.message import EmailMessage
from email.utils import formatdate

import psycopg

from worker_runtime import Daemon

from . import outbox
from .config import Config

log = logging.getLogger("mailer")
# Failures of the connection rather than of one message: the server is unreachable.
UNREACHABLE = (
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    OSError,
)


def message_id(msg_id: int, domain: str) -> str:
    """Stable per outbox row: a duplicate send (worker killed between send and mark) is visible to the receiver."""
    return f"<outbox-{msg_id}@{domain}>"


class Mailer:
    def __init__(self, cfg: Config, daemon: Daemon):
        self.cfg = cfg
        self.d = daemon
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        self.db = None
        self.smtp = None
        self.outage = 0  # consecutive failed connection attempts, for backoff
        self.down = False  # a database error turned readiness off
        self.counts = {"sent": 0, "retry": 0, "dead": 0, "skipped": 0}
        self.retry_at = float("inf")  # monotonic: the earliest retry this worker scheduled (no NOTIFY says so)

    def _backoff(self) -> float:
        self.outage += 1
        return min(self.cfg.backoff_max, self.cfg.backoff_base * 2 ** min(self.outage - 1, 16)) * random.uniform(
            0.5, 1.0
        )

    # -- dependencies ----------------------------------------------------------------------
    def ensure_db(self) -> bool:
        if self.db is not None and not self.db.closed:
            return True
        try:
            self.db = psycopg.connect(
                self.cfg.dsn,
                autocommit=True,
                connect_timeout=max(1, int(min(5.0, self.d.timeout / 2))),
                options=f"-c statement_timeout={int(self.cfg.statement_timeout * 1000)}",
            )
            outbox.migrate(self.db)
            self.db.execute(f"LISTEN {outbox.CHANNEL}")  # enqueue() wakes us; a new connection listens again
            return True
        except psycopg.Error as exc:
            log.warning("PostgreSQL unreachable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
            self.db = None
            return False

    def ensure_smtp(self) -> bool:
        if self.smtp is not None:
            return True
        try:
            self.smtp = smtplib.SMTP(self.cfg.smtp_host, self.cfg.smtp_port, timeout=self.cfg.smtp_timeout)
            self.smtp.ehlo_or_helo_if_needed()
            return True
        except UNREACHABLE as exc:
            log.warning("SMTP %s:%s unreachable: %s", self.cfg.smtp_host, self.cfg.smtp_port, exc)
            self.drop_smtp()
            return False

    def drop_smtp(self) -> None:
        if self.smtp is not None:
            try:
                self.smtp.close()
            except OSError:
                pass
        self.smtp = None

    # -- one message -----------------------------------------------------------------------
    def build(self, m: outbox.Message) -> EmailMessage:
        e = EmailMessage()
        e["Message-ID"] = message_id(m.id, self.cfg.domain)
        e["From"] = m.sender or self.cfg.sender
        e["To"] = m.recipient
        e["Subject"] = m.subject
        e["Date"] = formatdate(localtime=False)
        e.set_content(m.body)
        return e

    def deliver(self, m: outbox.Message) -> str:
        """Send one message and record the outcome; returns sent, retry or dead.

        Anything that goes wrong with this one message is this message's failure,
        never the worker's: a poison row (a CR/LF in a header, say) must not crash
        every peer in turn while the rest of the queue waits behind it.
        """
        try:
            e = self.build(m)
        except (ValueError, TypeError) as exc:
            # The row itself is malformed: sending again cannot help.
            return self._failed(m, 554, f"malformed message: {exc}")
        try:
            self._send_within_deadline(e)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return self._failed(m, code, f"{code} {text.decode(errors='replace') if isinstance(text, bytes) else text}")
        except smtplib.SMTPResponseException as exc:
            msg = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            if exc.smtp_code in (421,):
                self.drop_smtp()
            return self._failed(m, exc.smtp_code, f"{exc.smtp_code} {msg}")
        except UNREACHABLE as exc:
            self.drop_smtp()
            return self._failed(m, None, f"SMTP unreachable: {exc}")
        except (smtplib.SMTPException, ValueError, TypeError, UnicodeError) as exc:
            # e.g. SMTPNotSupportedError for a non-ASCII address without SMTPUTF8: retried, attempt counted.
            self.drop_smtp()
            return self._failed(m, None, f"{type(exc).__name__}: {exc}")
        outbox.mark_sent(self.db, m.id, self.owner)
        self.outage = 0
        return "sent"

    def _send_within_deadline(self, e: EmailMessage) -> None:
        """Send on a helper thread while this one beats; past ``send_deadline`` the connection is cut, so
        a server that answers each command slowly can neither hang the worker nor outlast the lease."""
        outcome: list = []

        def send() -> None:
            try:
                self.smtp.send_message(e)
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread as it was
                outcome.append(exc)

        t = threading.Thread(target=send, name="mailer-send", daemon=True)
        deadline = time.monotonic() + self.cfg.send_deadline
        t.start()
        while t.is_alive() and time.monotonic() < deadline:
            self.d.heartbeat()  # waiting on the network is not a hang; stopping waits for the send too
            t.join(min(self.d.beat_interval, max(0.0, deadline - time.monotonic())))
        if t.is_alive():
            sock = getattr(self.smtp, "sock", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            t.join(5)
            raise smtplib.SMTPServerDisconnected(f"no answer within the send deadline ({self.cfg.send_deadline:g}s)")
        if outcome and outcome[0] is not None:
            raise outcome[0]

    def _failed(self, m: outbox.Message, code, error: str) -> str:
        if code is not None and 500 <= code < 600:
            outbox.mark_dead(self.db, m.id, self.owner, f"permanent failure: {error}")
            return "dead"
        attempt = m.attempts + 1
        if attempt >= self.cfg.max_attempts:
            outbox.mark_dead(self.db, m.id, self.owner, f"gave up after {attempt} attempts: {error}")
            return "dead"
        # The exponent is capped: 2 ** 999 does not fit a float (MAILER_MAX_ATTEMPTS may be up to 1000).
        delay = min(self.cfg.backoff_max, self.cfg.backoff_base * 2.0 ** min(attempt - 1, 60)) * random.uniform(
            0.5, 1.0
        )
        outbox.mark_retry(self.db, m.id, self.owner, error, delay)
        self.retry_at = min(self.retry_at, time.monotonic() + delay)
        return "retry"

    def wait_for_slot(self) -> bool:
        while True:
            wait = outbox.take_slot(self.db, self.cfg.rate)
            if wait == 0.0:
                return True
            if not self.d.sleep(wait):
                return False

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        running = self.d.start()
        if not running:
            if self.d.stop_signal is not None:  # stopped while starting
                self.d.stop()
                return 0
            log.error("all %s slot(s) of %r are held by live workers", self.d.max_peers, self.d.name)
            return 3
        log.info("mailer %s started (slot %s, rate %.3g/s pool-wide)", self.owner, self.d.slot, self.cfg.rate)
        last_report = time.monotonic()
        try:
            while running:
                try:
                    if not (self.ensure_db() and self.ensure_smtp()):
                        # Readiness, not liveness: an outage must not cause a restart storm.
                        self.d.set_ready(False)
                        running = self.d.sleep(self._backoff())
                        continue
                    if self.outage or self.down:
                        self.d.set_status("")  # the outage's reason no longer holds
                        self.down = False
                    self.outage = 0
                    self.d.set_ready(True)
                    running = self.drain_once()
                except psycopg.Error as exc:
                    # An outage (OperationalError), or not one: a read-only database, a missing table, no
                    # permission. Either way readiness goes off with the reason and the worker tries again;
                    # raising out of run() would only restart the container in a loop.
                    why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    log.warning("PostgreSQL: %s: %s; not ready, retrying", type(exc).__name__, why)
                    self.d.set_status(f"PostgreSQL: {why}")
                    if self.db is not None:
                        try:
                            self.db.close()
                        except psycopg.Error:
                            pass
                    self.db = None
                    self.down = True
                    self.d.set_ready(False)
                    running = self.d.sleep(self._backoff())
                if time.monotonic() - last_report > 10:
                    log.info("sent %(sent)d, retried %(retry)d, dead %(dead)d so far", self.counts)
                    last_report = time.monotonic()
        finally:
            log.info(
                "stopping (signal %(signal)s): sent %(sent)d, retried %(retry)d, dead %(dead)d, lease lost %(skipped)d",
                {"signal": self.d.stop_signal, **self.counts},
            )
            self.drop_smtp()
            if self.db is not None:
                self.db.close()
            self.d.stop()
        return 0

    def wait_for_mail(self) -> bool:
        """Idle: wait for enqueue()'s NOTIFY, at most idle_poll_seconds, beating; False once a stop is asked for.
        One query per idle_poll_seconds instead of one per poll_seconds: an idle pool no longer pegs the database."""
        deadline = min(time.monotonic() + self.cfg.idle_poll_seconds, self.retry_at)
        self.retry_at = float("inf")
        while self.d.heartbeat():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if any(True for _ in self.db.notifies(timeout=min(left, self.d.beat_interval, 0.5), stop_after=1)):
                return self.d.heartbeat()
        return False

    def drain_once(self) -> bool:
        batch = outbox.claim(self.db, self.owner, self.cfg.batch, self.cfg.lease_seconds, self.cfg.max_claims)
        if not batch:
            return self.wait_for_mail()
        # Claimed messages are items in flight: no drain is accepted until the batch is done, and one accepted
        # in the instant since the claim ends here (the operator then sees the worker busy and keeps it).
        with self.d.busy():
            return self._send_batch(batch)

    def _send_batch(self, batch: list) -> bool:
        left = [m.id for m in batch]
        slot = False  # a throttle slot taken but not yet used
        try:
            for m in batch:
                if not self.d.heartbeat() or not (slot or self.wait_for_slot()):
                    break
                slot = True
                # The batch's tail may have waited on the pool-wide throttle for
                # longer than the lease: a peer may own the row by now. Re-assert
                # the lease right before sending; a row no longer ours is skipped
                # (and the slot kept for the next one).
                left.remove(m.id)
                if not outbox.renew(self.db, m.id, self.owner, self.cfg.lease_seconds):
                    self.counts["skipped"] += 1
                    continue
                slot = False
                outcome = self.deliver(m)
                self.counts[outcome] += 1
                if self.smtp is None and not self.ensure_smtp():
                    break
        finally:
            if left and self.db is not None and not self.db.closed:
                # Stopping or SMTP gone: give the rest back now, not after the lease.
                outbox.release(self.db, left, self.owner)
        return self.d.heartbeat()
