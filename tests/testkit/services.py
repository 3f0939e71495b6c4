"""Real services the tests start: a throw-away PostgreSQL cluster and an SMTP server (aiosmtpd) that records mail.

Both bind to the addresses given: 127.0.0.1 for process tests, plus the cluster bridge's
gateway address when pods must reach them.
"""

from __future__ import annotations

import asyncio
import email
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (hack/local-cluster install does)")
    return os.path.dirname(found[-1])


class Postgres:
    """initdb + pg_ctl as the postgres user (the server refuses to run as root), on a free port."""

    def __init__(self, addresses=("127.0.0.1",)):
        self.bin = _pg_bin()
        self.port = free_port()
        self.addresses = addresses
        self.dir = tempfile.mkdtemp(prefix="dp-pg-")
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def _as_user(self, *cmd, check=True):
        full = [os.path.join(self.bin, cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            full = ["runuser", "-u", self.user, "--", *full]
        return subprocess.run(full, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> "Postgres":
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, self.user, self.user)
        data = os.path.join(self.dir, "data")
        self._as_user("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write("host all all 0.0.0.0/0 trust\n")  # the listen addresses below are the only way in
        self._as_user(
            "pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(self.dir, "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -k {self.dir} -h {','.join(self.addresses)} -c fsync=off -c max_connections=200",
        )
        self._as_user("createdb", "-h", self.dir, "-p", str(self.port), "-U", "postgres", "mailer")
        return self

    def dsn(self, host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/mailer"

    def stop(self) -> None:
        self._as_user("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class MailSink:
    """An aiosmtpd server recording every message; can answer 451 for a while, and 550 to bounce@ addresses."""

    def __init__(self, host="127.0.0.1", port=None):
        self.host = host
        self.port = port or free_port()
        self.received: list = []  # (monotonic time, Message-ID, recipients)
        self.tempfail_until = 0.0
        self.tempfailed = 0
        self.reply_delay = 0.0  # seconds before each MAIL, RCPT and DATA reply: a slow server
        self.lock = threading.Lock()
        self.controller = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await asyncio.sleep(self.reply_delay)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await asyncio.sleep(self.reply_delay)
        if address.startswith("bounce"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.reply_delay)
        if time.monotonic() < self.tempfail_until:
            with self.lock:
                self.tempfailed += 1
            return "451 4.3.0 try again later"
        msg = email.message_from_bytes(envelope.content)
        with self.lock:
            self.received.append((time.monotonic(), msg["Message-ID"], list(envelope.rcpt_tos)))
        return "250 Message accepted"

    def start(self) -> "MailSink":
        from aiosmtpd.controller import Controller

        self.controller = Controller(self, hostname=self.host, port=self.port, ready_timeout=10)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def ids(self) -> list:
        with self.lock:
            return [mid for _, mid, _ in self.received]
